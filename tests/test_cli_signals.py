"""Two interrupts in quick succession, through the real CLI: the command exits 130 (as a shell
sees it; see below) and, wherever the second one lands (in the task, while it checkpoints, while
the run is recorded), the run and its attempt are marked interrupted and the run log says so; the
next run resumes it."""

import signal
import sqlite3
import time

import pytest

from conftest import ntklab, start_ntklab

SPEC = "name: sig\ngroups:\n  g: {{task: probe, steps: 40, step_seconds: 0.05, checkpoint_every_steps: 1, seed: {seed}}}\n"


def query(home, sql):
    with sqlite3.connect(home / "ntklab.db") as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.parametrize("gap", [0.0, 0.002, 0.02, 0.1])
def test_two_quick_interrupts_leave_the_run_interrupted_not_running(home, gap):
    (home / "s.yaml").write_text(SPEC.format(seed=int(gap * 1000)))
    process = start_ntklab("run", "s.yaml", home=home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if query(home, "select checkpoint_step from runs where checkpoint_step >= 3"):
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    time.sleep(gap)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    # At a gap of 0.1 s on a loaded machine (about 1 in 12), CPython ends the process by SIGINT
    # instead of with status 130, after the run is recorded: a shell reports that as 130 as well.
    assert process.returncode in (130, -signal.SIGINT) and "Traceback" not in stderr, stderr
    (key, status), = query(home, "select key, status from runs")
    assert status == "interrupted"
    assert query(home, "select status, ended_at is not null from attempts") == [("interrupted", 1)]
    log = (home / "logs" / f"{key}.log").read_text()
    assert "aborted by a second interrupt" in log or "interrupted after" in log, log
    resumed = ntklab("run", "s.yaml", home=home)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr
