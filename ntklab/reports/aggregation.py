"""Aggregation for figures: the points of a figure from its selected runs, one value per run
(from metric_summaries or params, aggregated here) or every evaluation step (aggregated in the
database), with what each point is missing.

- Per point, the runs aggregated (`n`) and the missing ones: runs pending, running,
  interrupted, failed or diverged, done runs without a value (`no value`) and, with
  `relative_to`, done runs whose baseline run is not done (`no baseline`).
- `mean_std` (mean and sample standard deviation, ddof = 1; none for a single run),
  `mean_minmax` (mean, min and max) or `none` (one row per run).
- With a baseline, each value becomes value - baseline, |value - baseline| or value / baseline,
  the baseline's value taken the same way (same step for every-step series).
- Values never travel one query per run: run ids go in chunks (reports/records.py).
"""

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Integer, case, column, func, literal, select, values

from ntklab.db.tables import metrics, summaries
from ntklab.reports.axes import Axis, FigureAxes, FigureError
from ntklab.reports.records import CHUNK, chunks, param_values, summary_rows
from ntklab.reports.selection import FigureRun
from ntklab.spec.models import Figure

PER_CURVE_QUERIES = 400  # up to this many curves, one query per curve (see series_points)
MISSING_ORDER = ("pending", "running", "interrupted", "failed", "diverged", "no value", "no baseline")


@dataclass(slots=True)
class Point:
    """One row of the figure's table: a point of one y metric, aggregated over its runs."""

    metric: str
    facet: Any
    series: Any
    x: Any
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    n: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    run: str | None = None  # aggregate: none
    step: int | None = None  # aggregate: none with a single step per run
    best: dict[str, Any] | None = None  # best_over: the winning value of each searched param

    @property
    def missing_text(self) -> str:
        return missing_text(self.missing)


def missing_text(missing: dict[str, int]) -> str:
    if not missing:
        return ""
    order = {k: i for i, k in enumerate(MISSING_ORDER)}
    return ", ".join(f"{n} {k}" for k, n in sorted(missing.items(), key=lambda kv: order.get(kv[0], 99)) if n)


