"""The one place that knows SQLite and PostgreSQL spell an upsert differently."""

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(conn: Connection, table: Table):
    """An INSERT with `.on_conflict_do_nothing` / `.on_conflict_do_update` for the connection's dialect."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)
