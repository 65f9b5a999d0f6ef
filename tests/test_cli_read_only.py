"""Read commands only read: on a read-only file system (a read-only bind mount of the home, in a
user and mount namespace of its own) and as a PostgreSQL role that may not write, every read
command works and the database is left as it was; reaping a dead worker's run is `ntklab reap`'s."""

import hashlib
import shutil
import subprocess
import sys
import tempfile

import psycopg
import pytest
from sqlalchemy.engine import make_url

from conftest import _cli_env, ntklab

SPEC = """\
name: ro
groups:
  ok: {task: probe, steps: 3}
  bad: {task: probe, steps: 3, fail_at_step: 1}
figures:
  loss: {x: step, y: loss}
"""


def read_commands(home, keys) -> list[list[str]]:
    return [["status"], ["query"], ["query", "--paper", "loss"], ["show", keys["bad"]], ["logs", keys["bad"]],
            ["report", "ro", "--output", str(home.parent / "report.html")], ["plan", "ro.yaml"],
            ["compare", keys["ok"], keys["bad"]]]


def run_keys(home, db=None) -> dict[str, str]:
    listed = ntklab("query", "--columns", "key,group", "--format", "csv", home=home, db=db, check=True).stdout
    return dict(reversed(line.split(",")) for line in listed.splitlines()[1:])


def can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as directory:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount --bind -o ro "{directory}" "{directory}"'],
                               capture_output=True)
    return probe.returncode == 0


def digest(home) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(home.glob("ntklab.db*"))}


@pytest.mark.skipif(not can_mount_read_only(), reason="needs unprivileged user and mount namespaces (unshare -rm)")
def test_read_commands_work_on_a_read_only_file_system(home):
    (home / "ro.yaml").write_text(SPEC)
    assert ntklab("run", "ro.yaml", home=home).returncode == 1
    keys = run_keys(home)
    before = digest(home)
    for args in read_commands(home, keys):
        script = f'mount --bind -o ro "{home}" "{home}" && exec "$0" -m ntklab "$@"'
        result = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, *args], capture_output=True,
                                text=True, env=_cli_env(home, None), cwd=home, timeout=300)
        assert result.returncode == 0, (args, result.stderr)
    assert digest(home) == before
    writes = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount --bind -o ro "{home}" "{home}" && exec "$0" -m '
                             'ntklab run ro.yaml', sys.executable], capture_output=True, text=True,
                            env=_cli_env(home, None), cwd=home, timeout=300)
    assert writes.returncode == 3 and "Traceback" not in writes.stderr, writes.stderr


def test_read_commands_as_a_read_only_postgresql_role_leave_a_lost_run_to_reap(home, pg_url):
    (home / "ro.yaml").write_text(SPEC)
    assert ntklab("run", "ro.yaml", home=home, db=pg_url).returncode == 1
    keys = run_keys(home, pg_url)
    plain = make_url(pg_url).set(drivername="postgresql")
    with psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("UPDATE runs SET status = 'running', worker_id = 'gone', host = 'elsewhere', "
                     "lease_expires_at = now() - interval '1 hour' WHERE key = %s", (keys["ok"],))
        conn.execute("DROP ROLE IF EXISTS ntklab_reader")
        conn.execute("CREATE ROLE ntklab_reader LOGIN")
        conn.execute(f'GRANT CONNECT ON DATABASE "{plain.database}" TO ntklab_reader')
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO ntklab_reader")
    reader = plain.set(username="ntklab_reader").render_as_string(hide_password=False)
    try:
        for args in read_commands(home, keys):
            result = ntklab(*args, home=home, db=reader)
            assert result.returncode == 0, (args, result.stderr)
        assert "1 running runs have no live worker" in ntklab("status", home=home, db=reader).stderr
        refused = ntklab("reap", home=home, db=reader)
        assert refused.returncode == 3 and "Traceback" not in refused.stderr, refused.stderr
        assert "1 runs of lost workers marked interrupted" in ntklab("reap", home=home, db=pg_url, check=True).stdout
    finally:
        with psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute("REASSIGN OWNED BY ntklab_reader TO CURRENT_USER")
            conn.execute("DROP OWNED BY ntklab_reader")
            conn.execute("DROP ROLE ntklab_reader")
