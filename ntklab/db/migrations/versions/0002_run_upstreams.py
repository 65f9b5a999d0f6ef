"""Run dependencies: run_upstreams (run, name) -> upstream run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_upstreams",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("upstream_run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["upstream_run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "name"),
    )
    with op.batch_alter_table("run_upstreams", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_upstreams_upstream_run_id"), ["upstream_run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_upstreams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_upstreams_upstream_run_id"))
    op.drop_table("run_upstreams")
