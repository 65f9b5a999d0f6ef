"""`ntklab compare`: the config keys on which runs differ, and their metrics side by side.

Every run is compared with the first one named: a config key is listed when some run lacks it or
has another value; a metric is listed when any run recorded it, with each run's last value (and
its min and max) and the difference of each later run's last value from the first run's.
"""

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ntklab.db.tables import RunStatus
from ntklab.db.tables import experiments, memberships, runs
from ntklab.reports.records import run_params, summary_rows

MISSING = None


@dataclass(frozen=True)
class ComparedRun:
    key: str
    task: str
    status: str
    memberships: list[str]  # "experiment/group"


@dataclass(frozen=True)
class MetricComparison:
    name: str
    last: list[float | None]
    minimum: list[float | None]
    maximum: list[float | None]
    last_step: list[int | None]

    @property
    def differences(self) -> list[float | None]:
        """Each later run's last value minus the first run's."""
        first = self.last[0]
        return [None if first is None or v is None else v - first for v in self.last[1:]]


@dataclass(frozen=True)
class Comparison:
    runs: list[ComparedRun]
    config: dict[str, list[Any]]  # differing dotted key -> the value of each run (None where absent)
    same_keys: int
    metrics: list[MetricComparison]

    def as_json(self) -> dict[str, Any]:
        return {
            "runs": [{"key": r.key, "task": r.task, "status": r.status, "memberships": r.memberships}
                     for r in self.runs],
            "config": self.config,
            "same_config_keys": self.same_keys,
            "metrics": [{"name": m.name, "last": m.last, "last_step": m.last_step, "min": m.minimum,
                         "max": m.maximum, "difference": m.differences} for m in self.metrics],
        }


def compare_runs(conn: Connection, run_ids: list[int]) -> Comparison:
    rows = {r.id: r for r in conn.execute(select(runs.c.id, runs.c.key, runs.c.task, runs.c.status)
                                          .where(runs.c.id.in_(run_ids)))}
    member_of: dict[int, list[str]] = {i: [] for i in run_ids}
    for run_id, name, group in conn.execute(
            select(memberships.c.run_id, experiments.c.name, memberships.c.group_name)
            .select_from(memberships.join(experiments)).where(memberships.c.run_id.in_(run_ids))
            .order_by(experiments.c.name, memberships.c.group_name)):
        member_of[run_id].append(f"{name}/{group}")
    params = run_params(conn, run_ids)
    keys = sorted({k for i in run_ids for k in params.get(i, {})})
    config = {}
    for key in keys:
        values = [params.get(i, {}).get(key, MISSING) for i in run_ids]
        present = [key in params.get(i, {}) for i in run_ids]
        if not all(present) or len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            config[key] = values
    found = summary_rows(conn, run_ids)
    names = sorted({name for _, name in found})
    metrics = []
    for name in names:
        cells = [found.get((i, name)) for i in run_ids]
        metrics.append(MetricComparison(
            name, [c.last if c else None for c in cells], [c.min if c else None for c in cells],
            [c.max if c else None for c in cells], [c.last_step if c else None for c in cells]))
    compared = [ComparedRun(rows[i].key, rows[i].task, RunStatus(rows[i].status).value, member_of[i]) for i in run_ids]
    return Comparison(compared, config, len(keys) - len(config), metrics)
