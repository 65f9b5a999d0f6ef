"""`ntklab run --executor slurm` on a real single-node Slurm cluster (scripts/slurm.sh) against a
real PostgreSQL server: job arrays of workers, jobs in `ntklab status`, scancel of a worker mid-run,
`ntklab cancel`, and SQLite refused."""

import re
import subprocess
import time

from conftest import SPECS, ntklab
from test_cli_runner import sql

PROBE = """\
name: {name}
groups:
  slow:
    task: probe
    steps: {steps}
    metrics_per_step: 2
    step_seconds: {step_seconds}
    checkpoint_every_steps: 3
    sweep: {{grid: {{seed: {seeds}}}}}
{executor}"""


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def submitted_jobs(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    found = re.search(r"submitted \d+ Slurm jobs for \S+: (.+)", result.stdout)
    assert found, result.stdout
    return found.group(1).split()


def squeue_ids() -> set[str]:
    listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


def metric_rows(url: str, seed: int):
    return sql(url, "select m.name, m.step, m.value from metrics m join params p on p.run_id = m.run_id "
                    "where p.key = 'seed' and p.value_num = :seed order by m.name, m.step", seed=seed)


def test_slurm_workers_refuse_sqlite(home):
    result = ntklab("run", str(SPECS / "quickstart.yaml"), "--executor", "slurm", "--workers", "2", home=home)
    assert result.returncode == 2
    assert "SQLite on a network filesystem" in result.stderr and "PostgreSQL" in result.stderr
    assert "--allow-sqlite" in result.stderr
    assert not (home / "ntklab.db").exists(), "nothing is recorded"


def test_quickstart_on_two_slurm_workers_runs_each_run_once(home, pg_url, slurm):
    jobs = submitted_jobs(ntklab("run", str(SPECS / "quickstart.yaml"), "--set", "train.epochs=2",
                                 "--executor", "slurm", "--workers", "2", "--time", "15", home=home, db=pg_url))
    assert len(jobs) == 2 and all(re.fullmatch(r"\d+_[01]", j) for j in jobs)
    wait_for(lambda: sql(pg_url, "select count(*) from runs where status = 'running'")[0][0] == 2, 240,
             "both workers to hold a run")
    status = ntklab("status", "quickstart", home=home, db=pg_url, check=True).stdout
    for job in jobs:
        assert re.search(rf"{job}\W+running\W+[0-9a-f]{{12}}", status), status
    wait_for(lambda: not (squeue_ids() & set(jobs)), 600, "the jobs to end", every=2)
    rows = sql(pg_url, "select attempts, status from runs")
    assert len(rows) == 8 and all(r == (1, "done") for r in rows), rows
    workers = {w for (w,) in sql(pg_url, "select worker_id from attempts")}
    assert {re.search(r"slurm-(\d+_\d+)", w).group(1) for w in workers} == set(jobs), "both jobs executed runs"
    status = ntklab("status", "quickstart", home=home, db=pg_url, check=True).stdout
    for job in jobs:
        assert re.search(rf"{job}\W+completed", status), status


def test_scancel_of_a_worker_mid_run_is_reclaimed_by_the_other(home, pg_url, slurm, tmp_path):
    (home / "probe.yaml").write_text(PROBE.format(name="probe", steps=12, step_seconds=0.5, seeds=[0, 1],
                                                  executor=""))
    jobs = submitted_jobs(ntklab("run", "probe.yaml", "--executor", "slurm", "--workers", "2",
                                 "--lease-seconds", "10", home=home, db=pg_url))
    held = wait_for(lambda: sql(pg_url, "select worker_id, key from runs where status = 'running' "
                                        "and checkpoint_step >= 3"), 240, "a run with a checkpoint")
    worker_id, key = held[0]
    victim = re.search(r"slurm-(\d+_\d+)", worker_id).group(1)
    subprocess.run(["scancel", victim], check=True)
    wait_for(lambda: sql(pg_url, "select count(*) from runs where status = 'done'")[0][0] == 2, 240,
             "both runs to finish")
    (attempts,), = sql(pg_url, "select attempts from runs where key = :key", key=key)
    assert attempts == 2
    (first, second) = sql(pg_url, "select a.worker_id, a.resumed_from_step from attempts a join runs r "
                                  "on r.id = a.run_id where r.key = :key order by a.attempt", key=key)
    assert victim in first[0] and victim not in second[0] and second[1] >= 3, "resumed by the other job"
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "probe.yaml").write_text((home / "probe.yaml").read_text().replace("step_seconds: 0.5",
                                                                                    "step_seconds: 0"))
    ntklab("run", "probe.yaml", home=reference, check=True)
    reference_url = f"sqlite:///{reference / 'ntklab.db'}"
    assert sql(pg_url, "select key from runs order by key") == sql(reference_url, "select key from runs order by key")
    for seed in (0, 1):
        assert metric_rows(pg_url, seed) == metric_rows(reference_url, seed), "same metrics as uninterrupted"
    status = ntklab("status", "probe", home=home, db=pg_url, check=True).stdout
    assert re.search(rf"{victim}\W+cancelled", status), status


