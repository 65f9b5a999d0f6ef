"""Run selection for figures: the experiment's runs that match a figure's `where`, each with its
coordinates (facet, series, x) as plotted.

When `group` is an axis a run that belongs to two groups is selected once per group; otherwise
once, its group cell joining its groups.
"""

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ntklab.db.tables import RunStatus
from ntklab.db.tables import runs
from ntklab.reports.axes import Axis, FigureAxes, FigureError
from ntklab.reports.filters import RUN_COLUMNS, FilterError, compile_filter
from ntklab.reports.records import chunks, member_rows, param_values


@dataclass
class FigureRun:
    """A run of a figure (in one of its groups, when `group` is an axis)."""

    run_id: int
    key: str
    group: str
    status: str
    error: str | None
    coords: tuple = ()  # (facet, series, x) as plotted; x is None when it is a metric or the step
    baseline: int | None = None


@dataclass(frozen=True)
class MissingRun:
    """A run of a figure that it does not show yet, and why."""

    key: str
    group: str
    status: str
    reason: str  # the status, or "no value" / "no baseline"
    error: str | None


def select_runs(conn: Connection, experiment_id: int, where: str | None, axes: FigureAxes | None,
                figure: str) -> list[FigureRun]:
    """The experiment's runs matching `where`, with their coordinates on `axes` (none without:
    an images figure places no run on an axis)."""
    condition = None
    if where and where.strip():
        try:
            condition = compile_filter(where, conn, experiment_id=experiment_id)
        except FilterError as err:
            raise FigureError(figure, f"where: {err}") from None
    rows = member_rows(conn, experiment_id, runs.c.key, runs.c.status, runs.c.error_type, runs.c.error_message,
                       where=condition)
    per_group = axes is not None and axes.per_group()
    found: list[FigureRun] = []
    groups: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        status = RunStatus(row.status).value
        error = f"{row.error_type}: {row.error_message}" if row.error_type else None
        if per_group or row.id not in groups:
            found.append(FigureRun(row.id, row.key, row.group_name, status, error))
        groups[row.id].append(row.group_name)
    if not per_group:
        for run in found:
            run.group = ", ".join(groups[run.run_id])
    if axes is not None:
        _place(conn, found, axes)
    return found


def _place(conn: Connection, found: list[FigureRun], axes: FigureAxes) -> None:
    """Set each run's coordinates from its params, group or run attributes."""
    placing = axes.coordinates
    ids = sorted({r.run_id for r in found})
    keys = sorted({a.name for a in placing if a is not None and a.kind == "param"})
    values = param_values(conn, ids, keys) if keys else {}
    columns = sorted({a.name for a in placing if a is not None and a.kind == "run"})
    attributes: dict[int, dict[str, Any]] = {}
    if columns:
        for chunk in chunks(ids):
            query = select(runs.c.id, *(RUN_COLUMNS[c].label(c) for c in columns)).where(runs.c.id.in_(chunk))
            for row in conn.execute(query):
                attributes[row.id] = {c: _plain(getattr(row, c)) for c in columns}

    def coordinate(axis: Axis | None, run: FigureRun) -> Any:
        if axis is None or axis.kind in ("step", "metric"):
            return None
        if axis.kind == "group":
            return run.group
        if axis.kind == "param":
            return values.get((run.run_id, axis.name))
        return attributes.get(run.run_id, {}).get(axis.name)

    for run in found:
        run.coords = tuple(coordinate(a, run) for a in placing)


def _plain(value: Any) -> Any:
    if isinstance(value, RunStatus):
        return value.value
    return value
