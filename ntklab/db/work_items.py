"""Work items of a run: pieces any worker claims under a lease of its own, so that many workers
fill one run together (the blocks of a kernel store).

The claim has the queue's race-safety (ntklab/db/queue.py): on SQLite `BEGIN IMMEDIATE`
serializes claimers; on PostgreSQL the candidate row is locked `FOR UPDATE SKIP LOCKED`, so
concurrent claimers skip each other's rows instead of waiting. An item whose lease expired (its
worker died or hung) is claimable again; only the worker holding an item can finish it, so an
item is recorded done once. Items are claimed in the order they were registered. Only items of
runs that are running are claimed: an interrupted or cancelled run's items wait for it.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update

from ntklab.db.connection import reading, writing
from ntklab.db.dialect import insert_for
from ntklab.db.queue import CHUNK, Worker, utcnow
from ntklab.db.tables import RunStatus, runs, work_items


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    run_id: int
    name: str
    attempt: int


def register(engine: Engine, run_id: int, names: Sequence[str], done: Collection[str] = ()) -> None:
    """Record the run's items in order (those in `done` as done already: found complete on disk);
    items recorded before keep their state, so registering again on resume changes nothing."""
    with writing(engine) as conn:
        for start in range(0, len(names), CHUNK):
            conn.execute(
                insert_for(conn, work_items).on_conflict_do_nothing(index_elements=[work_items.c.run_id,
                                                                                    work_items.c.name]),
                [{"run_id": run_id, "name": name, "attempts": 0,
                  "status": RunStatus.done if name in done else RunStatus.pending}
                 for name in names[start : start + CHUNK]],
            )


def _claimable(run_scope: ColumnElement[bool], now) -> ColumnElement[bool]:
    running = select(runs.c.id).where(run_scope, runs.c.status == RunStatus.running)
    return and_(work_items.c.run_id.in_(running),
                or_(work_items.c.status == RunStatus.pending,
                    and_(work_items.c.status == RunStatus.running, work_items.c.lease_expires_at < now)))


def claimable_run(engine: Engine, run_scope: ColumnElement[bool]) -> int | None:
    """The running run of `run_scope` that registered first among those with a claimable item.
    Only reads: a helper builds what the items need before it claims one."""
    with reading(engine) as conn:
        return conn.execute(select(work_items.c.run_id).where(_claimable(run_scope, utcnow()))
                            .order_by(work_items.c.id).limit(1)).scalar()


def unsplit_runs(engine: Engine, run_scope: ColumnElement[bool], tasks: Collection[str]) -> list[tuple[int, str, dict]]:
    """(id, task, config) of the running runs of `run_scope` and `tasks` with no items yet, whose
    worker may be about to split them."""
    registered = select(work_items.c.run_id).where(work_items.c.run_id == runs.c.id).exists()
    with reading(engine) as conn:
        return [tuple(r) for r in conn.execute(
            select(runs.c.id, runs.c.task, runs.c.config).where(run_scope, runs.c.status == RunStatus.running,
                                                                 runs.c.task.in_(tasks), ~registered)
            .order_by(runs.c.id))]


def is_live(engine: Engine, run_id: int) -> bool:
    """Whether the run is running under a lease that has not expired."""
    with reading(engine) as conn:
        return conn.execute(select(runs.c.id).where(runs.c.id == run_id, runs.c.status == RunStatus.running,
                                                    runs.c.lease_expires_at >= utcnow())).first() is not None


def claim(engine: Engine, run_scope: ColumnElement[bool], worker: Worker, lease: timedelta,
          names: Sequence[str] | None = None) -> ClaimedItem | None:
    """Atomically take the first claimable item of a running run that `run_scope` (a condition on
    `runs`) selects, among `names` when given; None when there is none."""
    chosen = select(work_items.c.id).where(_claimable(run_scope, utcnow()))
    if names is not None:
        chosen = chosen.where(work_items.c.name.in_(names))
    with writing(engine) as conn:
        row = conn.execute(chosen.order_by(work_items.c.id).limit(1).with_for_update(skip_locked=True)).first()
        if row is None:
            return None
        now = utcnow()
        item = conn.execute(
            update(work_items).where(work_items.c.id == row.id).values(
                status=RunStatus.running, attempts=work_items.c.attempts + 1, worker_id=worker.id,
                host=worker.host, pid=worker.pid, started_at=now, lease_expires_at=now + lease, finished_at=None,
            ).returning(work_items.c.id, work_items.c.run_id, work_items.c.name, work_items.c.attempts)
        ).one()
    return ClaimedItem(item.id, item.run_id, item.name, item.attempts)


def heartbeat(engine: Engine, worker: Worker, lease: timedelta) -> int:
    """Extend the lease of every item this worker holds; returns how many it holds."""
    with writing(engine) as conn:
        return conn.execute(
            update(work_items).where(work_items.c.worker_id == worker.id, work_items.c.status == RunStatus.running)
            .values(lease_expires_at=utcnow() + lease)
        ).rowcount


def finish(engine: Engine, item: ClaimedItem, worker: Worker, seconds: float) -> bool:
    """Mark a held item done; False when this worker no longer held it (another reclaimed it)."""
    with writing(engine) as conn:
        return conn.execute(
            update(work_items).where(work_items.c.id == item.id, work_items.c.worker_id == worker.id,
                                     work_items.c.status == RunStatus.running)
            .values(status=RunStatus.done, finished_at=utcnow(), lease_expires_at=None, seconds=seconds)
        ).rowcount == 1


def release(engine: Engine, worker: Worker) -> int:
    """Give back every item this worker holds (it stops): they are pending again at once."""
    with writing(engine) as conn:
        return conn.execute(
            update(work_items).where(work_items.c.worker_id == worker.id, work_items.c.status == RunStatus.running)
            .values(status=RunStatus.pending, lease_expires_at=None)
        ).rowcount


def counts(engine: Engine, run_id: int) -> dict[RunStatus, int]:
    """How many items of the run are in each state."""
    with reading(engine) as conn:
        return dict(conn.execute(select(work_items.c.status, func.count()).where(work_items.c.run_id == run_id)
                                 .group_by(work_items.c.status)).all())


def done_names(engine: Engine, run_id: int, names: Sequence[str]) -> set[str]:
    """Which of `names` are done."""
    with reading(engine) as conn:
        return set(conn.execute(select(work_items.c.name).where(
            work_items.c.run_id == run_id, work_items.c.name.in_(names), work_items.c.status == RunStatus.done
        )).scalars())


def computed_by(engine: Engine, run_id: int) -> int:
    """How many workers computed items of the run."""
    with reading(engine) as conn:
        return conn.execute(select(func.count(func.distinct(work_items.c.worker_id)))
                            .where(work_items.c.run_id == run_id, work_items.c.attempts > 0)).scalar_one()
