"""Execute an experiment plan: enqueue its runs, then claim and run them until none is left.

Each run's outcome is recorded before the next is claimed: done; failed (with the exception type
and traceback; the sweep goes on); diverged (NaN loss; metrics kept); interrupted (on SIGINT or
SIGTERM, after a checkpoint; the sweep stops). Re-executing the same plan skips done runs and
resumes interrupted ones from their checkpoints.
"""

import shutil
import time
import traceback as tb
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, update

from ntklab.db.connection import reading, writing
from ntklab.db.models import Run, RunStatus
from ntklab.db.queue import ClaimedRun, PlanRow, Worker, claim, enqueue, finish, reap, reset, statuses, sync_experiment
from ntklab.db.records import truncate_after
from ntklab.runner.context import LeaseLost, LiveRunContext, StopFlag, read_checkpoint
from ntklab.runner.heartbeat import Heartbeat
from ntklab.runner.progress import Reporter
from ntklab.runner.provenance import collect
from ntklab.runner.runlog import RunLog
from ntklab.runner.signals import stop_on_signals
from ntklab.spec.load import ExperimentPlan, PlannedRun
from ntklab.store import Home
from ntklab.tasks.context import RunDiverged, RunInterrupted
from ntklab.tasks.registry import run_function

CLAIM_WINDOW = 256
TRACEBACK_LIMIT = 20_000


@dataclass(frozen=True)
class ExecuteOptions:
    retry_failed: bool = False
    force: bool = False
    lease: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class RunOutcome:
    key: str
    group: str
    status: str
    seconds: float
    note: str


@dataclass
class ExecuteResult:
    outcomes: list[RunOutcome] = field(default_factory=list)
    already_done: int = 0
    left_failed: int = 0
    busy_elsewhere: int = 0
    stopped_by: str | None = None

    @property
    def any_failed(self) -> bool:
        return any(o.status == RunStatus.failed.value for o in self.outcomes)


def enqueue_plan(engine: Engine, plan: ExperimentPlan, options: ExecuteOptions, home: Home) -> dict[str, int]:
    """Record the experiment and its runs; apply --force / --retry-failed. Returns run ids by key."""
    rows = [PlanRow(r.key, r.group, r.task, r.config_json) for r in plan.runs]
    with writing(engine) as conn:
        experiment_id = sync_experiment(conn, plan.name, plan.description, plan.text, plan.spec_hash, plan.file)
        ids = enqueue(conn, experiment_id, rows)
        restart = []
        if options.force:
            restart = [RunStatus.done, RunStatus.failed, RunStatus.diverged, RunStatus.interrupted]
        elif options.retry_failed:
            restart = [RunStatus.failed, RunStatus.diverged]
        reset_ids = set(reset(conn, list(ids.values()), restart)) if restart else set()
    for key, run_id in ids.items():
        if run_id in reset_ids:
            shutil.rmtree(home.checkpoint_path(key).parent, ignore_errors=True)
    return ids


def execute(engine: Engine, home: Home, plan: ExperimentPlan, options: ExecuteOptions, reporter: Reporter) -> ExecuteResult:
    ids = enqueue_plan(engine, plan, options, home)
    reap(engine)
    by_key = {r.key: r for r in plan.runs}
    current = statuses_in_plan_order(engine, plan)
    result = ExecuteResult(
        already_done=sum(s == RunStatus.done for s in current.values()),
        left_failed=sum(s == RunStatus.failed for s in current.values()),
    )
    todo = [ids[k] for k, s in current.items() if s in (RunStatus.pending, RunStatus.interrupted, RunStatus.running)]
    worker = Worker.current()
    stop = StopFlag()
    reporter.start(sum(s != RunStatus.running for s in current.values() if s in
                       (RunStatus.pending, RunStatus.interrupted)))
    try:
        with stop_on_signals(stop):
            start = 0
            while start < len(todo) and not stop.is_set():
                claimed = claim(engine, todo[start : start + CLAIM_WINDOW], worker, options.lease)
                if claimed is None:
                    start += CLAIM_WINDOW
                    continue
                outcome = _execute_one(engine, home, by_key[claimed.key], claimed, worker, stop, options, plan,
                                       reporter)
                result.outcomes.append(outcome)
    finally:
        reporter.close()
    result.stopped_by = stop.signal_name
    final = statuses_in_plan_order(engine, plan)
    result.busy_elsewhere = sum(s == RunStatus.running for s in final.values())
    return result