def test_cancel_stops_the_jobs_and_interrupts_the_runs(home, pg_url, slurm):
    (home / "probe.yaml").write_text(PROBE.format(name="probe", steps=200, step_seconds=0.5, seeds=[0, 1],
                                                  executor=""))
    jobs = submitted_jobs(ntklab("run", "probe.yaml", "--executor", "slurm", "--workers", "2",
                                 home=home, db=pg_url))
    wait_for(lambda: sql(pg_url, "select count(*) from runs where status = 'running'")[0][0] == 2, 240,
             "both runs to start")
    cancelled = ntklab("cancel", "probe", home=home, db=pg_url, check=True).stdout
    assert "cancelled 2 jobs" in cancelled and "2 running runs marked interrupted" in cancelled
    wait_for(lambda: not (squeue_ids() & set(jobs)), 120, "the jobs to leave the queue")
    assert [s for (s,) in sql(pg_url, "select status from runs")] == ["interrupted"] * 2
    status = ntklab("status", "probe", home=home, db=pg_url, check=True).stdout
    assert all(re.search(rf"{job}\W+cancelled", status) for job in jobs), status


def test_a_job_at_its_time_limit_checkpoints_requeues_and_completes(home, pg_url, slurm, tmp_path):
    """One minute per job: Slurm's pre-timeout SIGUSR2 (10 s before the limit, sent by a check
    every 30 s, so 20-50 s into the job) stops the run at a checkpoint and submitit requeues the
    job, which resumes it. 60 steps of a second outlast the first job; a later one may be
    signalled too before the run ends, hence several requeues allowed."""
    executor = "executor: {kind: slurm, slurm: {time_minutes: 1, signal_delay_s: 10, max_requeues: 6}}\n"
    (home / "probe.yaml").write_text(PROBE.format(name="probe", steps=60, step_seconds=1.0, seeds=[0],
                                                  executor=executor))
    (job,) = submitted_jobs(ntklab("run", "probe.yaml", "--executor", "slurm", "--workers", "1",
                                   home=home, db=pg_url))
    wait_for(lambda: sql(pg_url, "select status from runs") == [("done",)], 300, "the run to complete", every=2)
    tried = sql(pg_url, "select a.status, a.resumed_from_step, a.worker_id from attempts a order by a.attempt")
    assert len(tried) >= 2, tried
    assert [status for status, _, _ in tried] == ["interrupted"] * (len(tried) - 1) + ["done"], tried
    resumed = [step for _, step, _ in tried[1:]]
    assert all(step >= 3 for step in resumed) and resumed == sorted(set(resumed)), "each job went on from a checkpoint"
    assert all(f"slurm-{job}:" in worker for _, _, worker in tried), "the requeued job is the same job"
    logs = "".join(path.read_text() for path in job_folder_logs(home))
    assert "Caught signal SIGUSR2" in logs and f"Requeued job {job.split('_')[0]}" in logs
    wait_for(lambda: job not in squeue_ids(), 60, "the job to leave the queue")
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "probe.yaml").write_text((home / "probe.yaml").read_text().replace("step_seconds: 1.0",
                                                                                    "step_seconds: 0")
                                          .replace(executor, ""))
    ntklab("run", "probe.yaml", home=reference, check=True)
    assert metric_rows(pg_url, 0) == metric_rows(f"sqlite:///{reference / 'ntklab.db'}", 0), "same as uninterrupted"


def job_folder_logs(home):
    return sorted((home / "slurm" / "probe").glob("*_log.*"))
