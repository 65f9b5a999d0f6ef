"""What `ntklab status`, `show` and `logs` print: run counts, the progress of running runs, the
headline metrics of an experiment's groups, and the full record of one run."""

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from ntklab.db.liveness import utcnow
from ntklab.db.tables import RunStatus, artifacts, attempts, experiments, memberships, runs, summaries
from ntklab.errors import UsageError
from ntklab.headline import best_direction, headline_names


CHUNK = 500


@dataclass(frozen=True)
class GroupStatus:
    experiment: str
    group: str
    counts: dict[str, int]
    running: list[dict[str, Any]]


def _joined():
    return memberships.join(experiments).join(runs, runs.c.id == memberships.c.run_id)


def experiment_status(conn: Connection, experiment: str | None) -> list[GroupStatus]:
    """Counts by status per experiment and group, with the progress of running runs."""
    query = (
        select(experiments.c.name, memberships.c.group_name, runs.c.status, func.count())
        .select_from(_joined())
        .group_by(experiments.c.name, memberships.c.group_name, runs.c.status)
        .order_by(experiments.c.name, memberships.c.group_name)
    )
    if experiment is not None:
        ensure_experiment(conn, experiment)
        query = query.where(experiments.c.name == experiment)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for name, group, status, count in conn.execute(query):
        counts[(name, group)][RunStatus(status).value] = count
    running: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in running_runs(conn, experiment):
        running[(entry["experiment"], entry["group"])].append(entry)
    return [GroupStatus(e, g, c, running.get((e, g), [])) for (e, g), c in counts.items()]


