"""The run queue: enqueue planned runs, claim one atomically, hold it by a lease, finish it.

A claim is one transaction: on SQLite `BEGIN IMMEDIATE` serializes claimers; on PostgreSQL the
candidate row is locked with `FOR UPDATE SKIP LOCKED`, so concurrent workers skip each other's
rows instead of waiting, and the claim is a single statement. A run whose lease has expired (its
worker died or hung) is claimable again, and resumes from its last checkpoint. The claim path
(claim, heartbeat, finish) is measured by bench/queue_claims.py.
"""

import functools
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (ColumnElement, Connection, Engine, Select, String, bindparam, exists, func, literal, literal_column, or_,
                        select, text, true, type_coerce, update)
from sqlalchemy.dialects import postgresql

from ntklab.db import tables
from ntklab.db.connection import HeldConnection, reading, writing
from ntklab.db.dialect import insert_for
from ntklab.db.liveness import lost_runs, utcnow
from ntklab.db.models import Param, RunStatus
from ntklab.db.records import clear_results
from ntklab.db.tables import attempts, experiments, memberships, runs, spec_versions, upstream_links
from ntklab.flatten import flatten
from ntklab.identity import HASH_VERSION

CHUNK = 500
CLAIMABLE = (RunStatus.pending, RunStatus.interrupted)
# LIMIT and OFFSET written into the SQL: as bound parameters, PostgreSQL's generic plan of a
# prepared claim could not know it stops at the first row, and planned for all of them.
_ZERO, _ONE = literal_column("0"), literal_column("1")
OPEN = (*CLAIMABLE, RunStatus.running)


@dataclass(frozen=True)
class Worker:
    id: str
    host: str
    pid: int

    @classmethod
    def current(cls) -> "Worker":
        """This process; inside a Slurm job the id names the job (`slurm-<array>_<task>`), so
        `ntklab status` can tell which run each job holds."""
        host, pid = socket.gethostname(), os.getpid()
        job = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
               if "SLURM_ARRAY_TASK_ID" in os.environ else os.environ.get("SLURM_JOB_ID"))
        return cls(f"{host}:{pid}:{f'slurm-{job}:' if job else ''}{os.urandom(4).hex()}", host, pid)


@dataclass(frozen=True)
class ClaimedRun:
    id: int
    key: str
    group: str
    task: str
    config: dict[str, Any]
    attempt: int
    checkpoint_step: int | None


@dataclass(frozen=True)
class PlanRow:
    """What one planned run should do to the database: insert it, or link an existing run."""

    key: str
    group: str
    task: str
    config: dict[str, Any]
    upstream: tuple[tuple[str, str], ...] = ()  # (name, key) of runs planned before this one


