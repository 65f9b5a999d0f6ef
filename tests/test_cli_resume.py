"""Killed and interrupted training runs resume from their checkpoints and end exactly where an
uninterrupted run ends: same final parameters (byte for byte) and same metric values."""

import signal
import sqlite3
import time

import pytest

from conftest import ntklab, start_ntklab

SPEC = """\
name: resume
groups:
  mlp:
    task: train
    seed: 3
    data: {dataset: digits}
    model: {arch: mlp, depth: 2, width: 32, parameterization: ntk, b_std: 0.1}
    train:
      loss: cross_entropy
      optimizer: {name: momentum, lr: 0.5}
      schedule: {name: cosine}
      batch_size: 32
      epochs: 60
      eval_every_steps: 50
      checkpoint_every_steps: 100
"""


def results(home) -> tuple[str, list[tuple]]:
    with sqlite3.connect(home / "ntklab.db") as conn:
        (sha,) = conn.execute("select sha256 from artifacts where name = 'params'").fetchone()
        series = conn.execute("select name, step, value from metrics order by name, step").fetchall()
    return sha, series


def run_row(home) -> tuple:
    with sqlite3.connect(home / "ntklab.db") as conn:
        return conn.execute("select status, checkpoint_step, attempts from runs").fetchone()


def wait_for_checkpoint(home, process, at_least: int, timeout: float = 240.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before it could be stopped: {process.communicate()}"
        if (home / "ntklab.db").exists():
            try:
                row = run_row(home)
            except sqlite3.OperationalError:
                row = None
            if row and row[1] is not None and row[1] >= at_least:
                return row[1]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    home = tmp_path_factory.mktemp("reference")
    (home / "spec.yaml").write_text(SPEC)
    ntklab("run", "spec.yaml", home=home, check=True)
    return results(home)


def test_kill_9_then_resume_matches_uninterrupted_run(home, reference):
    (home / "spec.yaml").write_text(SPEC)
    process = start_ntklab("run", "spec.yaml", home=home)
    step = wait_for_checkpoint(home, process, at_least=300)
    process.kill()
    process.wait()
    assert run_row(home)[0] == "running", "a killed worker cannot record anything"
    result = ntklab("run", "spec.yaml", home=home, check=True)
    assert "resuming at step" in result.stderr
    status, _, attempts = run_row(home)
    assert (status, attempts) == ("done", 2)
    with sqlite3.connect(home / "ntklab.db") as conn:
        resumed_from = conn.execute("select resumed_from_step from attempts where attempt = 2").fetchone()[0]
    assert resumed_from >= step
    sha, series = results(home)
    assert series == reference[1], "metric values differ from the uninterrupted run"
    assert sha == reference[0], "final parameters differ from the uninterrupted run"


def test_sigterm_checkpoints_marks_interrupted_and_resumes(home, reference):
    (home / "spec.yaml").write_text(SPEC)
    process = start_ntklab("run", "spec.yaml", home=home)
    wait_for_checkpoint(home, process, at_least=200)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr
    status, checkpoint_step, _ = run_row(home)
    assert status == "interrupted" and checkpoint_step >= 200
    log = ntklab("logs", _key(home), home=home, check=True).stdout
    assert f"checkpoint at step {checkpoint_step}" in log
    ntklab("run", "spec.yaml", home=home, check=True)
    assert run_row(home)[0] == "done"
    assert results(home) == reference


def _key(home) -> str:
    with sqlite3.connect(home / "ntklab.db") as conn:
        return conn.execute("select key from runs").fetchone()[0][:10]
