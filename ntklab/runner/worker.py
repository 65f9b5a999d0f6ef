"""The worker loop: claim a run from the queue, execute it, record it, claim the next.

`ntklab run` is one worker whose scope is its plan's runs; `ntklab worker` (and every worker an
executor starts) claims the runs of the experiments it is given, or of all. A worker ends when its
scope holds no run it could still claim, when a limit is reached (runs executed, idle seconds, a
wall-clock time), or on a signal (after the current run checkpointed). Pool workers (`wait_for_held`)
stay while other workers hold runs of the scope, so a run whose worker dies is reclaimed when its
lease expires.
"""

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, select

from ntklab.db.connection import HeldConnection, reading
from ntklab.db.models import RunStatus
from ntklab.db.queue import (
    CHUNK,
    CLAIMABLE,
    OPEN,
    ClaimedRun,
    Worker,
    claim_where,
    claimable_in_experiments,
    fail_blocked,
    in_experiments,
    reap,
    run_ids_with,
    statuses,
    utcnow,
    waiting_on_others,
)
from ntklab.db.tables import experiments, runs
from ntklab.runner.context import StopFlag
from ntklab.runner.execute import ExecuteOptions, RunOutcome, RunSource, enqueue_plan, execute_one
from ntklab.runner.helping import help_others
from ntklab.runner.progress import Reporter
from ntklab.runner.signals import stop_on_signals
from ntklab.spec.load import ExperimentPlan
from ntklab.store import Home
from ntklab.tasks.registry import RUN_CONFIG

CLAIM_WINDOW = 256
# A worker with nothing to claim while others hold runs polls again after FIRST_POLL_SECONDS,
# doubling to POLL_SECONDS: a helper that starts beside a kernel's own worker joins its blocks
# within a few tens of milliseconds of their registration, and an idle worker of a long sweep
# still costs the database one query a second.
FIRST_POLL_SECONDS = 0.05
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerLimits:
    """When a worker stops although runs are left: after `max_runs` runs executed, after
    `idle_exit` seconds without a run to claim, or at `until` (naive UTC)."""

    max_runs: int | None = None
    idle_exit: float | None = None
    until: datetime | None = None
    wait_for_held: bool = False


@dataclass
class WorkResult:
    outcomes: list[RunOutcome] = field(default_factory=list)
    stopped_by: str | None = None
    limit: str | None = None
    final: dict[str, RunStatus] = field(default_factory=dict)  # of a plan's runs, when the work was a plan's

    def count(self, status: RunStatus) -> int:
        return sum(s == status for s in self.final.values())


class Scope:
    """The runs a worker may claim: those of a plan (ids, claimed a window at a time, with the
    plan's own configs) or those of experiments by name (every experiment when None)."""

    def __init__(self, *, run_ids: Sequence[int] | None = None, experiments: Sequence[str] | None = None,
                 configs: dict[str, object] | None = None, source: RunSource | None = None):
        self._ids = list(run_ids) if run_ids is not None else None
        self._experiments = list(experiments) if experiments else None
        self._configs = configs or {}
        self._source = source

    @classmethod
    def of_plan(cls, plan: ExperimentPlan, ids: dict[str, int]) -> "Scope":
        return cls(run_ids=[ids[r.key] for r in plan.runs], configs={r.key: r.config for r in plan.runs},
                   source=RunSource.of_plan(plan))

    def windows(self, engine: Engine) -> list[ColumnElement[bool]]:
        """Where to claim from, in order: the experiments' runs, or the plan's unfinished runs a
        window of ids at a time."""
        if self._ids is None:
            return [claimable_in_experiments(self._experiments)]
        ids = self.open_ids(engine)
        return [runs.c.id.in_(ids[i : i + CLAIM_WINDOW]) for i in range(0, len(ids), CLAIM_WINDOW)]

    def open_ids(self, engine: Engine, among: Sequence[RunStatus] = OPEN) -> list[int]:
        """The runs of the scope whose status is in `among` (by default: not finished)."""
        if self._ids is None:
            clauses = [in_experiments(self._experiments)]
        else:
            ordered = sorted(set(self._ids))
            clauses = [runs.c.id.in_(ordered[i : i + CHUNK]) for i in range(0, len(ordered), CHUNK)]
        with reading(engine) as conn:
            return [i for clause in clauses for i in run_ids_with(conn, clause, among)]

    def config(self, claimed: ClaimedRun):
        return self._configs.get(claimed.key) or RUN_CONFIG.validate_python(claimed.config)

    def source(self, engine: Engine, claimed: ClaimedRun) -> RunSource:
        if self._source is not None:
            return self._source
        with reading(engine) as conn:
            spec_file = conn.execute(select(experiments.c.spec_file).join(runs, runs.c.experiment_id == experiments.c.id)
                                     .where(runs.c.id == claimed.id)).scalar_one()
        return RunSource(spec_file)


