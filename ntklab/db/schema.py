"""Schema versions through Alembic.

`ntklab db upgrade` migrates. Other commands create the schema in an empty database (so the
quickstart works on a fresh machine) but never migrate an existing one: a database at another
revision is an error that says what to run. Creation and migration hold a lock (a file lock next
to a SQLite file, an advisory lock on PostgreSQL) so processes started together do not race.
"""

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError

from ntklab.errors import DatabaseError
from ntklab.redaction import redact

_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_LOCK_ID = 0x6E746B6C  # "ntkl"
# The newest migration. Kept here so that commands which only check the revision need not import
# Alembic (a quarter of a second at every start); a test checks it against Alembic's own head.
HEAD_REVISION = "0006"


def alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    return HEAD_REVISION


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _migration_lock(engine: Engine):
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        from filelock import FileLock  # only creation and migration lock; checking a revision does not

        with FileLock(f"{database}.migrate.lock"):
            yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
            conn.commit()


def _upgrade(engine: Engine) -> None:
    from alembic import command

    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def _revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    except OperationalError as err:
        raise DatabaseError(f"cannot open the database {redact(engine.url.render_as_string(False))}: "
                            f"{redact(str(err.orig))}") from None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate to the newest schema; returns (revision before, revision after)."""
    with _migration_lock(engine):
        before = _revision(engine)
        _upgrade(engine)
        return before, head_revision()


def check_schema(engine: Engine) -> None:
    """Refuse a database without ntklab's schema or at another revision, without writing to it."""
    current = _revision(engine)
    if current is None:
        raise DatabaseError("the database holds no ntklab results yet: run a spec first (or `ntklab db upgrade`)")
    if current != head_revision():
        raise DatabaseError(f"the database is at schema revision {current}, this ntklab expects "
                            f"{head_revision()}: run `ntklab db upgrade`")


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse a database at another revision."""
    head = head_revision()
    current = _revision(engine)
    if current == head:
        return
    if current is None:
        with _migration_lock(engine):
            if _revision(engine) is None:
                _upgrade(engine)
        return
    raise DatabaseError(
        f"the database is at schema revision {current}, this ntklab expects {head}: run `ntklab db upgrade`"
    )
