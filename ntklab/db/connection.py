"""Database URLs and engines: SQLite in the home directory by default, PostgreSQL by URL.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
`BEGIN IMMEDIATE`, so a transaction that will write takes the write lock up front and waits for
it (busy timeout) instead of failing on a read-to-write upgrade when workers race.
"""

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from ntklab.errors import DatabaseError
from ntklab.interrupts import deferred_interrupts
from ntklab.redaction import redact, remember_secrets
from ntklab.store import default_database_url

BUSY_TIMEOUT_MS = 60_000
IDLE_PING_SECONDS = 10.0
_LAST_USED = "ntklab_last_used"
SUPPORTED_DRIVERS = ("sqlite", "postgresql+psycopg")
_BEGIN_OPTION = "ntklab_sqlite_begin"


def resolve_url(db: str | None, home: Path) -> str:
    """`--db`, else NTKLAB_DB, else the SQLite file in the home directory."""
    url = db or os.environ.get("NTKLAB_DB")
    if not url:
        return default_database_url(home)
    remember_secrets(url)
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - a port that is not a number fails here, not at the first connection
    except (ArgumentError, ValueError) as error:
        raise DatabaseError(f"not a database URL: {redact(url)!r} ({redact(str(error))}; expected "
                            "sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername == "sqlite+pysqlite":
        parsed = parsed.set(drivername="sqlite")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise DatabaseError(f"unsupported database driver {parsed.drivername!r}: use sqlite:///PATH or "
                            "postgresql://USER@HOST/DB (psycopg)")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise DatabaseError(f"port {parsed.port} of {redact(url)} is not between 1 and 65535")
    return parsed.render_as_string(hide_password=False)


def _configure_sqlite(engine: Engine, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(_BEGIN_OPTION, 'IMMEDIATE')}")


def open_engine(url: str, *, read_only: bool = False) -> Engine:
    """An engine on `url`. With `read_only`, the database refuses every write (SQLite opens the file
    with mode=ro, and as immutable where its directory cannot be written, as on a read-only file
    system; PostgreSQL sessions default to read-only transactions), and nothing is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only and parsed.database:
            path = Path(parsed.database).absolute()
            query = {"mode": "ro", "uri": "true"} | ({} if os.access(path.parent, os.W_OK) else {"immutable": "1"})
            parsed = parsed.set(database=f"file:{path}", query=query)
        elif parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, read_only)
        return engine
    options = {"options": "-c default_transaction_read_only=on"} if read_only else {}
    engine = create_engine(url, connect_args={"connect_timeout": 10, **options})
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled PostgreSQL connection before use when it sat idle over IDLE_PING_SECONDS (a
    server restart or a firewall may have closed it while a worker trained); a dead one is
    replaced. SQLAlchemy's pool_pre_ping tests at every checkout, a round trip that was a third
    of a queue claim's on a busy machine (bench/queue_claims.py)."""

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) > IDLE_PING_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as error:  # whatever failed, this connection cannot be used
                raise DisconnectionError(str(error)) from error
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.pool, "connect")
    @event.listens_for(engine.pool, "checkin")
    def _used(_dbapi_connection, record) -> None:
        record.info[_LAST_USED] = time.monotonic()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: on SQLite it takes no write lock, so it never blocks workers."""
    with deferred_interrupts, engine.connect() as conn:
        conn = conn.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
        with conn.begin():
            yield conn


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction (BEGIN IMMEDIATE on SQLite), committed on success, rolled back on error.
    A Ctrl-C waits for its end (ntklab/interrupts.py), as it does in `reading`."""
    with deferred_interrupts, engine.begin() as conn:
        yield conn


class HeldConnection:
    """Where a worker writes the statements of its claim path (claims, heartbeats, finishes), each
    its own transaction.

    On PostgreSQL each runs in autocommit (no BEGIN and no COMMIT, each a round trip to the server,
    which is what a queue claim on a busy machine waits for most) on one connection held while it
    is in use, shared by the worker's threads (the heartbeat's and the main one) under a lock.
    Checking a connection out of the pool per statement, with its isolation level set and reset,
    cost 0.5 ms of Python per run, as much as the statements (cProfile of bench/queue_claims.py).
    A connection left idle over IDLE_PING_SECONDS goes back to the pool, which tests it at the next
    checkout, and one a statement failed on is dropped. On SQLite each statement is a `writing`
    transaction (the write lock is taken up front)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._used = 0.0

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        if self.engine.dialect.name != "postgresql":
            with writing(self.engine) as conn:
                yield conn
            return
        with deferred_interrupts, self._lock:
            if self._conn is not None and time.monotonic() - self._used > IDLE_PING_SECONDS:
                self._release()
            if self._conn is None:
                self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                yield self._conn
            except BaseException:
                self._release()
                raise
            self._used = time.monotonic()

    def close(self) -> None:
        with deferred_interrupts, self._lock:
            self._release()

    def _release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> "HeldConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
