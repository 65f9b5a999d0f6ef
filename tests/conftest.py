"""Shared fixtures: temporary homes, the real CLI in a subprocess, and database URLs.

PostgreSQL tests use the server named by NTKLAB_TEST_PG_URL (scripts/postgres.sh starts one).
Each test gets a database of its own. In CI (CI=true) a missing server is an error, not a skip.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from ntklab.runner.compilation_cache import VARIABLE as XLA_CACHE

REPO = Path(__file__).resolve().parent.parent
SPECS = REPO / "specs"
_OWN_CACHE = pytest.StashKey[str]()


def pytest_configure(config) -> None:
    """One compilation cache (ntklab/runner/compilation_cache.py) for the whole session, shared by
    the xdist workers (they inherit the controller's environment): the CLI subprocesses of many
    tests compile the same small models."""
    if XLA_CACHE not in os.environ:
        os.environ[XLA_CACHE] = tempfile.mkdtemp(prefix="ntklab-test-xla-")
        config.stash[_OWN_CACHE] = os.environ[XLA_CACHE]


def pytest_unconfigure(config) -> None:
    if _OWN_CACHE in config.stash:
        shutil.rmtree(config.stash[_OWN_CACHE], ignore_errors=True)


def postgres_admin_url() -> str | None:
    url = os.environ.get("NTKLAB_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI=true but NTKLAB_TEST_PG_URL is not set: PostgreSQL tests must run in CI "
                        "(scripts/postgres.sh starts a server)")
        pytest.skip("no PostgreSQL server: set NTKLAB_TEST_PG_URL (scripts/postgres.sh starts one)")
    return url


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(postgres_admin_url())
    name = f"ntklab_test_{uuid.uuid4().hex[:12]}"
    plain = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def slurm() -> None:
    """A running Slurm cluster (scripts/slurm.sh starts one and sets NTKLAB_TEST_SLURM); in CI a
    missing cluster is an error, not a skip."""
    if not os.environ.get("NTKLAB_TEST_SLURM") or not os.environ.get("SLURM_CONF"):
        if os.environ.get("CI"):
            pytest.fail("CI=true but no Slurm cluster: scripts/slurm.sh starts one (NTKLAB_TEST_SLURM, SLURM_CONF)")
        pytest.skip("no Slurm cluster: source scripts/slurm.sh")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Each database backend in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ntklab.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _cli_env(home: Path, db: str | None) -> dict[str, str]:
    # Without bytecode caching every CLI start would compile all of ntklab again.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NTKLAB_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["NTKLAB_HOME"] = str(home)
    env[XLA_CACHE] = os.environ[XLA_CACHE]
    if db:
        env["NTKLAB_DB"] = db
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def ntklab(*args: str, home: Path, db: str | None = None, timeout: float = 600, check: bool = False,
           python_options: tuple[str, ...] | list[str] = ()) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess in `home`, against it (and `db`, if given)."""
    result = subprocess.run([sys.executable, *python_options, "-m", "ntklab", *args], capture_output=True, text=True,
                            env=_cli_env(home, db), timeout=timeout, cwd=home)
    if check and result.returncode != 0:
        raise AssertionError(f"ntklab {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def start_ntklab(*args: str, home: Path, db: str | None = None) -> subprocess.Popen:
    """Start the real CLI in the background, as `ntklab` does."""
    return subprocess.Popen([sys.executable, "-m", "ntklab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_cli_env(home, db), cwd=home)
