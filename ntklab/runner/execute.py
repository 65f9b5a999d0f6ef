"""Record an experiment plan's runs in the queue, and execute one claimed run.

A run's outcome is recorded before its worker claims the next: done; failed (with the exception
type and traceback; the sweep goes on); diverged (NaN loss; metrics kept); interrupted (on SIGINT
or SIGTERM, after a checkpoint; the worker stops). Re-executing the same plan skips done runs and
resumes interrupted ones from their checkpoints. The loop that claims runs is ntklab/runner/worker.py.
"""

import shutil
import time
import traceback as tb
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import Engine

from ntklab.db.connection import HeldConnection, writing
from ntklab.db.models import RunStatus
from ntklab.db.queue import ClaimedRun, PlanRow, Worker, enqueue, finish, reset, sync_experiment
from ntklab.db.records import truncate_after
from ntklab.headline import headline_names
from ntklab.redaction import redact
from ntklab.runner.checkpoint import read_checkpoint
from ntklab.runner.context import LeaseLost, LiveRunContext, StopFlag
from ntklab.runner.heartbeat import Heartbeat
from ntklab.runner.progress import Reporter
from ntklab.runner.provenance import collect
from ntklab.runner.runlog import RunLog
from ntklab.spec.load import ExperimentPlan
from ntklab.store import Home
from ntklab.tasks.context import RunDiverged, RunInterrupted
from ntklab.tasks.registry import run_function

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


@dataclass(frozen=True)
class RunSource:
    """What a run's experiment says beyond its config: the spec file (for provenance) and the
    metrics its figures plot (for the headline printed when the run ends)."""

    spec_file: str
    figure_metrics: tuple[str, ...] = ()

    @classmethod
    def of_plan(cls, plan: ExperimentPlan) -> "RunSource":
        return cls(plan.file, tuple(y for figure in plan.figures.values() for y in figure.y_names))


def execute_one(held: HeldConnection, home: Home, config: BaseModel, claimed: ClaimedRun, worker: Worker,
                stop: StopFlag, options: ExecuteOptions, source: RunSource, reporter: Reporter) -> RunOutcome:
    """Execute one claimed run and record how it ended (the outcome says "lost" when another worker
    took the run over meanwhile); `held` is the worker's connection for its lease and its finish.
    A second interrupt (KeyboardInterrupt) propagates, wherever it arrives, after the run is
    recorded interrupted (on a connection of its own: the held one may be what it interrupted) and
    its log says so."""
    log = RunLog(home.log_path(claimed.key))
    try:
        return _execute_claimed(held, home, config, claimed, worker, stop, options, source, reporter, log)
    except KeyboardInterrupt:
        log = RunLog(home.log_path(claimed.key))  # it may have been closed when the interrupt came
        with writing(held.engine) as conn:
            finish(conn, claimed.id, worker, RunStatus.interrupted, error_type="KeyboardInterrupt",
                   error_message="aborted by a second interrupt")
        log.write("aborted by a second interrupt")
        log.close()
        raise


def _execute_claimed(held: HeldConnection, home: Home, config: BaseModel, claimed: ClaimedRun, worker: Worker,
                     stop: StopFlag, options: ExecuteOptions, source: RunSource, reporter: Reporter,
                     log: RunLog) -> RunOutcome:
    label = f"{claimed.key[:12]} {claimed.group}"
    began = time.monotonic()
    engine = held.engine
    checkpoint = read_checkpoint(home, claimed.key, log.write)
    resumed_from = checkpoint[0] if checkpoint else None
    with writing(engine) as conn:
        truncate_after(conn, claimed.id, resumed_from)
    log.write(f"attempt {claimed.attempt} by worker {worker.id}"
              + (f", resuming from the checkpoint at step {resumed_from}" if checkpoint else ", from scratch"))
    reporter.run_started(label, resumed_from)
    ctx = LiveRunContext(engine, home, claimed, worker, stop, log, reporter.run_progress, options.lease)
    status, note, error = RunStatus.done, "", (None, None, None)
    try:
        with Heartbeat(held, claimed.id, worker, options.lease, ctx):
            run_function(claimed.task)(config, ctx)
            ctx.flush()
    except LeaseLost as lost:
        log.write(f"dropped: {lost}")
        reporter.run_finished(label, "lost", time.monotonic() - began, str(lost))
        log.close()
        return RunOutcome(claimed.key, claimed.group, "lost", time.monotonic() - began, str(lost))
    except RunInterrupted as stopped:
        status, note = RunStatus.interrupted, f"{stop.signal_name or 'stop'}: {stopped}"
        _flush_quietly(ctx, log)
    except RunDiverged as diverged:
        status, note = RunStatus.diverged, str(diverged)
        error = ("Diverged", str(diverged), None)
        _flush_quietly(ctx, log)
    except Exception as exc:
        status, note = RunStatus.failed, f"{type(exc).__name__}: {exc}"
        error = (type(exc).__name__, redact(str(exc)), redact(tb.format_exc()[-TRACEBACK_LIMIT:]))
        log.write(error[2])
        _flush_quietly(ctx, log)
    if status == RunStatus.done:
        shutil.rmtree(home.checkpoint_path(claimed.key).parent, ignore_errors=True)
    recorded = _record(held, claimed, worker, status, error, ctx, source.spec_file)
    seconds = time.monotonic() - began
    shown = status.value if recorded else "lost"
    log.write(f"{shown} after {seconds:.1f}s{': ' + note if note else ''}")
    log.close()
    reporter.run_finished(label, shown, seconds, note, _headline(claimed.task, source.figure_metrics, ctx))
    return RunOutcome(claimed.key, claimed.group, shown, seconds, note)


def _headline(task: str, figure_metrics: Sequence[str], ctx: LiveRunContext) -> dict[str, float | None]:
    """The last values of the run's headline metrics (ntklab/headline.py)."""
    names = headline_names(task, ctx.latest_values, figure_metrics)
    return {name: ctx.latest_values[name][1] for name in names}


def _flush_quietly(ctx: LiveRunContext, log: RunLog) -> None:
    """Keep the metrics logged before a failure; a failing flush must not hide the first error."""
    try:
        ctx.flush()
    except Exception as exc:  # noqa: BLE001 - reported in the run log, the run's own error wins
        log.write(f"could not record the last metrics: {type(exc).__name__}: {exc}")


def _record(held: HeldConnection, claimed: ClaimedRun, worker: Worker, status: RunStatus, error, ctx: LiveRunContext,
            spec_file: str) -> bool:
    error_type, message, trace = error
    with held.statement() as conn:
        return finish(conn, claimed.id, worker, status, error_type=error_type, error_message=message,
                      traceback=trace, progress=ctx.latest_progress, provenance=collect(spec_file))
