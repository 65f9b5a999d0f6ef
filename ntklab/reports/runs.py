"""The run listing of `ntklab query`: one row per run, ordered by run id, with chosen columns.

Default columns: key, experiment (only when no experiment is chosen), group, status, the params
whose values differ across the listed runs (at most MAX_PARAMS, by key), and the last value of at
most MAX_METRICS metrics that every listed run with metrics has (PREFERRED_METRICS first). Pending
runs have no metrics yet, so they do not veto a metric. Headers are written in the filter
language, so any of them can be passed back as an explicit column.

A run can belong to several groups (and experiments). The listing still has one row per run: its
`group` cell joins, with ", ", the run's groups within the chosen experiment (all experiments
when none is chosen) among the requested groups, if any; `experiment` joins its experiments.

Values come in batches, never one query per run: one query selects the runs, then for each chunk
of run ids (reports/records.py) one query each fetches memberships, the params of the shown keys and the
summaries of the shown metrics (and, to choose the default columns, grouped counts of params and
metric names).
"""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select

from ntklab.db.tables import RunStatus
from ntklab.db.tables import experiments, memberships, runs, summaries
from ntklab.errors import UsageError
from ntklab.reports.filters import (
    MEMBERSHIP_ATTRIBUTES,
    RUN_COLUMNS,
    Field,
    MetricField,
    ParamField,
    RunField,
    Vocabulary,
    compile_filter,
    field_label,
    parse_field,
    parse_status,
)
from ntklab.reports.overview import ensure_experiment
from ntklab.reports.records import chunks, differing_params, param_values, summary_rows

MAX_PARAMS = 8
MAX_METRICS = 4
PREFERRED_METRICS = ("test_accuracy", "test_loss", "train_loss", "train_accuracy")



@dataclass(frozen=True)
class RunTable:
    """Column headers and rows of plain JSON-serializable values (timestamps as ISO strings)."""

    columns: list[str]
    rows: list[list[Any]]


def list_runs(
    conn: Connection,
    *,
    experiment: str | None = None,
    groups: Sequence[str] = (),
    statuses: Sequence[str] = (),
    where: str | None = None,
    columns: Sequence[str] | None = None,
    limit: int | None = None,
) -> RunTable:
    """The runs matching every given criterion; `columns` are names in the filter language."""
    if limit is not None and limit < 0:
        raise UsageError(f"the limit must be zero or more, not {limit}")
    experiment_id = _experiment_id(conn, experiment) if experiment is not None else None
    if groups:
        _check_groups(conn, experiment_id, groups)
    vocabulary = Vocabulary.load(conn)
    chosen = [parse_field(c, vocabulary) for c in columns] if columns is not None else None
    query = _selection(conn, experiment_id, groups, statuses, where)
    selected = conn.execute(query.limit(limit) if limit is not None else query).all()
    ids = [r.id for r in selected]
    if chosen is None:
        fields = _default_fields(conn, ids, with_experiment=experiment_id is None)
        labels = [field_label(f, vocabulary) for f in fields]
    else:
        fields, labels = chosen, [c.strip() for c in columns]
    cells = _Cells(conn, ids, fields, experiment_id, groups)
    return RunTable(labels, [[cells.value(f, run) for f in fields] for run in selected])


def _experiment_id(conn: Connection, name: str) -> int:
    ensure_experiment(conn, name)
    return conn.execute(select(experiments.c.id).where(experiments.c.name == name)).scalar_one()


def _check_groups(conn: Connection, experiment_id: int | None, groups: Sequence[str]) -> None:
    query = select(memberships.c.group_name).distinct()
    if experiment_id is not None:
        query = query.where(memberships.c.experiment_id == experiment_id)
    known = set(conn.execute(query).scalars())
    unknown = [g for g in groups if g not in known]
    if unknown:
        where = " in this experiment" if experiment_id is not None else ""
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(f"no group {', '.join(map(repr, unknown))}{where}; groups: {listed}")


