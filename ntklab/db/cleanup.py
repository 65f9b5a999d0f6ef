"""Removing runs from the database: `ntklab rm` (what to remove, then removing it) and `ntklab reset`.

A run removed from an experiment whose run is also a member of another experiment only leaves
the first one (memoization: the other experiment still needs it). A run that another remaining
run needs as an upstream run stays, and so does a running run. Files are not touched here: the
artifacts and stores of removed runs become unreferenced, and `ntklab gc` frees them.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, delete, select, update

from ntklab.db.models import RunStatus
from ntklab.db.queue import reset
from ntklab.db.tables import experiments, memberships, runs, upstream_links
from ntklab.errors import UsageError

CHUNK = 500


@dataclass(frozen=True)
class RunRemoval:
    id: int
    key: str
    status: str
    memberships: list[tuple[str, str]]  # (experiment, group) of every membership
    action: str  # "delete", "leave" (only its memberships of the experiment go), "keep: <why>"


@dataclass
class Removal:
    runs: list[RunRemoval] = field(default_factory=list)
    experiment: tuple[int, str] | None = None  # the experiment whose row goes too
    experiment_id: int | None = None  # with --experiment: whose memberships go

    def count(self, action: str) -> int:
        return sum(r.action.startswith(action) for r in self.runs)


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[start:start + CHUNK]) for start in range(0, len(ids), CHUNK)]


def _memberships(conn: Connection, run_ids: Sequence[int]) -> dict[int, list[tuple[int, str, str]]]:
    found: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    for chunk in _chunks(run_ids):
        for run_id, experiment_id, name, group in conn.execute(
                select(memberships.c.run_id, experiments.c.id, experiments.c.name, memberships.c.group_name)
                .select_from(memberships.join(experiments)).where(memberships.c.run_id.in_(chunk))
                .order_by(experiments.c.name, memberships.c.group_name)):
            found[run_id].append((experiment_id, name, group))
    return found


def plan_removal(conn: Connection, run_ids: Sequence[int] | None = None, experiment: str | None = None,
                 statuses: Sequence[str] = ()) -> Removal:
    """What removing the runs (by id) or the experiment's runs (with `statuses`: only those) does."""
    removal = Removal()
    query = select(runs.c.id, runs.c.key, runs.c.status).order_by(runs.c.id)
    if experiment is not None:
        experiment_id = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).scalar_one()
        removal.experiment_id = experiment_id
        query = query.where(runs.c.id.in_(select(memberships.c.run_id)
                                          .where(memberships.c.experiment_id == experiment_id)))
    if run_ids is not None:
        query = query.where(runs.c.id.in_(list(run_ids)))
    if statuses:
        query = query.where(runs.c.status.in_([RunStatus(s) for s in statuses]))
    chosen = conn.execute(query).all()
    member_of = _memberships(conn, [r.id for r in chosen])
    actions: dict[int, str] = {}
    for row in chosen:
        elsewhere = [m for m in member_of[row.id] if m[0] != removal.experiment_id]
        if row.status == RunStatus.running:
            actions[row.id] = "keep: running"
        elif removal.experiment_id is not None and elsewhere:
            actions[row.id] = "leave"
        else:
            actions[row.id] = "delete"
    _keep_needed_upstream(conn, actions)
    removal.runs = [RunRemoval(r.id, r.key, RunStatus(r.status).value,
                               [(name, group) for _, name, group in member_of[r.id]], actions[r.id]) for r in chosen]
    if experiment is not None and not statuses and not any(r.action.startswith("keep") for r in removal.runs):
        removal.experiment = (removal.experiment_id, experiment)
    return removal


def _keep_needed_upstream(conn: Connection, actions: dict[int, str]) -> None:
    """A run to delete that a remaining run needs as its upstream run stays (until a fixed point:
    keeping a run keeps what it needs in turn)."""
    while True:
        doomed = [i for i, a in actions.items() if a == "delete"]
        if not doomed:
            return
        needed = [row for chunk in _chunks(doomed) for row in conn.execute(
            select(upstream_links.c.upstream_run_id, upstream_links.c.run_id)
            .where(upstream_links.c.upstream_run_id.in_(chunk)))]
        by_upstream: dict[int, set[int]] = defaultdict(set)
        for upstream, downstream in needed:
            if actions.get(downstream) != "delete":
                by_upstream[upstream].add(downstream)
        if not by_upstream:
            return
        for upstream, downstream in by_upstream.items():
            actions[upstream] = f"keep: needed by {len(downstream)} remaining runs"


def apply_removal(conn: Connection, removal: Removal) -> None:
    """Delete the runs marked `delete` (their metrics, params, artifact rows and memberships go with
    them), drop the experiment's memberships of runs marked `leave`, and the experiment's row if planned."""
    doomed = [r.id for r in removal.runs if r.action == "delete"]
    leaving = [r.id for r in removal.runs if r.action == "leave"]
    for chunk in _chunks(leaving):
        conn.execute(delete(memberships).where(memberships.c.experiment_id == removal.experiment_id,
                                               memberships.c.run_id.in_(chunk)))
    for chunk in _chunks(doomed):
        conn.execute(delete(runs).where(runs.c.id.in_(chunk)))
    if removal.experiment is not None:
        _repoint_creator(conn, removal.experiment[0])
        conn.execute(delete(experiments).where(experiments.c.id == removal.experiment[0]))


def _repoint_creator(conn: Connection, experiment_id: int) -> None:
    """Runs record the experiment that created them (and would be deleted with it): a run that stays
    for another experiment points at that one instead."""
    created = conn.execute(select(runs.c.id).where(runs.c.experiment_id == experiment_id)).scalars().all()
    for run_id in created:
        other = conn.execute(select(memberships.c.experiment_id)
                             .where(memberships.c.run_id == run_id, memberships.c.experiment_id != experiment_id)
                             .order_by(memberships.c.experiment_id).limit(1)).scalar()
        if other is None:
            raise RuntimeError(f"run {run_id} would be deleted with experiment {experiment_id}")
        conn.execute(update(runs).where(runs.c.id == run_id).values(experiment_id=other))


def reset_run(conn: Connection, run_id: int) -> str:
    """Put one run back to pending, forgetting its results (the attempt history stays); returns its
    key. A running run is a UsageError."""
    key = conn.execute(select(runs.c.key).where(runs.c.id == run_id)).scalar_one()
    if not reset(conn, [run_id], [s for s in RunStatus if s != RunStatus.running]):
        raise UsageError(f"run {key[:12]} is running: stop its worker first")
    return key