def running_runs(conn: Connection, experiment: str | None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The running runs: step/total, the latest value of their headline metric and an ETA."""
    now = now or utcnow()
    latest_attempt = (select(attempts.c.run_id, func.max(attempts.c.attempt).label("attempt"))
                      .group_by(attempts.c.run_id).subquery())
    live = (
        select(experiments.c.name, memberships.c.group_name, runs.c.id, runs.c.key, runs.c.task,
               runs.c.progress_step, runs.c.progress_total, runs.c.worker_id, runs.c.started_at,
               runs.c.heartbeat_at, attempts.c.resumed_from_step)
        .select_from(_joined()
                     .outerjoin(latest_attempt, latest_attempt.c.run_id == runs.c.id)
                     .outerjoin(attempts, (attempts.c.run_id == runs.c.id)
                                & (attempts.c.attempt == latest_attempt.c.attempt)))
        .where(runs.c.status == RunStatus.running)
        .order_by(experiments.c.name, memberships.c.group_name, runs.c.id)
    )
    if experiment is not None:
        live = live.where(experiments.c.name == experiment)
    rows = conn.execute(live).all()
    if not rows:
        return []
    last = latest_values(conn, {r.id for r in rows})
    figure_metrics = experiment_figure_metrics(conn, {r.name for r in rows})
    found = []
    for row in rows:
        values = last.get(row.id, {})
        names = headline_names(row.task, values, figure_metrics.get(row.name, ()))
        found.append({
            "id": row.id, "experiment": row.name, "group": row.group_name, "key": row.key, "step": row.progress_step,
            "total": row.progress_total, "worker": row.worker_id, "heartbeat": row.heartbeat_at,
            "metric": (names[0], values[names[0]]) if names else None,
            "eta_seconds": eta_seconds(row.progress_step, row.progress_total, row.resumed_from_step or 0,
                                       row.started_at, row.heartbeat_at, now),
        })
    return found


def eta_seconds(step: int | None, total: int | None, start_step: int, started_at: datetime | None,
                measured_at: datetime | None, now: datetime) -> float | None:
    """Seconds left at the rate of this attempt so far (steps since it started or resumed), or None
    while there is no rate yet. Progress is measured at heartbeats, so the time since the last one counts."""
    if not step or not total or started_at is None or measured_at is None or step <= start_step:
        return None
    elapsed = (measured_at - started_at).total_seconds()
    if elapsed <= 0:
        return None
    left = (total - step) * elapsed / (step - start_step) - (now - measured_at).total_seconds()
    return max(left, 0.0)


def latest_values(conn: Connection, run_ids: Iterable[int]) -> dict[int, dict[str, float | None]]:
    """The last value of every metric series of the given runs, by run id and name."""
    found: dict[int, dict[str, float | None]] = defaultdict(dict)
    ids = sorted(run_ids)
    for start in range(0, len(ids), CHUNK):
        for run_id, name, value in conn.execute(
                select(summaries.c.run_id, summaries.c.name, summaries.c.last)
                .where(summaries.c.run_id.in_(ids[start:start + CHUNK]))):
            found[run_id][name] = value
    return found


def experiment_figure_metrics(conn: Connection, names: Iterable[str]) -> dict[str, list[str]]:
    """The y metrics of each experiment's figures, in the order the spec declares them."""
    from ntklab.reports.figures import stored_figures

    found: dict[str, list[str]] = defaultdict(list)
    for name in names:
        for ref in stored_figures(conn, name).figures:
            found[name] += ref.figure.y_names
    return found


@dataclass(frozen=True)
class HeadlineSummary:
    """One headline metric of one group over its done runs: the best run and the mean."""

    group: str
    metric: str
    n: int
    best: float | None
    best_run: str | None
    mean: float | None
    std: float | None


def group_headlines(conn: Connection, experiment: str, groups: Sequence[str] | None,
                    figure_metrics: Sequence[str] = ()) -> list[HeadlineSummary]:
    """Per group of `experiment` (those in `groups`, default all): each headline metric's best
    and mean (with the sample standard deviation) over the group's done runs, from their last values."""
    query = (select(memberships.c.group_name, runs.c.id, runs.c.key, runs.c.task)
             .select_from(_joined())
             .where(experiments.c.name == experiment, runs.c.status == RunStatus.done)
             .order_by(memberships.c.group_name, runs.c.id))
    by_group: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(query):
        if groups is None or row.group_name in groups:
            by_group[row.group_name].append(row)
    last = latest_values(conn, {r.id for members in by_group.values() for r in members})
    found = []
    for group, members in by_group.items():
        recorded = {name for r in members for name in last.get(r.id, {})}
        for metric in headline_names(members[0].task, recorded, figure_metrics):
            pairs = [(last[r.id][metric], r.key) for r in members if last.get(r.id, {}).get(metric) is not None]
            values = [v for v, _ in pairs]
            direction = best_direction(metric)
            best = (max if direction == "max" else min)(pairs) if pairs and direction else None
            found.append(HeadlineSummary(
                group, metric, len(values), best[0] if best else None, best[1] if best else None,
                statistics.fmean(values) if values else None,
                statistics.stdev(values) if len(values) > 1 else None))
    return found


def ensure_experiment(conn: Connection, name: str) -> None:
    if conn.execute(select(experiments.c.id).where(experiments.c.name == name)).first() is None:
        known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        raise UsageError(f"no experiment named {name!r}; known: {', '.join(known) or 'none yet'}")


def resolve_run(conn: Connection, prefix: str) -> int:
    """The run whose key starts with `prefix`; an unknown or ambiguous prefix is a UsageError."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise UsageError(f"{prefix!r} is not a run key (hexadecimal, as printed by `ntklab query`)")
    found = conn.execute(select(runs.c.id, runs.c.key).where(runs.c.key.startswith(prefix)).limit(6)).all()
    if not found:
        raise UsageError(f"no run key starts with {prefix!r}")
    if len(found) > 1:
        listed = ", ".join(r.key[:16] for r in found[:5])
        raise UsageError(f"{prefix!r} matches several runs ({listed}{', ...' if len(found) > 5 else ''}); give more digits")
    return found[0].id


def run_status(conn: Connection, run_id: int) -> str:
    return RunStatus(conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar_one()).value


def run_record(conn: Connection, run_id: int) -> dict[str, Any]:
    """Everything recorded about one run."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).one()._mapping
    groups = conn.execute(
        select(experiments.c.name, memberships.c.group_name).select_from(memberships.join(experiments))
        .where(memberships.c.run_id == run_id)
    ).all()
    found_summaries = conn.execute(
        select(summaries).where(summaries.c.run_id == run_id).order_by(summaries.c.name)
    ).all()
    found_artifacts = conn.execute(
        select(artifacts).where(artifacts.c.run_id == run_id).order_by(artifacts.c.name)
    ).all()
    found_attempts = conn.execute(
        select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.attempt)
    ).all()
    record = {k: (v.value if isinstance(v, RunStatus) else v) for k, v in row.items()}
    record["memberships"] = [{"experiment": e, "group": g} for e, g in groups]
    record["metrics"] = [dict(s._mapping) for s in found_summaries]
    record["artifacts"] = [dict(a._mapping) for a in found_artifacts]
    record["attempt_history"] = [
        {k: (v.value if isinstance(v, RunStatus) else v) for k, v in a._mapping.items()} for a in found_attempts
    ]
    return record
