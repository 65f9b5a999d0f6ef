"""A damaged checkpoint never wedges a run, through the real CLI: it is set aside and the run
resumes from the checkpoint before it, or from the start, and ends done."""

import sqlite3
import time

import pytest

from conftest import ntklab, start_ntklab

SPEC = """\
name: ckpt
groups:
  g: {{task: probe, steps: 12, step_seconds: 0.3, checkpoint_every_steps: 5, seed: {seed}}}
"""


def row(home):
    with sqlite3.connect(home / "ntklab.db") as conn:
        return conn.execute("select key, status, checkpoint_step, attempts from runs").fetchone()


def killed_at_step_10(home):
    process = start_ntklab("run", "c.yaml", home=home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if row(home) and row(home)[2] == 10:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    key, status, step, _ = row(home)
    assert (status, step) == ("running", 10)
    return home / "checkpoints" / key


@pytest.mark.parametrize("damage, resumed", [("truncate newest", "resuming from the checkpoint at step 5"),
                                             ("garble both", "from scratch")])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_resumes_and_finishes(home, damage, resumed):
    (home / "c.yaml").write_text(SPEC.format(seed=len(damage)))
    directory = killed_at_step_10(home)
    newest, previous = directory / "checkpoint.bin", directory / "previous-checkpoint.bin"
    newest.write_bytes(newest.read_bytes()[:-3])
    if damage == "garble both":
        data = bytearray(previous.read_bytes())
        data[-1] ^= 0xFF
        previous.write_bytes(bytes(data))
    result = ntklab("run", "c.yaml", home=home)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    key, status, _, attempts = row(home)
    assert (status, attempts) == ("done", 2)
    log = (home / "logs" / f"{key}.log").read_text()
    assert resumed in log and "checkpoint.bin is damaged or cut short" in log and "set aside as" in log
    with sqlite3.connect(home / "ntklab.db") as conn:
        steps = [s for (s,) in conn.execute("select step from metrics where name = 'loss' order by step")]
    assert steps == list(range(12))
