"""`ntklab plan`: what executing a spec would do, per group, without writing anything."""

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ntklab.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ntklab.spec.load import ExperimentPlan

COLUMNS = ("new", "pending", "running", "interrupted", "done", "failed", "diverged")


@dataclass(frozen=True)
class GroupPlan:
    group: str
    task: str
    counts: Counter

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def existing_statuses(engine: "Engine | None", plan: "ExperimentPlan") -> dict[str, str]:
    """Status of every planned key already in the database; an empty or absent one has none.

    The database layer is imported only when there is a database: `ntklab plan` of a spec before
    anything is recorded does without SQLAlchemy (~0.4 s of imports)."""
    if engine is None:
        return {}
    from ntklab.db.connection import reading
    from ntklab.db.queue import statuses
    from ntklab.db.schema import current_revision, head_revision

    with reading(engine) as conn:
        revision = current_revision(conn)
        if revision is None:
            return {}
        if revision != head_revision():
            raise DatabaseError(f"the database is at schema revision {revision}: run `ntklab db upgrade`")
        found = statuses(conn, list(dict.fromkeys(r.key for r in plan.runs)))
    return {k: s.value for k, s in found.items()}


def plan_groups(engine: "Engine | None", plan: "ExperimentPlan") -> list[GroupPlan]:
    known = existing_statuses(engine, plan)
    groups: dict[str, GroupPlan] = {}
    for run in plan.runs:
        entry = groups.get(run.group)
        if entry is None:
            entry = groups[run.group] = GroupPlan(run.group, run.task, Counter())
        entry.counts[known.get(run.key, "new")] += 1
    return list(groups.values())
