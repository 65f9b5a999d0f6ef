"""The best run over a hyper-parameter, per point and seed (a figure's `best_over` and `by`).

The runs of a point that share every param except the `best_over` ones are one replicate (in
practice: one seed). Per replicate the run with the best value of `by` (taken as the figure takes
its y values: last, min, max or best) is chosen; ties go to the run created first. The point then
aggregates the chosen runs, one per replicate, so seeds are averaged after the choice, as a paper
that reports "the best over c" for each seed does. A replicate none of whose runs has a value of
`by` (or only NaN) contributes one `no value` to its point.
"""

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ntklab.reports.aggregation import order_key
from ntklab.reports.axes import FigureAxes, FigureError, value_selection
from ntklab.reports.records import params_signature, run_params, summary_rows
from ntklab.reports.selection import FigureRun
from ntklab.spec.models import Figure, best_direction


@dataclass
class BestRuns:
    """The chosen runs, the winning values per point and best_over param as the figure names it
    (one value, or the sorted
    distinct values when the replicates of a point chose differently), and per point the
    replicates without a value of `by`."""

    chosen: list[FigureRun]
    winners: dict[tuple, dict[str, Any]] = field(default_factory=dict)
    unscored: dict[tuple, Counter] = field(default_factory=dict)


def choose_best(conn: Connection, figure: Figure, axes: FigureAxes, usable: list[FigureRun], name: str) -> BestRuns:
    """Among the done, usable runs of the figure (called `name` in messages), the best run of
    each replicate of each point by the figure's `by`."""
    by = axes.by
    direction = figure.best or best_direction(by.name)
    if direction is None:
        raise FigureError(name, f"by: is a larger or smaller {by.name!r} better? add best: max or best: min")
    selection = value_selection(figure, by, name)
    ids = sorted({r.run_id for r in usable})
    stats = summary_rows(conn, ids, [by.name])
    flat = run_params(conn, ids)
    searched = set(axes.best_over)
    replicates: dict[tuple, dict[tuple, list[FigureRun]]] = defaultdict(lambda: defaultdict(list))
    for run in usable:
        replicates[axes.point_key(run.coords)][params_signature(flat[run.run_id], searched)].append(run)

    def score(run: FigureRun) -> float | None:
        row = stats.get((run.run_id, by.name))
        return getattr(row, selection) if row is not None else None

    result = BestRuns(chosen=[])
    for point, by_replicate in replicates.items():
        picked: list[FigureRun] = []
        for members in by_replicate.values():
            scored = [(value, run) for run in members if (value := score(run)) is not None and math.isfinite(value)]
            if not scored:
                result.unscored.setdefault(point, Counter())["no value"] += 1
                continue
            if direction == "max":
                picked.append(max(scored, key=lambda v: (v[0], -v[1].run_id))[1])
            else:
                picked.append(min(scored, key=lambda v: (v[0], v[1].run_id))[1])
        result.chosen += picked
        if picked:
            result.winners[point] = {text: _winning(flat[r.run_id].get(key) for r in picked)
                                     for text, key in zip(figure.best_over, axes.best_over)}
    result.chosen.sort(key=lambda r: r.run_id)
    return result


def _winning(values) -> Any:
    distinct = sorted({json.dumps(v, sort_keys=True): v for v in values}.values(), key=order_key)
    return distinct[0] if len(distinct) == 1 else distinct
