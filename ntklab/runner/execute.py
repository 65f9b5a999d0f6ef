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
from ntklab.db.models import RunStatus
from ntklab.db.queue import (
    ClaimedRun,
    PlanRow,
    Worker,
    claim,
    enqueue,
    fail_blocked,
    finish,
    reap,
    reset,
    statuses,
    sync_experiment,
    waiting_on_others,
)
from ntklab.db.records import truncate_after
from ntklab.db.tables import runs
from ntklab.headline import headline_names
from ntklab.redaction import redact
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
UPSTREAM_POLL_SECONDS = 1.0
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
    final: dict[str, RunStatus] = field(default_factory=dict)
    stopped_by: str | None = None

    def count(self, status: RunStatus) -> int:
        return sum(s == status for s in self.final.values())


def enqueue_plan(engine: Engine, plan: ExperimentPlan, options: ExecuteOptions, home: Home) -> dict[str, int]:
    """Record the experiment and its runs; apply --force / --retry-failed. Returns run ids by key."""
    rows = [PlanRow(r.key, r.group, r.task, r.config_json, r.upstream) for r in plan.runs]
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
            home.forget_run_files(key)
    return ids


def execute(engine: Engine, home: Home, plan: ExperimentPlan, options: ExecuteOptions, reporter: Reporter) -> ExecuteResult:
    """Run every run of the plan that is not done, upstream runs before the runs that need them.

    Runs are claimed in plan order, a window at a time. When nothing in the plan can be claimed,
    runs blocked by a failed upstream run are marked failed, and runs waiting for upstream runs
    that other workers hold are waited for; otherwise the plan is finished."""
    ids = enqueue_plan(engine, plan, options, home)
    reap(engine)
    by_key = {r.key: r for r in plan.runs}
    feeds = {ids[key] for r in plan.runs for _, key in r.upstream}
    current = statuses_in_plan_order(engine, plan)
    todo = [ids[k] for k, s in current.items() if s in (RunStatus.pending, RunStatus.interrupted, RunStatus.running)]
    worker = Worker.current()
    stop = StopFlag()
    result = ExecuteResult()
    reporter.start(sum(s in (RunStatus.pending, RunStatus.interrupted) for s in current.values()))
    try:
        with stop_on_signals(stop):
            start = 0
            while not stop.is_set():
                if start >= len(todo):
                    if fail_blocked(engine, todo) or _wait_for_others(engine, todo, stop):
                        start = 0
                        continue
                    break
                claimed = claim(engine, todo[start : start + CLAIM_WINDOW], worker, options.lease)
                if claimed is None:
                    start += CLAIM_WINDOW
                    continue
                result.outcomes.append(
                    _execute_one(engine, home, by_key[claimed.key], claimed, worker, stop, options, plan, reporter)
                )
                if claimed.id in feeds:
                    start = 0  # runs that waited for this one may be claimable now
    finally:
        reporter.close()
    result.stopped_by = stop.signal_name
    result.final = statuses_in_plan_order(engine, plan)
    return result


def _wait_for_others(engine: Engine, todo: list[int], stop: StopFlag) -> bool:
    """Sleep a little when runs of the plan wait for upstream runs other workers hold."""
    if not waiting_on_others(engine, todo):
        return False
    stop.wait(UPSTREAM_POLL_SECONDS)
    return True


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
        error = (type(exc).__name__, redact(str(exc)), redact(tb.format_exc()[-TRACEBACK_LIMIT:]))
        log.write(error[2])
        _flush_quietly(ctx, log)
    if status == RunStatus.done:
        shutil.rmtree(home.checkpoint_path(claimed.key).parent, ignore_errors=True)
    recorded = _record(engine, claimed, worker, status, error, ctx, plan)
    seconds = time.monotonic() - began
    shown = status.value if recorded else "lost"
    log.write(f"{shown} after {seconds:.1f}s{': ' + note if note else ''}")
    log.close()
    reporter.run_finished(label, shown, seconds, note, _headline(planned, plan, ctx))
    return RunOutcome(claimed.key, planned.group, shown, seconds, note)


def _headline(planned: PlannedRun, plan: ExperimentPlan, ctx: LiveRunContext) -> dict[str, float | None]:
    """The last values of the run's headline metrics (ntklab/headline.py)."""
    figure_metrics = [y for figure in plan.figures.values() for y in figure.y_names]
    names = headline_names(planned.task, ctx.latest_values, figure_metrics)
    return {name: ctx.latest_values[name][1] for name in names}


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
            conn.execute(update(runs).where(runs.c.id == claimed.id)
                         .values(provenance=collect(plan.file)))
    return held