def _chunks(items: Sequence, size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sync_experiment(conn: Connection, name: str, description: str, spec_text: str, spec_hash: str, spec_file: str) -> int:
    """Insert or update the experiment row (it holds the latest spec) and keep the spec among its
    versions; returns its id."""
    now = utcnow()
    stmt = insert_for(conn, experiments).values(
        name=name, description=description, spec_text=spec_text, spec_hash=spec_hash,
        spec_file=spec_file, created_at=now, updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[experiments.c.name],
        set_={"description": description, "spec_text": spec_text, "spec_hash": spec_hash,
              "spec_file": spec_file, "updated_at": now},
    )
    conn.execute(stmt)
    experiment_id = conn.execute(select(experiments.c.id).where(experiments.c.name == name)).scalar_one()
    conn.execute(insert_for(conn, spec_versions).values(
        experiment_id=experiment_id, spec_hash=spec_hash, spec_text=spec_text, spec_file=spec_file, created_at=now,
    ).on_conflict_do_nothing(index_elements=[spec_versions.c.experiment_id, spec_versions.c.spec_hash]))
    return experiment_id


def spec_version_count(conn: Connection, name: str, spec_hash: str) -> tuple[int, bool]:
    """How many spec versions the experiment `name` has, and whether `spec_hash` is one of them."""
    rows = conn.execute(select(spec_versions.c.spec_hash).join(experiments, experiments.c.id ==
                                                               spec_versions.c.experiment_id)
                        .where(experiments.c.name == name)).scalars().all()
    return len(rows), spec_hash in rows


def typed_param(value: Any) -> dict[str, Any]:
    """The typed columns of one params row."""
    row: dict[str, Any] = {"value_num": None, "value_str": None, "value_bool": None, "value_json": None}
    if isinstance(value, bool):
        row["value_bool"] = value
    elif isinstance(value, (int, float)):
        row["value_num"] = float(value)
    elif isinstance(value, str):
        row["value_str"] = value
    elif value is not None:
        row["value_json"] = value
    return row


def enqueue(conn: Connection, experiment_id: int, rows: Sequence[PlanRow]) -> dict[str, int]:
    """Insert the runs that are new (with their params) and link all of them to the experiment.

    Existing runs are left as they are: a run is identified by its config, whoever created it.
    Returns the run id of every key. After many new runs PostgreSQL analyzes `runs` at once: its
    statistics, until autovacuum's next round, would still say there are few open runs, and with
    them the planner sorted every open run for each claim (1.5 ms at 600 runs) instead of
    walking `ix_runs_open` to the first one.
    """
    now = utcnow()
    ids: dict[str, int] = {}
    new = 0
    for chunk in _chunks(rows):
        keys = [r.key for r in chunk]
        conn.execute(
            insert_for(conn, runs).on_conflict_do_nothing(index_elements=[runs.c.key]),
            [
                {"key": r.key, "hash_version": HASH_VERSION, "experiment_id": experiment_id,
                 "group_name": r.group, "task": r.task, "config": r.config,
                 "status": RunStatus.pending, "attempts": 0, "created_at": now}
                for r in chunk
            ],
        )
        found = dict(conn.execute(select(runs.c.key, runs.c.id).where(runs.c.key.in_(keys))).all())
        ids.update(found)
        with_params = set(conn.execute(
            select(Param.run_id).where(Param.run_id.in_(found.values())).distinct()
        ).scalars())
        params = [
            {"run_id": found[r.key], "key": k, **typed_param(v)}
            for r in chunk if found[r.key] not in with_params
            for k, v in flatten(r.config).items()
        ]
        new += len(set(found.values()) - with_params)
        if params:
            conn.execute(insert_for(conn, tables.params).on_conflict_do_nothing(), params)
        conn.execute(
            insert_for(conn, memberships).on_conflict_do_nothing(),
            [{"experiment_id": experiment_id, "run_id": found[r.key], "group_name": r.group} for r in chunk],
        )
        links = [{"run_id": found[r.key], "name": name, "upstream_run_id": ids[key]}
                 for r in chunk for name, key in r.upstream]
        if links:
            conn.execute(insert_for(conn, upstream_links).on_conflict_do_nothing(), links)
    if new >= CHUNK and conn.dialect.name == "postgresql":
        conn.execute(text("ANALYZE runs"))
    return ids


def statuses(conn: Connection, keys: Sequence[str]) -> dict[str, RunStatus]:
    found: dict[str, RunStatus] = {}
    for chunk in _chunks(keys):
        found.update(conn.execute(select(runs.c.key, runs.c.status).where(runs.c.key.in_(chunk))).all())
    return found


def reset(conn: Connection, run_ids: Sequence[int], from_statuses: Sequence[RunStatus]) -> list[int]:
    """Make runs in `from_statuses` pending again (for --force and --retry-failed), forgetting their
    metrics so they start from scratch. Running runs are never touched. Returns the ids reset."""
    done: list[int] = []
    for chunk in _chunks(run_ids):
        chosen = list(conn.execute(
            select(runs.c.id).where(runs.c.id.in_(chunk), runs.c.status.in_(from_statuses))
        ).scalars())
        if not chosen:
            continue
        clear_results(conn, chosen)
        conn.execute(
            update(runs).where(runs.c.id.in_(chosen)).values(
                status=RunStatus.pending, checkpoint_step=None, progress_step=None, error_type=None,
                error_message=None, traceback=None, finished_at=None,
            )
        )
        done.extend(chosen)
    return done


def reap(engine: Engine, now: datetime | None = None, alive=None) -> int:
    """Mark the runs of `lost_runs` interrupted (they resume from their last checkpoint). Returns
    how many were marked."""
    now = now or utcnow()
    with reading(engine) as conn:
        gone = lost_runs(conn, now, alive)
    marked = 0
    with writing(engine) as conn:
        for run_id, worker_id in gone:
            result = conn.execute(
                update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.running,
                                   runs.c.worker_id == worker_id)
                .values(status=RunStatus.interrupted, error_type="WorkerLost",
                        error_message="the worker stopped heartbeating (killed or lost); the run resumes from its last checkpoint")
            )
            if result.rowcount:
                _end_attempt(conn, run_id, RunStatus.interrupted, now)
                marked += 1
    return marked


