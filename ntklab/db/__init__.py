"""The result database: SQLAlchemy models, connections, migrations, the run queue and records."""
