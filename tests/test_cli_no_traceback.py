"""Inputs that once ended in a traceback, through the real CLI: each exits 2 (usage or spec) or 3
(database or storage) with a message, and what was recorded stays."""

import subprocess
import sys

import pytest

from conftest import _cli_env, ntklab
from test_cli_read_only import can_mount_read_only

PROBE = "name: p\ngroups:\n  g: {task: probe, steps: 2}\n"


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "p.yaml").write_text(PROBE)
    (home / "file").write_text("not a directory")
    ntklab("run", "p.yaml", home=home, check=True)
    return home, ntklab("status", "--format", "json", home=home, check=True).stdout


@pytest.mark.parametrize("args, db, code, fragment", [
    (["run", "p.yaml", "--set", "seed=[1"], None, 2, "--set seed=[1"),
    (["run", "p.yaml", "--set", "steps={a: *b}"], None, 2, "invalid YAML"),
    (["query", "--where", "not " * 300 + "status == 'done'"], None, None, None),
    (["query", "--where", "(" * 300 + "seed == 1" + ")" * 300], None, 2, "too many nested parentheses"),
    (["query", "--limit", "12345678901234567890"], None, 2, "--limit"),
    (["status"], "postgresql://u@localhost:99999/db", 3, "port 99999"),
    (["status"], "postgresql://u@[::1/db", 3, "not a database URL"),
    (["status"], "postgresql://u@localhost:port/db", 3, "not a database URL"),
    (["status"], "postgresql+asyncpg://u@localhost/db", 3, "unsupported database driver 'postgresql+asyncpg'"),
    (["status"], "sqlite+pysqlcipher:///x.db", 3, "unsupported database driver"),
    (["status", "--home", "file"], None, 2, "is a file, not a directory"),
    (["run", "p.yaml", "--home", "file"], None, 2, "is a file, not a directory"),
])
def test_bad_input_exits_cleanly(recorded_home, args, db, code, fragment):
    home, recorded = recorded_home
    result = ntklab(*args, home=home, db=db, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    if code is None:
        assert result.returncode in (0, 2), result.stderr
    else:
        assert result.returncode == code and fragment in result.stderr, result.stderr
    assert ntklab("status", "--format", "json", home=home, check=True).stdout == recorded


@pytest.mark.skipif(not can_mount_read_only(), reason="needs unprivileged user and mount namespaces (unshare -rm)")
def test_a_full_disk_while_the_database_is_written_exits_3_and_the_next_run_resumes(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "full.yaml").write_text("name: full\ngroups:\n  g: {task: probe, steps: 3000, metrics_per_step: 20}\n")
    script = (f'mount -t tmpfs -o size=600k tmpfs "{home}" && cd "{home}" && "$0" -m ntklab run "{tmp_path}/full.yaml"'
              f' --home "{home}"; echo "exit=$?"; "$0" -m ntklab status --home "{home}"')
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable], capture_output=True, text=True,
                            env=_cli_env(home, None), timeout=300)
    assert "Traceback" not in result.stderr and "exit=3" in result.stdout, result.stdout + result.stderr
    assert "No space left on device" in result.stderr
    assert "have no live worker" in result.stderr, "status tells that the run's worker is gone"