def statuses_in_plan_order(engine: Engine, plan: ExperimentPlan) -> dict[str, RunStatus]:
    keys = list(dict.fromkeys(r.key for r in plan.runs))
    with reading(engine) as conn:
        found = statuses(conn, keys)
    return {k: found[k] for k in keys if k in found}


def _execute_one(engine: Engine, home: Home, planned: PlannedRun, claimed: ClaimedRun, worker: Worker,
                 stop: StopFlag, options: ExecuteOptions, plan: ExperimentPlan, reporter: Reporter) -> RunOutcome:
    label = f"{claimed.key[:12]} {planned.group}"
    log = RunLog(home.log_path(claimed.key))
    began = time.monotonic()
    checkpoint = read_checkpoint(home, claimed.key)
    resumed_from = checkpoint[0] if checkpoint else None
    with writing(engine) as conn:
        truncate_after(conn, claimed.id, resumed_from)
    log.write(f"attempt {claimed.attempt} by worker {worker.id}"
              + (f", resuming from the checkpoint at step {resumed_from}" if checkpoint else ", from scratch"))
    reporter.run_started(label, resumed_from)
    ctx = LiveRunContext(engine, home, claimed, worker, stop, log, reporter.run_progress)
    status, note, error = RunStatus.done, "", (None, None, None)
    try:
        with Heartbeat(engine, claimed.id, worker, options.lease, ctx):
            run_function(planned.task)(planned.config, ctx)
            ctx.flush()
    except LeaseLost as lost:
        log.write(f"dropped: {lost}")
        reporter.run_finished(label, "lost", time.monotonic() - began, str(lost))
        log.close()
        return RunOutcome(claimed.key, planned.group, "lost", time.monotonic() - began, str(lost))
    except RunInterrupted as stopped:
        status, note = RunStatus.interrupted, f"{stop.signal_name or 'stop'}: {stopped}"
        _flush_quietly(ctx, log)
    except RunDiverged as diverged:
        status, note = RunStatus.diverged, str(diverged)
        error = ("Diverged", str(diverged), None)
        _flush_quietly(ctx, log)
    except KeyboardInterrupt:
        _record(engine, claimed, worker, RunStatus.interrupted, ("KeyboardInterrupt", "aborted", None), ctx, plan)
        log.write("aborted by a second interrupt")
        log.close()
        raise
    except Exception as exc:
        status, note = RunStatus.failed, f"{type(exc).__name__}: {exc}"
        error = (type(exc).__name__, str(exc), tb.format_exc()[-TRACEBACK_LIMIT:])
        log.write(error[2])
        _flush_quietly(ctx, log)
    if status == RunStatus.done:
        shutil.rmtree(home.checkpoint_path(claimed.key).parent, ignore_errors=True)
    recorded = _record(engine, claimed, worker, status, error, ctx, plan)
    seconds = time.monotonic() - began
    shown = status.value if recorded else "lost"
    log.write(f"{shown} after {seconds:.1f}s{': ' + note if note else ''}")
    log.close()
    reporter.run_finished(label, shown, seconds, note)
    return RunOutcome(claimed.key, planned.group, shown, seconds, note)


def _flush_quietly(ctx: LiveRunContext, log: RunLog) -> None:
    """Keep the metrics logged before a failure; a failing flush must not hide the first error."""
    try:
        ctx.flush()
    except Exception as exc:  # noqa: BLE001 - reported in the run log, the run's own error wins
        log.write(f"could not record the last metrics: {type(exc).__name__}: {exc}")


def _record(engine: Engine, claimed: ClaimedRun, worker: Worker, status: RunStatus, error, ctx: LiveRunContext,
            plan: ExperimentPlan) -> bool:
    error_type, message, trace = error
    with writing(engine) as conn:
        held = finish(conn, claimed.id, worker, status, error_type=error_type, error_message=message,
                      traceback=trace, progress=ctx.latest_progress)
        if held:
            conn.execute(update(Run.__table__).where(Run.__table__.c.id == claimed.id)
                         .values(provenance=collect(plan.file)))
    return held
