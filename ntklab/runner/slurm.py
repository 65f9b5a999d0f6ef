"""The Slurm executor: a job array of `ntklab` workers submitted through submitit.

Each job of the array is one worker (ntklab/runner/worker.py) that claims runs of the experiment
until none is left, so one allocation executes many runs and the scheduler is not asked for a
job per run. Jobs inherit the submitting process's environment; the database URL reaches them
there (NTKLAB_DB), never in a file.

Preemption and time limits: Slurm sends SIGUSR2 `signal_delay_s` before a job's limit. The worker
takes it as a stop request: the current run checkpoints at its next step and is recorded as
interrupted; then submitit's own handler requeues the job, whose worker resumes the run from its
checkpoint. SIGTERM (`scancel`, or the limit itself) stops a worker the same way without a
requeue, and the run is claimed by another worker at once. A job killed outright leaves its run
held by a lease that expires, after which another worker reclaims it.

Jobs are recorded in the `jobs` table; their states: ntklab/runner/jobs.py.
"""

import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import submitit
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from ntklab.db.connection import open_engine, reading, resolve_url, writing
from ntklab.db.queue import in_experiments, utcnow
from ntklab.db.tables import experiments, jobs, runs
from ntklab.errors import UsageError
from ntklab.runner.compilation_cache import enable_compilation_cache
from ntklab.runner.execute import ExecuteOptions
from ntklab.runner.jobs import EXECUTOR, LIVE_STATES, experiment_jobs
from ntklab.runner.progress import PlainReporter
from ntklab.runner.worker import Scope, WorkerLimits, work
from ntklab.spec.executor import SlurmParameters
from ntklab.store import Home

FOLLOW_SECONDS = 5.0
SQLITE_REFUSED = (
    "Slurm workers run on other nodes, and SQLite on a network filesystem (NFS, Lustre, GPFS) corrupts "
    "the database: its file locks do not hold there. Use PostgreSQL on a host the nodes reach "
    "(--db postgresql://USER@HOST/DB, then `ntklab db upgrade`), or pass --allow-sqlite when every job "
    "runs on this one node with the home on a local disk."
)


def check_database(url: str, allow_sqlite: bool) -> None:
    """Refuse a SQLite database for Slurm workers unless asked (`--allow-sqlite`)."""
    if make_url(url).get_backend_name() == "sqlite" and not allow_sqlite:
        raise UsageError(SQLITE_REFUSED)


class SlurmWorker(submitit.helpers.Checkpointable):
    """What each job of the array runs: one worker on the experiment's runs, in the job's process.
    Checkpointable: on Slurm's pre-timeout signal submitit pickles it again and requeues the job."""

    def __init__(self, experiment: str, lease_seconds: float):
        self.experiment = experiment
        self.lease_seconds = lease_seconds

    def __call__(self) -> dict:
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint this object, requeue, exit
        home = Home(Path(os.environ["NTKLAB_HOME"]))
        enable_compilation_cache(home)
        engine = open_engine(resolve_url(None, home.root))
        result = work(engine, home, Scope(experiments=[self.experiment]),
                      ExecuteOptions(lease=timedelta(seconds=self.lease_seconds)), PlainReporter(),
                      WorkerLimits(wait_for_held=True), stop_signals=(signal.SIGUSR2,))
        engine.dispose()
        if result.stopped_by == "SIGUSR2" and callable(requeue):
            requeue(signal.SIGUSR2, None)
        return {"runs": len(result.outcomes), "stopped_by": result.stopped_by}


def job_folder(home: Path, experiment: str) -> Path:
    return home / "slurm" / experiment


def submit(engine: Engine, experiment: str, workers: int, params: SlurmParameters, *, db_url: str, home: Path,
           lease_seconds: float) -> list[str]:
    """Submit a job array of `workers` workers for `experiment`; record and return the job ids."""
    folder = job_folder(home, experiment)
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=params.max_requeues)
    chosen = {
        "job_name": f"ntklab-{experiment}", "partition": params.partition, "account": params.account,
        "qos": params.qos, "time": params.time_minutes, "cpus_per_task": params.cpus_per_task,
        "mem": f"{params.mem_gb:g}GB" if params.mem_gb is not None else None, "gpus_per_task": params.gpus_per_task,
        "setup": list(params.setup), "array_parallelism": params.array_parallelism,
        "signal_delay_s": params.signal_delay_s, "additional_parameters": dict(params.sbatch),
    }
    executor.update_parameters(**{k: v for k, v in chosen.items() if v is not None})
    os.environ.update(NTKLAB_DB=db_url, NTKLAB_HOME=str(home))  # jobs inherit the environment
    submitted = executor.submit_array([SlurmWorker(experiment, lease_seconds) for _ in range(workers)])
    ids = [job.job_id for job in submitted]
    now = utcnow()
    with writing(engine) as conn:
        experiment_id = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).scalar_one()
        conn.execute(jobs.insert(), [{"experiment_id": experiment_id, "executor": EXECUTOR, "job_id": job_id,
                                      "folder": str(folder), "submitted_at": now} for job_id in ids])
    return ids


def follow(engine: Engine, experiment: str, job_ids: Sequence[str], say: Callable[[str], None]) -> None:
    """Print a line whenever the jobs' or the runs' counts change, until no job is queued or running."""
    last = None
    while True:
        states = [j.state for j in experiment_jobs(engine, experiment) if j.job_id in job_ids]
        with reading(engine) as conn:
            counts = dict(conn.execute(select(runs.c.status, func.count()).where(in_experiments([experiment]))
                                       .group_by(runs.c.status)).all())
        line = ("jobs: " + ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
                + "; runs: " + ", ".join(f"{n} {s.value}" for s, n in sorted(counts.items(), key=lambda c: c[0].value)))
        if line != last:
            say(line)
            last = line
        if not any(s.upper() in LIVE_STATES for s in states):
            return
        time.sleep(FOLLOW_SECONDS)