class Aggregation:
    """The points of one figure (called `name` in messages) on its resolved axes."""

    def __init__(self, conn: Connection, figure: Figure, axes: FigureAxes, name: str,
                 unscored: dict[tuple, Counter] | None = None):
        self.conn = conn
        self.figure = figure
        self.axes = axes
        self.name = name
        self.relative = figure.relative_to is not None
        self.unscored = unscored or {}
        self.usable_ids: set[int] = set()

    def points(self, found: list[FigureRun], usable: list[FigureRun], selection: dict[str, str]) -> list[Point]:
        """The points of the figure in the table's order: by facet, series, metric, x (and run)."""
        self.usable_ids = {u.run_id for u in usable}
        if self.figure.step == "all":
            return self.series_points(found, usable)  # in order already
        points = self.single_points(found, usable, selection)
        order = {a.text: i for i, a in enumerate(self.axes.y)}
        points.sort(key=lambda p: (order_key(p.facet), order_key(p.series), order[p.metric],
                                   order_key(p.x), p.run or ""))
        return points

    def absent(self, units: list[FigureRun]) -> dict[tuple, Counter]:
        """Per point: runs that are not aggregated because they are not done (or lack a baseline),
        and best_over's replicates without a value of `by`."""
        found: dict[tuple, Counter] = defaultdict(Counter)
        for key, counts in self.unscored.items():
            found[key].update(counts)
        for unit in units:
            if unit.status != "done":
                found[self.axes.point_key(unit.coords)][unit.status] += 1
            elif unit.run_id not in self.usable_ids:
                found[self.axes.point_key(unit.coords)]["no baseline"] += 1
        return found

    def single_points(self, units: list[FigureRun], usable: list[FigureRun], selection: dict[str, str]) -> list[Point]:
        """One value per run: from metric_summaries (or params), aggregated per point in Python."""
        metric_names = sorted({a.name for a in self.axes.y if a.kind == "metric"}
                              | ({self.axes.x.name} if self.axes.x.kind == "metric" else set()))
        ids = sorted({u.run_id for u in usable} | {u.baseline for u in usable if u.baseline is not None})
        stats = summary_rows(self.conn, ids, metric_names) if metric_names else {}
        param_keys = sorted({a.name for a in self.axes.y if a.kind == "param"})
        numbers = param_values(self.conn, ids, param_keys) if param_keys else {}
        absent = self.absent(units)
        points: list[Point] = []
        for axis in self.axes.y:
            chosen = selection[axis.text]
            x_lookups: list[tuple[int, int]] = []
            samples: dict[tuple, list[tuple[FigureRun, float, int | None]]] = defaultdict(list)
            no_value: dict[tuple, int] = Counter()
            for unit in usable:
                value, step = self.value_of(axis, chosen, unit.run_id, stats, numbers)
                if value is not None and unit.baseline is not None:
                    base, _ = self.value_of(axis, chosen, unit.baseline, stats, numbers)
                    value = _relate(value, base, self.figure.relation)
                if value is None:
                    no_value[self.axes.point_key(unit.coords)] += 1
                    continue
                samples[self.axes.point_key(unit.coords)].append((unit, value, step))
                if self.axes.x.kind == "metric" and step is not None:
                    x_lookups.append((unit.run_id, step))
            x_values = self.x_values(stats, x_lookups) if self.axes.x.kind == "metric" else {}
            keys = set(samples) | set(absent) | set(no_value)
            for key in keys:
                facet, series, x = key
                gone = Counter(absent.get(key, {}))
                if no_value.get(key):
                    gone["no value"] += no_value[key]
                found = samples.get(key, [])
                if self.figure.aggregate == "none":
                    for unit, value, step in found:
                        px = x_values.get((unit.run_id, step)) if self.axes.x.kind == "metric" else x
                        points.append(Point(axis.text, facet, series, px, mean=value, n=1, run=unit.key, step=step))
                    if gone:
                        points.append(Point(axis.text, facet, series, x, n=0, missing=dict(gone)))
                    continue
                point = Point(axis.text, facet, series, x, n=len(found), missing=dict(gone))
                if found:
                    _aggregate(point, [v for _, v, _ in found])
                    if self.axes.x.kind == "metric":
                        xs = [x_values.get((u.run_id, s)) for u, _, s in found]
                        xs = [v for v in xs if v is not None]
                        point.x = math.fsum(xs) / len(xs) if xs else None
                points.append(point)
        return points

    def value_of(self, axis: Axis, chosen: str, run_id: int, stats, numbers) -> tuple[float | None, int | None]:
        if axis.kind == "param":
            value = numbers.get((run_id, axis.name))
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise FigureError(self.name, f"y: the param {axis.text!r} is not a number ({value!r})")
            return (float(value) if value is not None else None), None
        row = stats.get((run_id, axis.name))
        if row is None:
            return None, None
        value, step = {"last": (row.last, row.last_step), "min": (row.min, row.min_step),
                       "max": (row.max, row.max_step)}[chosen]
        return value, step

    def x_values(self, stats, lookups: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
        """x (a metric) of each run at the step its y value was taken: from the summary when that
        is the last step, else from the series (only the needed steps)."""
        found: dict[tuple[int, int], float] = {}
        needed: dict[int, set[int]] = defaultdict(set)
        for run_id, step in lookups:
            row = stats.get((run_id, self.axes.x.name))
            if row is not None and row.last_step == step:
                if row.last is not None:
                    found[(run_id, step)] = row.last
            else:
                needed[run_id].add(step)
        ids = sorted(needed)
        steps = sorted(set().union(*needed.values())) if needed else []
        for chunk in chunks(ids):
            for start in range(0, len(steps), CHUNK):
                query = (select(metrics.c.run_id, metrics.c.step, metrics.c.value)
                         .where(metrics.c.run_id.in_(chunk), metrics.c.name == self.axes.x.name,
                                metrics.c.step.in_(steps[start:start + CHUNK])))
                for run_id, step, value in self.conn.execute(query):
                    if step in needed[run_id] and value is not None:
                        found[(run_id, step)] = value
        return found

    def series_points(self, units: list[FigureRun], usable: list[FigureRun]) -> list[Point]:
        """Every evaluation step: aggregated per (curve, metric, step) in the database.

        A curve is a (facet, series) pair, or a run with aggregate: none. In the plain case (x is
        the step, no baseline) and for at most PER_CURVE_QUERIES curves, each curve is one query
        over its runs (`run_id IN (...)`, GROUP BY step), which SQLite serves fastest; otherwise the
        runs and their curves go to the database as a VALUES table in chunks of CHUNK runs, sorted
        by curve, and partial sums of a curve split across chunks are added up here.

        Rows come in the table's order: by facet, series (and run), metric, then step."""
        absent = self.absent(units)
        aggregate = self.figure.aggregate
        curves: dict[tuple, int] = {}
        members: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        for unit in usable:
            key = self.axes.point_key(unit.coords)[:2] + ((unit.key,) if aggregate == "none" else ())
            curve = curves.setdefault(key, len(curves))
            members[curve].append((unit.run_id, unit.baseline))
        names = [a.name for a in self.axes.y]
        shift = self.shifts(sorted(u.run_id for u in usable), names)
        # (curve, name) -> {step: [count, sum, sum of squares, min, max, sum of x]}
        found: dict[tuple[int, str], dict[int, list]] = defaultdict(dict)
        plain = self.figure.relative_to is None and self.axes.x.kind == "step"
        if plain and len(curves) <= PER_CURVE_QUERIES:
            for curve, runs_of_curve in members.items():
                ids = sorted(r for r, _ in runs_of_curve)
                for start in range(0, len(ids), CHUNK):
                    self.merge(found, curve, self.conn.execute(self.curve_query(ids[start:start + CHUNK], names, shift)))
        else:
            chunked = sorted((curve, r, b) for curve, runs_of_curve in members.items() for r, b in runs_of_curve)
            for start in range(0, len(chunked), CHUNK):
                rows = self.conn.execute(self.series_query(chunked[start:start + CHUNK], names, shift))
                for row in rows:
                    self.merge(found, row[0], (row[1:],))
        text_of = {a.name: a.text for a in self.axes.y}
        empty: dict = {}
        points: list[Point] = []
        keys = set(curves) | {k[:2] for k in absent if k[:2] not in {c[:2] for c in curves}}
        for key in sorted(keys, key=lambda k: (order_key(k[0]), order_key(k[1]), k[2:])):
            curve = curves.get(key)
            done = len(members[curve]) if curve is not None else 0
            gone = absent.get(key[:2] + (None,), empty)
            for name in names:
                series = found.get((curve, name)) if curve is not None else None
                if not series:
                    missing = Counter(gone)
                    if done:
                        missing["no value"] += done
                    points.append(Point(text_of[name], key[0], key[1], None, missing=dict(missing),
                                        run=key[2] if aggregate == "none" else None))
                    continue
                for step in sorted(series):
                    count, total, squares, low, high, x_total = series[step]
                    count = int(count)
                    std = None
                    if squares is not None and count > 1:
                        std = math.sqrt(max(squares - total * total / count, 0.0) / (count - 1))
                    missing = gone
                    if count < done:
                        missing = Counter(gone)
                        missing["no value"] += done - count
                    x = step if self.axes.x.kind == "step" else (x_total / count if x_total is not None else None)
                    points.append(Point(text_of[name], key[0], key[1], x, shift[name] + total / count, std, low, high,
                                        count, dict(missing), key[2] if aggregate == "none" else None))
        return points

    @staticmethod
    def merge(found: dict, curve: int, rows) -> None:
        """Add partial aggregates (name, step, count, sum, squares, min, max, x sum) of one curve."""
        for name, step, count, total, squares, low, high, x_total in rows:
            if not count:
                continue
            steps = found[(curve, name)]
            acc = steps.get(step)
            if acc is None:
                steps[step] = [count, total, squares, low, high, x_total]
                continue
            acc[0] += count
            acc[1] += total
            acc[2] = acc[2] + squares if squares is not None else None
            acc[3] = min(acc[3], low) if low is not None else None
            acc[4] = max(acc[4], high) if high is not None else None
            acc[5] = acc[5] + x_total if x_total is not None else None

    def aggregates(self, value, names: list[str], shift: dict[str, float], name_column) -> list:
        """count, sum and (as the aggregate needs) sum of squares, min and max of shifted values.

        Values are shifted by a typical value of their metric before summing squares, so the
        variance keeps its precision when values are large and their spread small."""
        aggregate = self.figure.aggregate
        centred = value - _case_shift(name_column, shift)
        nothing = literal(None)
        return [func.count(value), func.sum(centred),
                func.sum(centred * centred) if aggregate == "mean_std" else nothing,
                func.min(value) if aggregate == "mean_minmax" else nothing,
                func.max(value) if aggregate == "mean_minmax" else nothing]

    def curve_query(self, ids: Sequence[int], names: list[str], shift: dict[str, float]):
        """The runs of one curve, aggregated per (metric, step)."""
        m = metrics
        name = m.c.name if len(names) > 1 else literal(names[0])
        condition = m.c.name == names[0] if len(names) == 1 else m.c.name.in_(names)
        group = [m.c.step] if len(names) == 1 else [m.c.name, m.c.step]
        return (select(name, m.c.step, *self.aggregates(m.c.value, names, shift, m.c.name), literal(None))
                .where(m.c.run_id.in_(list(ids)), condition).group_by(*group))

    def shifts(self, ids: list[int], names: list[str]) -> dict[str, float]:
        """A typical value per metric (a last value), subtracted before summing squares so the
        variance does not lose precision when values are large and their spread small."""
        shift = {n: 0.0 for n in names}
        if self.relative or not ids:
            return shift
        query = (select(summaries.c.name, func.min(summaries.c.last))
                 .where(summaries.c.run_id.in_(ids[:CHUNK]), summaries.c.name.in_(names))
                 .group_by(summaries.c.name))
        for name, value in self.conn.execute(query):
            if value is not None and math.isfinite(value):
                shift[name] = float(value)
        return shift

    def series_query(self, chunk: Sequence[tuple[int, int, int | None]], names: list[str], shift: dict[str, float]):
        """One GROUP BY over a chunk of (curve, run, baseline): per (curve, metric, step) the
        aggregates of the values (relative to the baseline run's at the same step) and the sum of
        x (a metric at the same step). The chunk travels as a VALUES table of bound parameters."""
        relative = self.relative
        cols = [column("run_id", Integer), column("curve", Integer)] + ([column("base", Integer)] if relative else [])
        rows = [(r, c, b) if relative else (r, c) for c, r, b in chunk]
        g = values(*cols, name="g").data(rows).cte("g")
        m = metrics.alias("m")
        joined = g.join(m, m.c.run_id == g.c.run_id)
        value = m.c.value
        if relative:
            b = metrics.alias("b")
            joined = joined.join(b, (b.c.run_id == g.c.base) & (b.c.name == m.c.name) & (b.c.step == m.c.step))
            value = {"difference": m.c.value - b.c.value, "abs_difference": func.abs(m.c.value - b.c.value),
                     "ratio": m.c.value / func.nullif(b.c.value, 0.0)}[self.figure.relation]
        conditions = [m.c.name == names[0] if len(names) == 1 else m.c.name.in_(names)]
        columns = [g.c.curve, m.c.name if len(names) > 1 else literal(names[0]), m.c.step,
                   *self.aggregates(value, names, shift, m.c.name)]
        if self.axes.x.kind == "metric":
            mx = metrics.alias("mx")
            joined = joined.join(mx, (mx.c.run_id == g.c.run_id) & (mx.c.name == self.axes.x.name) & (mx.c.step == m.c.step))
            conditions += [value.is_not(None), mx.c.value.is_not(None)]
            columns.append(func.sum(mx.c.value))
        else:
            columns.append(literal(None))
        group = [g.c.curve, m.c.step] if len(names) == 1 else [g.c.curve, m.c.name, m.c.step]
        return select(*columns).select_from(joined).where(*conditions).group_by(*group)


def _case_shift(name_column, shift: dict[str, float]):
    distinct = {v for v in shift.values()}
    if len(distinct) == 1:
        return literal(next(iter(distinct)))
    return case(*((name_column == n, literal(v)) for n, v in shift.items()), else_=literal(0.0))


def _aggregate(point: Point, found: list[float]) -> None:
    """Mean, sample standard deviation (ddof = 1; none for one run), min and max (two passes)."""
    n = len(found)
    mean = math.fsum(found) / n
    point.mean = mean
    point.std = math.sqrt(math.fsum((v - mean) ** 2 for v in found) / (n - 1)) if n > 1 else None
    point.low = min(found)
    point.high = max(found)


def _relate(value: float | None, base: float | None, relation: str) -> float | None:
    if value is None or base is None:
        return None
    if relation == "difference":
        return value - base
    if relation == "abs_difference":
        return abs(value - base)
    return value / base if base != 0 else None


def order_key(value: Any) -> tuple:
    """Numbers before strings, None last; numbers by value."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, bool):
        return (1, 0, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (2, 0, str(value))
