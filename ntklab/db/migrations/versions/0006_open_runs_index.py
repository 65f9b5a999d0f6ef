"""The open runs (pending, interrupted, running) indexed by id, for the claim query.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN_STATUSES = sa.text("status IN ('pending', 'interrupted', 'running')")


def upgrade() -> None:
    op.create_index("ix_runs_open", "runs", ["id"], postgresql_where=OPEN_STATUSES, sqlite_where=OPEN_STATUSES)


def downgrade() -> None:
    op.drop_index("ix_runs_open", table_name="runs")
