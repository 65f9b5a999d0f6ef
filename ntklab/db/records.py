"""Writing a run's results: metric series with their summaries, artifact rows, and clearing them."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, delete, select

from ntklab.db.dialect import insert_for
from ntklab.db.tables import artifacts, metrics, summaries


@dataclass(frozen=True)
class MetricPoint:
    name: str
    step: int
    value: float | None
    wall_time: float


def finite_or_none(value: float) -> float | None:
    """NaN and infinities are stored as NULL: SQLite cannot store NaN, and both backends agree this way."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_metrics(conn: Connection, run_id: int, points: Sequence[MetricPoint]) -> None:
    """Upsert points on (run, name, step) and keep the per-series summaries exact.

    Appending steps folds the new points into the summaries; a batch that rewrites steps at or
    before a series' last step (a replay) rebuilds that series' summary from the table instead."""
    if not points:
        return
    stmt = insert_for(conn, metrics)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[metrics.c.run_id, metrics.c.name, metrics.c.step],
            set_={"value": stmt.excluded.value, "wall_time": stmt.excluded.wall_time},
        ),
        [{"run_id": run_id, "name": p.name, "step": p.step, "value": p.value, "wall_time": p.wall_time} for p in points],
    )
    grouped = _by_name(points)
    last_steps = dict(conn.execute(
        select(summaries.c.name, summaries.c.last_step)
        .where(summaries.c.run_id == run_id, summaries.c.name.in_(list(grouped)))
    ).all())
    rewritten = [n for n, series in grouped.items() if n in last_steps and min(p.step for p in series) <= last_steps[n]]
    appended = [_summarize(run_id, n, series) for n, series in grouped.items() if n not in rewritten]
    if appended:
        _fold_summaries(conn, appended)
    if rewritten:
        _rebuild_summaries(conn, run_id, rewritten)


def _by_name(points: Sequence[MetricPoint]) -> dict[str, list[MetricPoint]]:
    grouped: dict[str, list[MetricPoint]] = {}
    for p in points:
        grouped.setdefault(p.name, []).append(p)
    return grouped


def _summarize(run_id: int, name: str, series: list[MetricPoint]) -> dict[str, Any]:
    last = max(series, key=lambda p: p.step)
    finite = [p for p in series if p.value is not None]
    lowest = min(finite, key=lambda p: (p.value, p.step), default=None)
    highest = max(finite, key=lambda p: (p.value, -p.step), default=None)
    return {
        "run_id": run_id, "name": name, "last": last.value, "last_step": last.step,
        "min": lowest.value if lowest else None, "min_step": lowest.step if lowest else None,
        "max": highest.value if highest else None, "max_step": highest.step if highest else None,
    }


def _fold_summaries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    stmt = insert_for(conn, summaries)
    new, old = stmt.excluded, summaries.c
    newer = new.last_step >= old.last_step
    lower = or_null(old.min, new.min, lambda: new.min < old.min)
    higher = or_null(old.max, new.max, lambda: new.max > old.max)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[old.run_id, old.name],
            set_={
                "last": case((newer, new.last), else_=old.last),
                "last_step": case((newer, new.last_step), else_=old.last_step),
                "min": case((lower, new.min), else_=old.min),
                "min_step": case((lower, new.min_step), else_=old.min_step),
                "max": case((higher, new.max), else_=old.max),
                "max_step": case((higher, new.max_step), else_=old.max_step),
            },
        ),
        rows,
    )


def or_null(old_value, new_value, better):
    """True where the new extreme should replace the old one (a missing old value always yields)."""
    return (old_value.is_(None) & new_value.is_not(None)) | (new_value.is_not(None) & better())


def truncate_after(conn: Connection, run_id: int, step: int | None) -> None:
    """Drop metrics after `step` (all of them when None) and rebuild the run's summaries from what
    remains. Used when a run resumes from a checkpoint: the steps after it will be replayed."""
    condition = metrics.c.run_id == run_id
    if step is not None:
        condition = condition & (metrics.c.step > step)
    conn.execute(delete(metrics).where(condition))
    _rebuild_summaries(conn, run_id, None)


def _rebuild_summaries(conn: Connection, run_id: int, names: list[str] | None) -> None:
    """Recompute the summaries of `names` (all series when None) from the metrics table."""
    scope = summaries.c.run_id == run_id
    series_scope = metrics.c.run_id == run_id
    if names is not None:
        scope = scope & summaries.c.name.in_(names)
        series_scope = series_scope & metrics.c.name.in_(names)
    conn.execute(delete(summaries).where(scope))
    remaining = conn.execute(
        select(metrics.c.name, metrics.c.step, metrics.c.value, metrics.c.wall_time).where(series_scope)
    ).all()
    if remaining:
        points = [MetricPoint(r.name, r.step, r.value, r.wall_time) for r in remaining]
        conn.execute(insert_for(conn, summaries),
                     [_summarize(run_id, name, series) for name, series in _by_name(points).items()])


def record_artifact(conn: Connection, run_id: int, name: str, path: str, kind: str, size: int, sha256: str,
                    meta: Mapping[str, Any] | None, now) -> None:
    stmt = insert_for(conn, artifacts).values(run_id=run_id, name=name, path=path, kind=kind, bytes=size,
                                              sha256=sha256, created_at=now, **{"metadata": dict(meta or {})})
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[artifacts.c.run_id, artifacts.c.name],
        set_={"path": path, "kind": kind, "bytes": size, "sha256": sha256, "metadata": dict(meta or {}),
              "created_at": now},
    ))


def clear_results(conn: Connection, run_ids: Sequence[int]) -> None:
    """Forget metrics, summaries and artifact rows of runs that will start again from scratch.
    The attempt history is kept."""
    for table in (metrics, summaries, artifacts):
        conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
