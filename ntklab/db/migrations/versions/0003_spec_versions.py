"""Spec versions: every spec text an experiment was run with, so the figures of an earlier spec
with the same `name:` stay queryable.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spec_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("spec_text", sa.Text(), nullable=False),
        sa.Column("spec_file", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("experiment_id", "spec_hash"),
    )
    op.execute("INSERT INTO spec_versions (experiment_id, spec_hash, spec_text, spec_file, created_at) "
               "SELECT id, spec_hash, spec_text, spec_file, updated_at FROM experiments")


def downgrade() -> None:
    op.drop_table("spec_versions")
