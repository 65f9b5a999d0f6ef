"""The runner through the real CLI: failures, divergence, retries, concurrent workers on both
databases, and reclaiming the run of a killed worker."""

import json
import time

import pytest
from sqlalchemy import create_engine, text

from conftest import ntklab, start_ntklab

SWEEP = """\
name: sweep
groups:
  ok:
    task: probe
    steps: 6
    step_seconds: {step_seconds}
    sweep: {{grid: {{seed: {seeds}}}}}
"""

MIXED = """\
name: mixed
defaults: {steps: 12, metrics_per_step: 2}
groups:
  ok: {task: probe, sweep: {grid: {seed: [0, 1]}}}
  broken: {task: probe, fail_at_step: 7}
  unstable: {task: probe, diverge_at_step: 4}
"""


def sql(url: str, query: str, **params):
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return conn.execute(text(query), params).all()
    finally:
        engine.dispose()


def sqlite_url(home) -> str:
    return f"sqlite:///{home / 'ntklab.db'}"


def test_failure_keeps_the_sweep_going_and_divergence_keeps_metrics(home):
    (home / "mixed.yaml").write_text(MIXED)
    result = ntklab("run", "mixed.yaml", home=home)
    assert result.returncode == 1, "a failed run makes the exit code non-zero"
    assert "probe failure requested at step 7" in result.stderr
    url = sqlite_url(home)
    rows = dict(sql(url, "select group_name, status from runs where group_name != 'ok'"))
    assert rows == {"broken": "failed", "unstable": "diverged"}
    assert [s for (s,) in sql(url, "select status from runs where group_name = 'ok'")] == ["done", "done"]
    (error_type, trace), = sql(url, "select error_type, traceback from runs where group_name = 'broken'")
    assert error_type == "RuntimeError" and "Traceback" in trace and "fail_at_step" not in trace.split("\n")[0]
    steps = sql(url, "select m.step, m.value from metrics m join runs r on r.id = m.run_id "
                     "where r.group_name = 'unstable' and m.name = 'loss' order by m.step")
    assert [s for s, _ in steps] == [0, 1, 2, 3, 4] and steps[-1][1] is None, "metrics up to the NaN are kept"
    assert sql(url, "select count(*) from metrics m join runs r on r.id = m.run_id "
                    "where r.group_name = 'broken' and m.name = 'loss'")[0][0] == 7

    again = ntklab("run", "mixed.yaml", home=home)
    assert again.returncode == 1 and "--retry-failed" in again.stderr
    assert sql(url, "select sum(attempts) from runs")[0][0] == 4, "nothing ran again"

    retried = ntklab("run", "mixed.yaml", "--retry-failed", home=home)
    assert retried.returncode == 1
    assert dict(sql(url, "select group_name, attempts from runs where group_name != 'ok'")) == {
        "broken": 2, "unstable": 2}


def test_rerun_skips_done_runs_and_force_reruns_them(home):
    (home / "sweep.yaml").write_text(SWEEP.format(step_seconds=0, seeds=[0, 1, 2]))
    ntklab("run", "sweep.yaml", home=home, check=True)
    second = ntklab("run", "sweep.yaml", home=home, check=True)
    assert "0 runs to execute" in second.stderr
    url = sqlite_url(home)
    assert [a for (a,) in sql(url, "select attempts from runs")] == [1, 1, 1]
    ntklab("run", "sweep.yaml", "--force", home=home, check=True)
    assert [a for (a,) in sql(url, "select attempts from runs")] == [2, 2, 2]
    assert sql(url, "select count(*) from metrics")[0][0] == 18, "a forced rerun replaces metrics, never duplicates"