def interrupt_running(conn: Connection, scope: ColumnElement[bool], error_type: str, message: str) -> int:
    """Mark the running runs of `scope` interrupted (their workers lose them at the next
    heartbeat); returns how many."""
    now = utcnow()
    chosen = list(conn.execute(select(runs.c.id).where(scope, runs.c.status == RunStatus.running)).scalars())
    for run_id in chosen:
        conn.execute(update(runs).where(runs.c.id == run_id).values(
            status=RunStatus.interrupted, error_type=error_type, error_message=message, lease_expires_at=None))
        _end_attempt(conn, run_id, RunStatus.interrupted, now)
    return len(chosen)


def _upstream_in(run_id, statuses):
    """True where some upstream run of `run_id` has one of `statuses`; tested run by run (see
    `_run_by_run`), so its cost is one probe of the run's links, however many links there are."""
    upstream = runs.alias("upstream")
    return _run_by_run(
        select(upstream_links.c.run_id)
        .select_from(upstream_links.join(upstream, upstream.c.id == upstream_links.c.upstream_run_id))
        .where(upstream_links.c.run_id == run_id, upstream.c.status.in_(_written(statuses)))
    )


def _written(statuses: Iterable[RunStatus]) -> list[ColumnElement]:
    """`statuses` written into the SQL. A list of values is bound as one expanding parameter, which
    SQLAlchemy renders anew at every execution: 0.2 ms of Python per claim (cProfile of
    bench/queue_claims.py), and PostgreSQL could not match the partial index `ix_runs_open` to a
    bound list."""
    return [literal_column(f"'{status.value}'") for status in statuses]


def _run_by_run(correlated: Select) -> ColumnElement[bool]:
    """EXISTS over a subquery correlated with `runs`, kept a per-row test of the candidate run.

    PostgreSQL turns a plain EXISTS (or IN) into a semi- or anti-join, and with the claim's
    `ORDER BY id LIMIT 1` it chose merge joins that read every membership and every link of lower
    id before the first candidate: with 10,000 runs half done, one claim took 30-80 ms (EXPLAIN
    ANALYZE). An OFFSET in the subquery is PostgreSQL's documented fence against that flattening
    (it is never simplified away), so the subquery is probed once per run the claim looks at:
    under 0.5 ms. SQLite evaluates a correlated EXISTS per row anyway.
    """
    return exists(correlated.offset(_ZERO))