def execute(engine: Engine, home: Home, plan: ExperimentPlan, options: ExecuteOptions, reporter: Reporter,
            limits: WorkerLimits = WorkerLimits()) -> WorkResult:
    """Record the plan's runs, then work on them as one worker: `ntklab run` without an executor."""
    ids = enqueue_plan(engine, plan, options, home)
    result = work(engine, home, Scope.of_plan(plan, ids), options, reporter, limits)
    result.final = final_statuses(engine, plan)
    return result


def work(engine: Engine, home: Home, scope: Scope, options: ExecuteOptions, reporter: Reporter,
         limits: WorkerLimits = WorkerLimits(), stop_signals: Sequence[signal.Signals] = ()) -> WorkResult:
    """Claim and execute runs of `scope` until none is left to claim, a limit is reached or a signal
    (SIGINT, SIGTERM and `stop_signals`) asks to stop. Upstream runs finish before the runs that
    need them: a run waiting for an upstream run another worker holds is waited for, and a run
    whose upstream run failed is marked failed. Before claiming a run, a worker helps with the work
    items of runs other workers execute (the blocks of a kernel, ntklab/runner/helping.py): they
    hold up the runs downstream of them, and the helper starts on them without a run of its own."""
    reap(engine)
    worker = Worker.current()
    stop = StopFlag()
    result = WorkResult()
    idle_since = time.monotonic()
    poll = FIRST_POLL_SECONDS
    refused: set[int] = set()  # runs whose items this worker failed to compute
    started: set[int] = set()  # runs this worker helped from their start
    reporter.start(len(scope.open_ids(engine, CLAIMABLE)))
    try:
        with stop_on_signals(stop, stop_signals), HeldConnection(engine) as held:
            while not stop.is_set():
                result.limit = _limit_reached(limits, len(result.outcomes), time.monotonic() - idle_since)
                if result.limit:
                    break
                windows = scope.windows(engine)
                if any(help_others(engine, home, w, worker, stop, options.lease, refused, started) for w in windows):
                    idle_since, poll = time.monotonic(), FIRST_POLL_SECONDS
                    continue
                claimed = next((c for w in windows if (c := claim_where(held, w, worker, options.lease))), None)
                if claimed is not None:
                    result.outcomes.append(execute_one(held, home, scope.config(claimed), claimed, worker, stop,
                                                       options, scope.source(engine, claimed), reporter))
                    idle_since, poll = time.monotonic(), FIRST_POLL_SECONDS
                    continue
                remaining = scope.open_ids(engine)
                if fail_blocked(engine, remaining):
                    continue
                if waiting_on_others(engine, remaining) or (limits.wait_for_held and remaining):
                    stop.wait(poll)
                    poll = min(2 * poll, POLL_SECONDS)
                    continue
                break
    finally:
        reporter.close()
    result.stopped_by = stop.signal_name
    return result


def _limit_reached(limits: WorkerLimits, executed: int, idle_seconds: float) -> str | None:
    if limits.max_runs is not None and executed >= limits.max_runs:
        return f"executed {executed} runs (--max-runs)"
    if limits.idle_exit is not None and idle_seconds >= limits.idle_exit:
        return f"nothing to claim for {idle_seconds:.0f}s (--idle-exit)"
    if limits.until is not None and utcnow() >= limits.until:
        return f"reached {limits.until:%Y-%m-%d %H:%M} UTC (--until)"
    return None


def final_statuses(engine: Engine, plan: ExperimentPlan) -> dict[str, RunStatus]:
    """The status of every run of the plan, in plan order."""
    keys = list(dict.fromkeys(r.key for r in plan.runs))
    with reading(engine) as conn:
        found = statuses(conn, keys)
    return {k: found[k] for k in keys if k in found}


def known_experiments(engine: Engine) -> list[str]:
    with reading(engine) as conn:
        return list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
