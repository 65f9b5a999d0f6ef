"""What `ntklab status`, `show` and `logs` print: run counts and the full record of one run."""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from ntklab.db import tables
from ntklab.db.models import Artifact, Attempt, MetricSummary, RunStatus
from ntklab.db.tables import experiments, memberships, runs
from ntklab.errors import UsageError


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
    live = (
        select(experiments.c.name, memberships.c.group_name, runs.c.key, runs.c.progress_step, runs.c.progress_total,
               runs.c.worker_id, runs.c.heartbeat_at)
        .select_from(_joined())
        .where(runs.c.status == RunStatus.running)
    )
    if experiment is not None:
        live = live.where(experiments.c.name == experiment)
    for row in conn.execute(live):
        running[(row.name, row.group_name)].append(
            {"key": row.key, "step": row.progress_step, "total": row.progress_total, "worker": row.worker_id,
             "heartbeat": row.heartbeat_at}
        )
    return [GroupStatus(e, g, c, running.get((e, g), [])) for (e, g), c in counts.items()]


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


def run_record(conn: Connection, run_id: int) -> dict[str, Any]:
    """Everything recorded about one run."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).one()._mapping
    groups = conn.execute(
        select(experiments.c.name, memberships.c.group_name).select_from(memberships.join(experiments))
        .where(memberships.c.run_id == run_id)
    ).all()
    summaries = conn.execute(
        select(tables.summaries).where(MetricSummary.run_id == run_id).order_by(MetricSummary.name)
    ).all()
    artifacts = conn.execute(
        select(tables.artifacts).where(Artifact.run_id == run_id).order_by(Artifact.name)
    ).all()
    attempts = conn.execute(
        select(tables.attempts).where(Attempt.run_id == run_id).order_by(Attempt.attempt)
    ).all()
    record = {k: (v.value if isinstance(v, RunStatus) else v) for k, v in row.items()}
    record["memberships"] = [{"experiment": e, "group": g} for e, g in groups]
    record["metrics"] = [dict(s._mapping) for s in summaries]
    record["artifacts"] = [dict(a._mapping) for a in artifacts]
    record["attempt_history"] = [
        {k: (v.value if isinstance(v, RunStatus) else v) for k, v in a._mapping.items()} for a in attempts
    ]
    return record
