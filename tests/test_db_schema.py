"""The migrations build exactly the schema the models declare, on both backends, and the
commands refuse a database at another revision instead of migrating it behind the user's back."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

import pytest

from conftest import ntklab
from ntklab.db.connection import open_engine, reading
from ntklab.db.models import Base
from ntklab.db.schema import ensure_schema, head_revision, upgrade
from ntklab.errors import DatabaseError


def test_migrations_match_the_models(db_url):
    engine = open_engine(db_url)
    before, after = upgrade(engine)
    assert (before, after) == (None, head_revision())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    engine.dispose()


def test_head_revision_constant_is_alembics_head():
    from alembic.script import ScriptDirectory

    from ntklab.db.schema import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == head_revision()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    ensure_schema(engine)
    with reading(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_database_at_another_revision_is_refused_until_upgraded(tmp_path, home):
    url = f"sqlite:///{home / 'ntklab.db'}"
    engine = open_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    with pytest.raises(DatabaseError, match="ntklab db upgrade"):
        ensure_schema(engine)
    (home / "p.yaml").write_text("name: p\ngroups:\n  a: {task: probe, steps: 2}\n")
    result = ntklab("run", "p.yaml", home=home)
    assert result.returncode == 3 and "ntklab db upgrade" in result.stderr
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))
    assert "already at" in ntklab("db", "upgrade", home=home, check=True).stdout
    engine.dispose()


def test_db_upgrade_creates_a_postgresql_schema(pg_url, home):
    result = ntklab("db", "upgrade", home=home, db=pg_url, check=True)
    assert f"empty -> {head_revision()}" in result.stdout
    engine = open_engine(pg_url)
    with engine.connect() as conn:
        tables = set(conn.execute(text("select tablename from pg_tables where schemaname = 'public'")).scalars())
    assert {"experiments", "runs", "experiment_runs", "attempts", "params", "metrics", "metric_summaries",
            "artifacts"} <= tables
    engine.dispose()
