"""The batch jobs of experiments: their states in Slurm, and cancelling them.

Without Slurm's accounting database `sacct` knows nothing, so a job's state comes from `squeue`
while it is queued or running, and afterwards from the files submitit and Slurm leave in the
job's folder (Slurm's "CANCELLED" and "TIME LIMIT" lines, submitit's result file).
"""

import pickle
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update

from ntklab.db.connection import reading, writing
from ntklab.db.liveness import utcnow
from ntklab.db.tables import RunStatus, experiments, jobs, runs
from ntklab.errors import UsageError

EXECUTOR = "slurm"
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


def queue_states() -> dict[str, str] | None:
    """Slurm's state of every job it still lists (array tasks one by one), or None without Slurm."""
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return dict(line.split("|", 1) for line in listed.stdout.split() if "|" in line)


def _ended_state(folder: Path, job_id: str, cancelled: bool) -> str:
    """The state of a job Slurm no longer lists, from the files in its folder."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=0)
    stderr = paths.stderr.read_text(errors="replace")[-20_000:] if paths.stderr.exists() else ""
    if cancelled or " CANCELLED AT " in stderr:
        return "cancelled"
    if "DUE TO TIME LIMIT" in stderr:
        return "timeout"
    if paths.result_pickle.exists():
        with paths.result_pickle.open("rb") as handle:
            outcome, _ = pickle.load(handle)
        return "completed" if outcome == "success" else "failed"
    return "ended"


@dataclass(frozen=True)
class JobState:
    experiment: str
    job_id: str
    state: str
    running: str | None  # key of the run its worker holds


def experiment_jobs(engine: Engine, experiment: str | None) -> list[JobState]:
    """The recorded jobs of one experiment (or all), with their states and the run each one holds."""
    with reading(engine) as conn:
        query = (select(experiments.c.name, jobs.c.job_id, jobs.c.folder, jobs.c.cancelled_at)
                 .join(experiments, experiments.c.id == jobs.c.experiment_id).order_by(jobs.c.id))
        if experiment is not None:
            query = query.where(experiments.c.name == experiment)
        recorded = conn.execute(query).all()
        held = dict(conn.execute(select(runs.c.worker_id, runs.c.key).where(runs.c.status == RunStatus.running)).all())
    if not recorded:
        return []
    listed = queue_states() or {}
    by_job = {worker_job(w): key for w, key in held.items() if worker_job(w)}
    return [JobState(r.name, r.job_id,
                     listed.get(r.job_id, "").lower() or _ended_state(Path(r.folder), r.job_id, r.cancelled_at is not None),
                     by_job.get(r.job_id)) for r in recorded]


def worker_job(worker_id: str | None) -> str | None:
    """The Slurm job of a worker id (ntklab.db.queue.Worker.current names it), if any."""
    for part in (worker_id or "").split(":"):
        if part.startswith("slurm-"):
            return part.removeprefix("slurm-")
    return None


def cancel(engine: Engine, experiment: str) -> tuple[list[str], int]:
    """Cancel the experiment's queued and running jobs and mark its running runs interrupted.
    Returns the jobs cancelled and how many runs were interrupted."""
    from ntklab.db.queue import in_experiments, interrupt_running  # the queue's writes; `status` lists jobs without them

    live = [j.job_id for j in experiment_jobs(engine, experiment) if j.state.upper() in LIVE_STATES]
    if live:
        done = subprocess.run(["scancel", *live], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise UsageError(f"scancel failed: {done.stderr.strip() or done.returncode}")
    with writing(engine) as conn:
        if live:
            experiment_id = select(experiments.c.id).where(experiments.c.name == experiment).scalar_subquery()
            conn.execute(update(jobs).where(jobs.c.experiment_id == experiment_id, jobs.c.job_id.in_(live))
                         .values(cancelled_at=utcnow()))
        interrupted = interrupt_running(conn, in_experiments([experiment]), "Cancelled",
                                        "cancelled by `ntklab cancel`; the run resumes from its last checkpoint")
    return live, interrupted