def test_plan_counts_without_writing(home):
    (home / "sweep.yaml").write_text(SWEEP.format(step_seconds=0, seeds=[0, 1, 2, 3]))
    planned = ntklab("plan", "sweep.yaml", "--show", home=home, check=True)
    assert "4 runs" in planned.stdout
    assert not (home / "ntklab.db").exists(), "plan never creates or writes the database"
    ntklab("run", "sweep.yaml", "--set", "steps=6", home=home, check=True)
    (home / "sweep.yaml").write_text(SWEEP.format(step_seconds=0, seeds=[0, 1, 2, 3, 4, 5]))
    planned = ntklab("plan", "sweep.yaml", home=home, check=True).stdout
    row = next(line for line in planned.splitlines() if line.lstrip("│ ").startswith("ok"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:3] == ["ok", "probe", "2"] and cells[6] == "4", planned


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_workers_execute_every_run_exactly_once(home, backend, request):
    url = sqlite_url(home) if backend == "sqlite" else request.getfixturevalue("pg_url")
    (home / "sweep.yaml").write_text(SWEEP.format(step_seconds=0.02, seeds=list(range(24))))
    workers = [start_ntklab("run", "sweep.yaml", home=home, db=url) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    rows = sql(url, "select attempts, status from runs")
    assert len(rows) == 24 and all(r == (1, "done") for r in rows)
    assert sql(url, "select count(*) from attempts")[0][0] == 24
    per_worker = sql(url, "select worker_id, count(*) from attempts group by worker_id")
    assert len(per_worker) == 2, f"both workers should have taken runs: {per_worker}"
    assert sql(url, "select count(*) from metrics")[0][0] == 24 * 6


def test_killed_workers_run_is_reclaimed_and_completes(home):
    (home / "slow.yaml").write_text(SWEEP.format(step_seconds=0.5, seeds=[7]).replace("steps: 6", "steps: 12"))
    process = start_ntklab("run", "slow.yaml", home=home)
    url = sqlite_url(home)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if sql(url, "select checkpoint_step from runs where checkpoint_step is not null"):
                break
        except Exception:  # the database may not exist yet
            pass
        time.sleep(0.1)
    process.kill()
    process.wait()
    assert sql(url, "select status from runs")[0][0] == "running"
    status = ntklab("status", "--format", "json", home=home, check=True)
    assert json.loads(status.stdout)[0]["running"] == 1 and "1 running runs have no live worker" in status.stderr
    assert sql(url, "select status from runs")[0][0] == "running", "status only reads"
    assert "1 runs of lost workers marked interrupted" in ntklab("reap", home=home, check=True).stdout
    counts = json.loads(ntklab("status", "--format", "json", home=home, check=True).stdout)[0]
    assert counts["interrupted"] == 1 and counts["running"] == 0
    result = ntklab("run", "slow.yaml", home=home, check=True)
    assert "resuming at step 5" in result.stderr
    (status_, attempts), = sql(url, "select status, attempts from runs")
    assert (status_, attempts) == ("done", 2)
    steps = [s for (s,) in sql(url, "select step from metrics order by step")]
    assert steps == list(range(12)), "replayed steps are upserted, not duplicated"


def test_database_password_is_never_printed(home):
    (home / "sweep.yaml").write_text(SWEEP.format(step_seconds=0, seeds=[0]))
    result = ntklab("run", "sweep.yaml", home=home, db="postgresql://someone:s3cr3tpw@127.0.0.1:1/nowhere")
    assert result.returncode == 3
    assert "s3cr3tpw" not in result.stdout + result.stderr
    assert "***" in result.stderr


def test_strict_makes_diverged_runs_fail_the_command(home):
    (home / "unstable.yaml").write_text("name: unstable\ngroups:\n  ok: {task: probe}\n"
                                        "  unstable: {task: probe, diverge_at_step: 2}\n")
    assert ntklab("run", "unstable.yaml", home=home).returncode == 0, "a diverged run is a result by default"
    strict = ntklab("run", "unstable.yaml", "--strict", home=home)
    assert strict.returncode == 1 and "1 runs diverged (--strict)" in strict.stderr
    assert "0 runs to execute" in strict.stderr, "--strict runs nothing again"