def fail_blocked(engine: Engine, run_ids: Sequence[int]) -> int:
    """Mark as failed the pending or interrupted runs among `run_ids` whose upstream run failed or
    diverged: they can never run. The message names that upstream run (the first by name when
    several broke); runs are updated per message, so a sweep behind one upstream is one UPDATE.
    `--retry-failed` retries them with their upstream."""
    count = 0
    upstream = runs.alias("upstream")
    with writing(engine) as conn:
        for chunk in _chunks(run_ids):
            found = conn.execute(
                select(upstream_links.c.run_id, upstream_links.c.name, upstream.c.key, upstream.c.status)
                .select_from(upstream_links.join(upstream, upstream.c.id == upstream_links.c.upstream_run_id)
                             .join(runs, runs.c.id == upstream_links.c.run_id))
                .where(upstream_links.c.run_id.in_(chunk), runs.c.status.in_(CLAIMABLE),
                       upstream.c.status.in_([RunStatus.failed, RunStatus.diverged]))
                .order_by(upstream_links.c.run_id, upstream_links.c.name)
            ).all()
            first: dict[int, str] = {}
            for run_id, name, key, status in found:
                first.setdefault(run_id, f"upstream run {name} ({key[:12]}) {RunStatus(status).value}, so this run "
                                         "cannot run: `ntklab run SPEC --retry-failed` retries both")
            by_message: dict[str, list[int]] = {}
            for run_id, message in first.items():
                by_message.setdefault(message, []).append(run_id)
            for message, ids in by_message.items():
                count += conn.execute(
                    update(runs).where(runs.c.id.in_(ids), runs.c.status.in_(CLAIMABLE))
                    .values(status=RunStatus.failed, error_type="UpstreamFailed", error_message=message,
                            finished_at=utcnow())
                ).rowcount
    return count


def waiting_on_others(engine: Engine, run_ids: Sequence[int]) -> int:
    """How many claimable runs among `run_ids` wait for upstream runs that are still to finish."""
    count = 0
    unfinished = [RunStatus.pending, RunStatus.running, RunStatus.interrupted]
    with reading(engine) as conn:
        for chunk in _chunks(run_ids):
            count += conn.execute(
                select(func.count()).select_from(runs)
                .where(runs.c.id.in_(chunk), runs.c.status.in_(CLAIMABLE), _upstream_in(runs.c.id, unfinished))
            ).scalar_one()
    return count


def upstream_run(conn: Connection, run_id: int, name: str) -> tuple[int, str] | None:
    """(id, key) of the upstream run `name` of `run_id`."""
    row = conn.execute(
        select(runs.c.id, runs.c.key)
        .select_from(upstream_links.join(runs, runs.c.id == upstream_links.c.upstream_run_id))
        .where(upstream_links.c.run_id == run_id, upstream_links.c.name == name)
    ).first()
    return (row.id, row.key) if row else None


def claim(held: HeldConnection, candidate_ids: Sequence[int], worker: Worker, lease: timedelta) -> ClaimedRun | None:
    """Atomically take the first claimable run among `candidate_ids` (in order), or None."""
    return claim_where(held, runs.c.id.in_(candidate_ids), worker, lease)


def in_experiments(names: Sequence[str] | None) -> ColumnElement[bool]:
    """The runs that belong to one of the experiments `names` (every run when None), for queries
    over many runs: the database may start from the memberships."""
    if names is None:
        return true()
    return runs.c.id.in_(_members().where(experiments.c.name.in_(names)))


def claimable_in_experiments(names: Sequence[str] | None) -> ColumnElement[bool]:
    """The same runs as `in_experiments`, tested run by run: the scope of a claim, which walks the
    open runs in id order and stops at the first member it can take. The same names give the same
    object, so the claim statement built for it is reused (`_claim_statement`)."""
    return _claimable_in(None if names is None else tuple(names))


@functools.lru_cache(maxsize=64)
def _claimable_in(names: tuple[str, ...] | None) -> ColumnElement[bool]:
    """One named parameter per name (a claim's statement holds one scope), so that the statement
    needs no rendering at execution (see `_written`); anonymous parameters, whose values
    SQLAlchemy extracts from the statement at every execution, cost 0.15 ms of Python per claim."""
    if names is None:
        return true()
    named = [bindparam(f"experiment_{i}", name) for i, name in enumerate(names)]
    return _run_by_run(_members().where(experiments.c.name.in_(named), memberships.c.run_id == runs.c.id))


def _members() -> Select:
    return select(memberships.c.run_id).join(experiments, experiments.c.id == memberships.c.experiment_id)


def run_ids_with(conn: Connection, scope: ColumnElement[bool], among: Sequence[RunStatus] = OPEN) -> list[int]:
    """The ids, in order, of the runs in `scope` whose status is in `among` (default: not finished)."""
    return list(conn.execute(select(runs.c.id).where(scope, runs.c.status.in_(among)).order_by(runs.c.id)).scalars())


