"""Alembic environment. ntklab runs migrations programmatically (ntklab.db.schema) on a
connection it passes in `config.attributes["connection"]`."""

from alembic import context

from ntklab.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