def _selection(conn: Connection, experiment_id: int | None, groups: Sequence[str], statuses: Sequence[str],
               where: str | None):
    query = select(runs.c.id, *(column.label(name) for name, column in RUN_COLUMNS.items())).order_by(runs.c.id)
    if experiment_id is not None or groups:
        member = select(memberships.c.run_id).where(memberships.c.run_id == runs.c.id)
        if experiment_id is not None:
            member = member.where(memberships.c.experiment_id == experiment_id)
        if groups:
            member = member.where(memberships.c.group_name.in_(list(groups)))
        query = query.where(member.correlate(runs).exists())
    if statuses:
        query = query.where(runs.c.status.in_([parse_status(s) for s in statuses]))
    if where is not None and where.strip():
        query = query.where(compile_filter(where, conn, experiment_id=experiment_id))
    return query


def _default_fields(conn: Connection, ids: Sequence[int], with_experiment: bool) -> list[Field]:
    fields: list[Field] = [RunField("key")]
    if with_experiment:
        fields.append(RunField("experiment"))
    fields += [RunField("group"), RunField("status")]
    fields += [ParamField(k) for k in differing_params(conn, ids)[:MAX_PARAMS]]
    fields += [MetricField(n) for n in _common_metrics(conn, ids)[:MAX_METRICS]]
    return fields


def _common_metrics(conn: Connection, ids: Sequence[int]) -> list[str]:
    """Metrics that every listed run with any metric has, the preferred ones first."""
    counts: Counter[str] = Counter()
    with_metrics = 0
    for chunk in chunks(ids):
        in_chunk = summaries.c.run_id.in_(chunk)
        by_name = select(summaries.c.name, func.count()).where(in_chunk).group_by(summaries.c.name)
        counts.update({name: count for name, count in conn.execute(by_name)})
        with_metrics += conn.execute(select(func.count(summaries.c.run_id.distinct())).where(in_chunk)).scalar_one()
    return sorted((n for n, c in counts.items() if c == with_metrics), key=_metric_order)


def _metric_order(name: str) -> tuple:
    preferred = PREFERRED_METRICS.index(name) if name in PREFERRED_METRICS else len(PREFERRED_METRICS)
    return preferred, "/" in name, name


class _Cells:
    """The values of the shown fields for the selected runs, fetched in batches up front."""

    def __init__(self, conn: Connection, ids: Sequence[int], fields: Sequence[Field], experiment_id: int | None,
                 groups: Sequence[str]):
        names = {f.name for f in fields if isinstance(f, RunField)}
        keys = sorted({f.key for f in fields if isinstance(f, ParamField)})
        metrics = sorted({f.name for f in fields if isinstance(f, MetricField)})
        self.memberships = _memberships(conn, ids, experiment_id, groups) if names & set(MEMBERSHIP_ATTRIBUTES) else {}
        self.params = param_values(conn, ids, keys) if keys else {}
        self.summaries = summary_rows(conn, ids, metrics) if metrics else {}

    def value(self, field: Field, run: Row) -> Any:
        if isinstance(field, ParamField):
            return self.params.get((run.id, field.key))
        if isinstance(field, MetricField):
            summary = self.summaries.get((run.id, field.name))
            return getattr(summary, field.stat) if summary is not None else None
        if field.name in MEMBERSHIP_ATTRIBUTES:
            return ", ".join(sorted(self.memberships.get(run.id, {}).get(field.name, ())))
        return _plain(getattr(run, field.name))


def _memberships(conn: Connection, ids: Sequence[int], experiment_id: int | None,
                 groups: Sequence[str]) -> dict[int, dict[str, set[str]]]:
    found: dict[int, dict[str, set[str]]] = defaultdict(lambda: {"group": set(), "experiment": set()})
    for chunk in chunks(ids):
        query = (select(memberships.c.run_id, memberships.c.group_name, experiments.c.name)
                 .join(experiments, experiments.c.id == memberships.c.experiment_id)
                 .where(memberships.c.run_id.in_(chunk)))
        if experiment_id is not None:
            query = query.where(memberships.c.experiment_id == experiment_id)
        if groups:
            query = query.where(memberships.c.group_name.in_(list(groups)))
        for run_id, group, experiment in conn.execute(query):
            found[run_id]["group"].add(group)
            found[run_id]["experiment"].add(experiment)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, RunStatus):
        return value.value
    return value