def claim_where(held: HeldConnection, scope: ColumnElement[bool], worker: Worker, lease: timedelta) -> ClaimedRun | None:
    """Atomically take the claimable run of lowest id among the runs `scope` selects, or None.

    Claimable: pending, interrupted, or running with an expired lease, and no upstream run left
    unfinished. The claim is one UPDATE whose target is the first claimable run, locked on
    PostgreSQL with FOR UPDATE SKIP LOCKED (concurrent claimers skip the rows the others are
    taking instead of queueing on them), and it returns what the worker needs; the attempt's row
    is written in the same statement on PostgreSQL (one round trip, no BEGIN or COMMIT), in the
    same BEGIN IMMEDIATE transaction on SQLite.
    """
    now = utcnow()
    worker_values = {"w_id": worker.id, "w_host": worker.host, "w_pid": worker.pid}
    with held.statement() as conn:
        claimed = conn.execute(_claim_statement(scope, conn.dialect.name),
                               {"t_now": now, "t_lease": now + lease, **worker_values}).first()
        if claimed is not None and conn.dialect.name != "postgresql":
            conn.execute(insert_for(conn, attempts).on_conflict_do_nothing(), {
                "run_id": claimed.id, "attempt": claimed.attempts, "resumed_from_step": claimed.checkpoint_step,
                "worker_id": worker.id, "host": worker.host, "pid": worker.pid, "started_at": now,
                "status": RunStatus.running})
    if claimed is None:
        return None
    return ClaimedRun(claimed.id, claimed.key, claimed.group_name, claimed.task, claimed.config,
                      claimed.attempts, claimed.checkpoint_step)


@functools.lru_cache(maxsize=64)
def _claim_statement(scope: ColumnElement[bool], dialect: str):
    """The claim of `scope`, built once, its values bound at execution: building it took longer
    than running it (about 1 ms of Python per claim, cProfile of bench/queue_claims.py).

    The candidates come from the partial index of open runs (`ix_runs_open`, id order), whose
    predicate the status list written into the SQL matches (`_written`): bound parameters would not
    prove it in PostgreSQL's generic plan, and the claim would scan every finished run again.
    """
    candidate = (
        select(runs.c.id)
        .where(runs.c.status.in_(_written(OPEN)),
               or_(runs.c.status != RunStatus.running, runs.c.lease_expires_at < bindparam("t_now")),
               scope, ~_upstream_in(runs.c.id, [s for s in RunStatus if s != RunStatus.done]))
        .order_by(runs.c.id).limit(_ONE).with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    take = update(runs).where(runs.c.id == candidate).values(
        status=RunStatus.running, attempts=runs.c.attempts + 1, worker_id=bindparam("w_id"),
        host=bindparam("w_host"), pid=bindparam("w_pid"), started_at=bindparam("t_now"),
        heartbeat_at=bindparam("t_now"), lease_expires_at=bindparam("t_lease"), finished_at=None,
    ).returning(runs.c.id, runs.c.key, runs.c.group_name, runs.c.task, runs.c.config, runs.c.attempts,
                runs.c.checkpoint_step)
    if dialect != "postgresql":
        return take
    claimed = take.cte("claimed")
    recorded = postgresql.insert(attempts).from_select(
        ["run_id", "attempt", "resumed_from_step", "worker_id", "host", "pid", "started_at", "status"],
        select(claimed.c.id, claimed.c.attempts, claimed.c.checkpoint_step,
               bindparam("w_id", type_=attempts.c.worker_id.type), bindparam("w_host", type_=attempts.c.host.type),
               bindparam("w_pid", type_=attempts.c.pid.type), bindparam("t_now", type_=attempts.c.started_at.type),
               literal(RunStatus.running, type_=attempts.c.status.type)),
    ).on_conflict_do_nothing().cte("attempt")
    return select(claimed).add_cte(recorded)


# The run as long as `held_worker` holds it; SET from the parameters of each execution. Its status
# is compared as an expression, so that PostgreSQL finds the row by its primary key: compared as
# a column, the indexes on status looked cheaper whenever the statistics called running runs rare,
# and the UPDATE walked every dead entry the claims had left in them (a finish slowed from 1.0 to
# 2.5 ms over 4,000 runs of bench/queue_claims.py).
_HELD = update(runs).where(runs.c.id == bindparam("held_run"), runs.c.worker_id == bindparam("held_worker"),
                           type_coerce(runs.c.status, String()) + "" == RunStatus.running.value)


def heartbeat(held: HeldConnection, run_id: int, worker: Worker, lease: timedelta,
              progress: tuple[int, int] | None) -> bool:
    """Extend the lease; False when this worker no longer holds the run."""
    now = utcnow()
    values: dict[str, Any] = {"heartbeat_at": now, "lease_expires_at": now + lease}
    if progress is not None:
        values["progress_step"], values["progress_total"] = progress
    with held.statement() as conn:
        result = conn.execute(_HELD, {"held_run": run_id, "held_worker": worker.id, **values})
    return result.rowcount == 1


def finish(conn: Connection, run_id: int, worker: Worker, status: RunStatus, *,
           error_type: str | None = None, error_message: str | None = None, traceback: str | None = None,
           progress: tuple[int, int] | None = None, provenance: dict[str, Any] | None = None) -> bool:
    """Record how the attempt ended (and the run's provenance, when given); False when this worker
    had lost the run meanwhile. On PostgreSQL the run and its attempt are updated by one statement,
    so `conn` may be an autocommit connection (`HeldConnection`): a finish is then one round trip
    instead of five (BEGIN, two UPDATEs, COMMIT; bench/queue_claims.py)."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status, "finished_at": now if status != RunStatus.interrupted else None,
        "lease_expires_at": None, "error_type": error_type, "error_message": error_message, "traceback": traceback,
    }
    if progress is not None:
        values["progress_step"], values["progress_total"] = progress
    if provenance is not None:
        values["provenance"] = provenance
    held = {"held_run": run_id, "held_worker": worker.id}
    if conn.dialect.name == "postgresql":
        ended = {f"v_{name}": value for name, value in values.items()}
        statement = _finish_statement(tuple(values))
        return conn.execute(statement, {**held, **ended, "t_ended": now}).first() is not None
    if conn.execute(_HELD, {**held, **values}).rowcount != 1:
        return False
    _end_attempt(conn, run_id, status, now)
    return True


_LATEST_ATTEMPT = update(attempts).where(
    attempts.c.run_id == bindparam("of_run"),
    attempts.c.attempt == select(func.max(attempts.c.attempt)).where(attempts.c.run_id == bindparam("of_run"))
    .scalar_subquery(),
)


def _end_attempt(conn: Connection, run_id: int, status: RunStatus, now: datetime) -> None:
    conn.execute(_LATEST_ATTEMPT, {"of_run": run_id, "status": status, "ended_at": now})


@functools.lru_cache(maxsize=16)
def _finish_statement(columns: tuple[str, ...]) -> Select:
    """PostgreSQL's finish of the run `held_run`, setting `columns` from the parameters `v_<column>`:
    the run's UPDATE and its latest attempt's, one statement; it returns the run's id when this
    worker still held it."""
    ended = _HELD.values({name: bindparam(f"v_{name}") for name in columns}).returning(runs.c.id).cte("ended")
    latest = select(func.max(attempts.c.attempt)).where(attempts.c.run_id == bindparam("held_run")).scalar_subquery()
    closed = (update(attempts)
              .where(attempts.c.run_id.in_(select(ended.c.id)), attempts.c.attempt == latest)
              .values(status=bindparam("v_status"), ended_at=bindparam("t_ended"))
              .cte("closed"))
    return select(ended.c.id).add_cte(closed)


def set_checkpoint_step(conn: Connection, run_id: int, worker: Worker, step: int) -> None:
    conn.execute(update(runs).where(runs.c.id == run_id, runs.c.worker_id == worker.id).values(checkpoint_step=step))
