"""Figures as queries: the data behind a figure declared in a spec, from the database alone.

A figure lives in its experiment's stored spec (experiments.spec_text); its `figures:` section is
parsed again with the same `Figure` model, so `ntklab query --paper NAME` needs no spec file.

Semantics (see also `ntklab.spec.models.Figure`):

- The figure's runs are the experiment's runs (experiment_runs) that match its `where`. When
  `group` is an axis, a run that is a member of two groups counts once in each.
- Every run has a coordinate (facet, series, x) from its params (or its group, or a run
  attribute). Runs with equal coordinates form one point; in practice they differ by seed.
  When x is a metric (a scatter of two metrics) or `step`, the point is (facet, series) and x is
  averaged too (x = step: one point per step).
- Only `done` runs are aggregated. Per point, the table says how many runs it aggregates (`n`)
  and what is missing: runs pending, running, interrupted, failed or diverged, done runs without
  a value for the metric (`no value`) and, with `relative_to`, done runs whose baseline run is not
  done (`no baseline`). A point no run has finished yet is still a row, with n = 0.
- Values: `last`, `min`, `max` and `best` come from metric_summaries (with their steps); `all`
  reads the metrics table, aggregated in the database (per chunk of runs, one GROUP BY query).
  `best` is `max` or `min` by the figure's `best`, else by the metric's name (accuracy-like: max;
  loss, error, distance-like: min); an unclear name is an error that asks for `best:`.
- Aggregation over a point's runs: `mean_std` (mean and sample standard deviation, ddof = 1;
  none for a single run), `mean_minmax` (mean, min and max) or `none` (one row per run).
- `relative_to`: each run's value becomes value - baseline (`difference`), |value - baseline|
  (`abs_difference`) or value / baseline (`ratio`), where the baseline run is the experiment's run
  with the given params and otherwise the same params, and its value is taken the same way
  (same step for `all`; its own last/min/max/best otherwise).
- Values never travel one query per run: run ids go in chunks of CHUNK.
"""

import difflib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Integer, case, column, func, literal, select, values

from ntklab.db.models import (
    RunStatus,
)
from ntklab.db.tables import experiments, memberships, metrics, params, runs, summaries
from ntklab.errors import SpecError, UsageError
from ntklab.reports.filters import (
    RUN_COLUMNS,
    FilterError,
    MetricField,
    ParamField,
    RunField,
    Vocabulary,
    compile_filter,
    resolve_name,
)
from ntklab.reports.runs import _differing_params, _param_value, _param_values
from ntklab.spec.models import Figure, best_direction
from ntklab.spec.yaml_source import parse_yaml

CHUNK = 500
PER_CURVE_QUERIES = 400  # up to this many curves, one query per curve (see series_points)
MISSING_ORDER = ("pending", "running", "interrupted", "failed", "diverged", "no value", "no baseline")
STEP = "step"
GROUP = "group"



# ---------------------------------------------------------------------------------------------
# Finding figures


@dataclass(frozen=True)
class FigureRef:
    experiment: str
    experiment_id: int
    name: str
    figure: Figure

    @property
    def qualified(self) -> str:
        return f"{self.experiment}:{self.name}"


@dataclass(frozen=True)
class StoredFigures:
    """The figures of the stored specs, and the problems of those that no longer validate."""

    figures: list[FigureRef]
    problems: dict[str, str]  # qualified name -> why it cannot be used


def parse_figures(spec_text: str, file: str = "<stored spec>") -> tuple[dict[str, Figure], dict[str, str]]:
    """The `figures:` section of a spec text, validated; the problems of invalid figures by name."""
    try:
        doc = parse_yaml(spec_text, file)
    except SpecError as err:
        return {}, {"*": str(err)}
    section = doc.value.get("figures") if isinstance(doc.value, dict) else None
    if not isinstance(section, dict):
        return {}, {}
    found: dict[str, Figure] = {}
    problems: dict[str, str] = {}
    for name, body in section.items():
        try:
            found[str(name)] = Figure.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            problems[str(name)] = f"{where + ': ' if where else ''}{first['msg']}"
    return found, problems


def stored_figures(conn: Connection, experiment: str | None = None) -> StoredFigures:
    query = select(experiments.c.id, experiments.c.name, experiments.c.spec_text).order_by(experiments.c.name)
    if experiment is not None:
        query = query.where(experiments.c.name == experiment)
    figures, problems = [], {}
    for experiment_id, name, text in conn.execute(query):
        found, bad = parse_figures(text or "", f"{name} (stored spec)")
        figures += [FigureRef(name, experiment_id, n, f) for n, f in found.items()]
        problems |= {f"{name}:{n}": p for n, p in bad.items()}
    return StoredFigures(figures, problems)


def resolve_figure(conn: Connection, name: str) -> FigureRef:
    """The figure called `name` (`fig2`, or `taylor_cnn:fig2`); unknown or ambiguous names are
    UsageErrors that list the candidates."""
    name = name.strip()
    experiment, sep, figure_name = name.rpartition(":")
    if sep and not experiment:
        raise UsageError(f"{name!r}: write EXPERIMENT:FIGURE or just FIGURE")
    if sep:
        known_experiments = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        if experiment not in known_experiments:
            raise UsageError(f"no experiment named {experiment!r}; known: {', '.join(known_experiments) or 'none yet'}")
    stored = stored_figures(conn, experiment if sep else None)
    matches = [f for f in stored.figures if f.name == figure_name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(f.qualified for f in matches)
        raise UsageError(f"figure {figure_name!r} is declared by several experiments: {listed}; "
                         "name one as EXPERIMENT:FIGURE")
    broken = [q for q in stored.problems if q.rpartition(":")[2] == figure_name]
    if broken:
        raise UsageError(f"figure {broken[0]} in the stored spec is not valid: {stored.problems[broken[0]]}")
    candidates = [f.qualified for f in stored.figures]
    if not candidates:
        scope = f"experiment {experiment!r} declares" if sep else "the database holds"
        raise UsageError(f"no figure named {name!r}: {scope} no figures (declare them under `figures:` in a spec)")
    names = sorted({f.name for f in stored.figures} | set(candidates))
    guesses = difflib.get_close_matches(figure_name if sep else name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(guesses)}?" if guesses else ""
    scope = f"experiment {experiment!r} has" if sep else "the database has"
    raise UsageError(f"no figure named {name!r}{hint} ({scope}: {', '.join(candidates)})")


# ---------------------------------------------------------------------------------------------
# The data


@dataclass(frozen=True)
class Axis:
    """What an axis name refers to: `step`, `group`, a param, a metric or a run column."""

    text: str
    kind: str  # step | group | param | metric | run
    name: str
    stat: str | None = None  # a metric's explicit .last/.min/.max suffix


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

    @property
    def missing_text(self) -> str:
        return missing_text(self.missing)


@dataclass(frozen=True)
class MissingRun:
    key: str
    group: str
    status: str
    reason: str  # the status, or "no value" / "no baseline"
    error: str | None


@dataclass
class FigureData:
    """The points of a figure, its table, and what it does not show yet."""

    experiment: str
    name: str
    figure: Figure
    x: Axis
    y: list[Axis]
    series: Axis | None
    facet: Axis | None
    points: list[Point]
    counts: dict[str, int]  # the figure's runs by status
    missing: list[MissingRun]
    selection: dict[str, str]  # y text -> last | min | max | all
    baseline: str | None = None
    pooled: list[str] = field(default_factory=list)  # params besides the seed that vary within a point

    @property
    def columns(self) -> list[str]:
        columns = [a.text for a in (self.facet, self.series) if a is not None] + [self.x.text]
        if len(self.y) > 1:
            columns.append("metric")
        if self.figure.aggregate == "none":
            columns += ["run"] + ([] if self.figure.step == "all" else ["step"]) + ["value"]
        elif self.figure.aggregate == "mean_minmax":
            columns += ["mean", "min", "max"]
        else:
            columns += ["mean", "std"]
        return columns + ["n", "missing"]

    @property
    def rows(self) -> list[list[Any]]:
        table = []
        for p in self.points:
            row = [c for a, c in ((self.facet, p.facet), (self.series, p.series)) if a is not None] + [p.x]
            if len(self.y) > 1:
                row.append(p.metric)
            if self.figure.aggregate == "none":
                row += [p.run] + ([] if self.figure.step == "all" else [p.step]) + [p.mean]
            elif self.figure.aggregate == "mean_minmax":
                row += [p.mean, p.low, p.high]
            else:
                row += [p.mean, p.std]
            table.append(row + [p.n, p.missing_text])
        return table

    @property
    def total_runs(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """One sentence on what the values are, for captions."""
        how = {"last": "at the last evaluation step", "min": "at its minimum", "max": "at its maximum",
               "all": "at every evaluation step"}
        parts = []
        for axis in self.y:
            chosen = self.selection[axis.text]
            word = how.get(chosen, "")
            if self.figure.step == "best" and axis.stat is None and axis.kind == "metric":
                word = f"at its best step ({'maximum' if chosen == 'max' else 'minimum'})"
            parts.append(f"{axis.text} {word}" if axis.kind == "metric" else f"{axis.text} (param)")
        text = "; ".join(parts)
        if self.baseline:
            text += f"; {self.baseline}"
        spread = {"mean_std": "mean ± sample standard deviation over the runs of each point (seeds)",
                  "mean_minmax": "mean, with min–max over the runs of each point (seeds)",
                  "none": "every run separately"}[self.figure.aggregate]
        done = self.counts.get("done", 0)
        text = f"{text}; {spread}; {done} of {self.total_runs} runs done."
        if self.pooled:
            text += (f" Note: points also pool runs that differ in {', '.join(self.pooled)} (plot it as series or "
                     "facet, or filter with where:).")
        return text


def missing_text(missing: dict[str, int]) -> str:
    if not missing:
        return ""
    order = {k: i for i, k in enumerate(MISSING_ORDER)}
    return ", ".join(f"{n} {k}" for k, n in sorted(missing.items(), key=lambda kv: order.get(kv[0], 99)) if n)


@dataclass
class _Unit:
    """A figure run (in one of its groups, when `group` is an axis)."""

    run_id: int
    key: str
    group: str
    status: str
    error: str | None
    coords: tuple = ()  # (facet, series, x) as plotted; x is None when it is a metric or the step
    baseline: int | None = None


def figure_data(conn: Connection, ref: FigureRef) -> FigureData:
    """The figure's points from whatever runs of its experiment are in the database."""
    return _FigureQuery(conn, ref).run()


class _FigureQuery:
    def __init__(self, conn: Connection, ref: FigureRef):
        self.conn = conn
        self.ref = ref
        self.figure = ref.figure
        self.vocabulary = Vocabulary.load(conn)
        self.unlogged: list[str] = []
        self.x = self.axis(self.figure.x, "x")
        self.series = self.axis(self.figure.series, "series") if self.figure.series else None
        self.facet = self.axis(self.figure.facet, "facet") if self.figure.facet else None
        self.y = [self.axis(name, "y") for name in self.figure.y_names]
        self.check_axes()

    # -- names --------------------------------------------------------------------------------

    def error(self, message: str) -> UsageError:
        return UsageError(f"figure {self.ref.qualified}: {message}")

    def axis(self, text: str, role: str) -> Axis:
        if text == STEP:
            if role != "x":
                raise self.error(f"{role}: `step` can only be the x axis")
            return Axis(text, "step", STEP)
        if text == GROUP:
            return Axis(text, "group", GROUP)
        found = resolve_name(text, self.vocabulary)
        if isinstance(found, ParamField):
            return Axis(text, "param", found.key)
        if isinstance(found, MetricField):
            explicit = found.stat if text.endswith("." + found.stat) and found.name != text else None
            return Axis(text, "metric", found.name, explicit)
        if isinstance(found, RunField):
            if found.name not in RUN_COLUMNS:
                raise self.error(f"{role}: {text!r} cannot be plotted; use `group` or a param")
            return Axis(text, "run", found.name)
        if role in ("x", "y"):
            # A metric no run has logged so far: fine while no run is done (checked in run()).
            self.unlogged.append(text)
            return Axis(text, "metric", text)
        raise self.error(f"{role}: {text!r} is not a param, run attribute or `group` of any run in the database")

    def check_axes(self) -> None:
        for role, axis in (("series", self.series), ("facet", self.facet)):
            if axis is not None and axis.kind == "metric":
                raise self.error(f"{role}: {axis.text!r} is a metric; series and facets are params or `group`")
        if self.figure.step == "all":
            if self.x.kind not in ("step", "metric"):
                raise self.error("step: all plots every evaluation step, so x must be `step` or a metric")
            for axis in self.y:
                if axis.kind != "metric":
                    raise self.error(f"y: {axis.text!r} is not a metric; step: all needs metric series")
                if axis.stat is not None:
                    raise self.error(f"y: {axis.text!r} picks one value per run; step: all plots every step")
        if self.x.kind == "metric" and self.figure.kind in ("bar", "heatmap"):
            raise self.error(f"a {self.figure.kind} needs categories on x, not the metric {self.x.text!r}")
        if self.figure.relative_to is not None:
            unknown = [k for k in self.figure.relative_to if k != GROUP and k not in self.vocabulary.param_keys]
            if unknown:
                raise self.error(f"relative_to: no run has the param {', '.join(map(repr, unknown))}")

    def selection(self, axis: Axis) -> str:
        """last | min | max | all for a y metric."""
        if axis.kind != "metric":
            return "param"
        if axis.stat is not None:
            return axis.stat
        step = self.figure.step
        if step != "best":
            return step
        direction = self.figure.best or best_direction(axis.name)
        if direction is None:
            raise self.error(f"step: best, but is a larger or smaller {axis.name!r} better? add best: max or best: min")
        return direction

    # -- runs -----------------------------------------------------------------------------------

    def units(self) -> list[_Unit]:
        experiment_id = self.ref.experiment_id
        query = (select(runs.c.id, runs.c.key, runs.c.status, runs.c.error_type, runs.c.error_message,
                        memberships.c.group_name)
                 .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
                 .where(memberships.c.experiment_id == experiment_id)
                 .order_by(runs.c.id, memberships.c.group_name))
        if self.figure.where and self.figure.where.strip():
            try:
                query = query.where(compile_filter(self.figure.where, self.conn, experiment_id=experiment_id))
            except FilterError as err:
                raise self.error(f"where: {err}") from None
        per_group = any(a is not None and a.kind == "group" for a in (self.x, self.series, self.facet))
        found: list[_Unit] = []
        groups: dict[int, list[str]] = defaultdict(list)
        for row in self.conn.execute(query):
            status = RunStatus(row.status).value
            error = f"{row.error_type}: {row.error_message}" if row.error_type else None
            if per_group or row.id not in groups:
                found.append(_Unit(row.id, row.key, row.group_name, status, error))
            groups[row.id].append(row.group_name)
        if not per_group:
            for unit in found:
                unit.group = ", ".join(groups[unit.run_id])
        return found

    def coordinates(self, units: list[_Unit]) -> None:
        axes = [self.facet, self.series, self.x]
        ids = sorted({u.run_id for u in units})
        keys = sorted({a.name for a in axes if a is not None and a.kind == "param"})
        values = _param_values(self.conn, ids, keys) if keys else {}
        columns = sorted({a.name for a in axes if a is not None and a.kind == "run"})
        attributes: dict[int, dict[str, Any]] = {}
        if columns:
            for chunk in _chunks(ids):
                query = select(runs.c.id, *(RUN_COLUMNS[c].label(c) for c in columns)).where(runs.c.id.in_(chunk))
                for row in self.conn.execute(query):
                    attributes[row.id] = {c: _plain(getattr(row, c)) for c in columns}

        def coordinate(axis: Axis | None, unit: _Unit) -> Any:
            if axis is None or axis.kind in ("step", "metric"):
                return None
            if axis.kind == "group":
                return unit.group
            if axis.kind == "param":
                return values.get((unit.run_id, axis.name))
            return attributes.get(unit.run_id, {}).get(axis.name)

        for unit in units:
            unit.coords = tuple(coordinate(a, unit) for a in axes)

    def baselines(self, units: list[_Unit]) -> tuple[list[_Unit], dict[int, str]]:
        """Attach each unit's baseline run; returns the units that are not baselines themselves,
        and the status of every baseline run."""
        fixed = self.figure.relative_to or {}
        experiment_id = self.ref.experiment_id
        members = self.conn.execute(
            select(memberships.c.run_id, memberships.c.group_name, runs.c.status)
            .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
            .where(memberships.c.experiment_id == experiment_id)
        ).all()
        status = {r.run_id: RunStatus(r.status).value for r in members}
        groups: dict[int, set[str]] = defaultdict(set)
        for r in members:
            groups[r.run_id].add(r.group_name)
        ids = sorted(status)
        flat: dict[int, dict[str, Any]] = defaultdict(dict)
        for chunk in _chunks(ids):
            rows = self.conn.execute(select(params.c.run_id, params.c.key, params.c.value_num, params.c.value_str,
                                            params.c.value_bool, params.c.value_json).where(params.c.run_id.in_(chunk)))
            for run_id, key, number, text, flag, as_json in rows:
                value = _param_value(number, text, flag, None)
                flat[run_id][key] = as_json if value is None else value

        def is_baseline(run_id: int) -> bool:
            for key, wanted in fixed.items():
                if key == GROUP:
                    if wanted not in groups[run_id]:
                        return False
                elif not _same(flat[run_id].get(key), wanted):
                    return False
            return True

        def signature(run_id: int) -> tuple:
            return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flat[run_id].items() if k not in fixed))

        by_signature: dict[tuple, int] = {}
        for run_id in ids:
            if is_baseline(run_id):
                by_signature.setdefault(signature(run_id), run_id)
        kept = []
        for unit in units:
            if is_baseline(unit.run_id):
                continue
            unit.baseline = by_signature.get(signature(unit.run_id))
            kept.append(unit)
        return kept, status

    # -- the query ------------------------------------------------------------------------------

    def run(self) -> FigureData:
        units = self.units()
        self.coordinates(units)
        baseline_status: dict[int, str] = {}
        if self.figure.relative_to is not None:
            units, baseline_status = self.baselines(units)
        counts = Counter(u.status for u in units)
        if self.unlogged and counts.get("done"):
            name = self.unlogged[0]
            guesses = difflib.get_close_matches(name, sorted(self.vocabulary.metric_names), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(guesses)}?" if guesses else ""
            raise self.error(f"no run has logged a metric named {name!r}{hint}")
        missing = [MissingRun(u.key, u.group, u.status, u.status, u.error) for u in units if u.status != "done"]
        usable = []
        for unit in units:
            if unit.status != "done":
                continue
            if self.figure.relative_to is not None and (unit.baseline is None
                                                        or baseline_status.get(unit.baseline) != "done"):
                missing.append(MissingRun(unit.key, unit.group, "done", "no baseline", None))
                continue
            usable.append(unit)
        self.usable_ids = {u.run_id for u in usable}
        selection = {a.text: self.selection(a) for a in self.y}
        if self.figure.step == "all":
            points = self.series_points(units, usable)  # in order already
        else:
            points = self.single_points(units, usable, selection)
            order = {a.text: i for i, a in enumerate(self.y)}
            points.sort(key=lambda p: (_order_key(p.facet), _order_key(p.series), order[p.metric],
                                       _order_key(p.x), p.run or ""))
        baseline = None
        if self.figure.relative_to is not None:
            fixed = ", ".join(f"{k}={v}" for k, v in self.figure.relative_to.items())
            relation = {"difference": "minus", "abs_difference": "absolute difference to",
                        "ratio": "divided by"}[self.figure.relation]
            baseline = f"each run {relation} its baseline run ({fixed}, same other params)"
        return FigureData(self.ref.experiment, self.ref.name, self.figure, self.x, self.y, self.series, self.facet,
                          points, dict(counts), missing, selection, baseline, self.pooled(usable))

    def pooled(self, usable: list[_Unit]) -> list[str]:
        """Params other than the seed (and the plotted ones) that take several values within one
        point: the point then averages over more than seeds, which the caption says."""
        if self.figure.aggregate == "none" or len(usable) < 2:
            return []
        ids = sorted({u.run_id for u in usable})
        plotted = {a.name for a in (self.x, self.series, self.facet) if a is not None and a.kind == "param"}
        ignored = plotted | {"seed"} | set(self.figure.relative_to or {})
        candidates = [k for k in _differing_params(self.conn, ids) if k not in ignored]
        if not candidates:
            return []
        values = _param_values(self.conn, ids, candidates)
        found = []
        for key in candidates:
            seen: dict[tuple, str] = {}
            for unit in usable:
                value = json.dumps(values.get((unit.run_id, key)), sort_keys=True)
                if seen.setdefault(self.point_key(unit), value) != value:
                    found.append(key)
                    break
        return found

    def point_key(self, unit: _Unit) -> tuple:
        facet, series, x = unit.coords
        return facet, series, (None if self.x.kind in ("metric", "step") else x)

    def absent(self, units: list[_Unit]) -> dict[tuple, Counter]:
        """Per point: runs that are not aggregated because they are not done (or lack a baseline)."""
        found: dict[tuple, Counter] = defaultdict(Counter)
        for unit in units:
            if unit.status != "done":
                found[self.point_key(unit)][unit.status] += 1
            elif unit.run_id not in self.usable_ids:
                found[self.point_key(unit)]["no baseline"] += 1
        return found

    def single_points(self, units: list[_Unit], usable: list[_Unit], selection: dict[str, str]) -> list[Point]:
        """One value per run: from metric_summaries (or params), aggregated per point in Python."""
        metric_names = sorted({a.name for a in self.y if a.kind == "metric"}
                              | ({self.x.name} if self.x.kind == "metric" else set()))
        ids = sorted({u.run_id for u in usable} | {u.baseline for u in usable if u.baseline is not None})
        stats = _summaries(self.conn, ids, metric_names) if metric_names else {}
        param_keys = sorted({a.name for a in self.y if a.kind == "param"})
        param_values = _param_values(self.conn, ids, param_keys) if param_keys else {}
        absent = self.absent(units)
        points: list[Point] = []
        for axis in self.y:
            chosen = selection[axis.text]
            x_lookups: list[tuple[int, int]] = []
            samples: dict[tuple, list[tuple[_Unit, float, int | None]]] = defaultdict(list)
            no_value: dict[tuple, int] = Counter()
            for unit in usable:
                value, step = self.value_of(axis, chosen, unit.run_id, stats, param_values)
                if value is not None and unit.baseline is not None:
                    base, _ = self.value_of(axis, chosen, unit.baseline, stats, param_values)
                    value = _relate(value, base, self.figure.relation)
                if value is None:
                    no_value[self.point_key(unit)] += 1
                    continue
                samples[self.point_key(unit)].append((unit, value, step))
                if self.x.kind == "metric" and step is not None:
                    x_lookups.append((unit.run_id, step))
            x_values = self.x_values(stats, x_lookups) if self.x.kind == "metric" else {}
            keys = set(samples) | set(absent) | set(no_value)
            for key in keys:
                facet, series, x = key
                gone = Counter(absent.get(key, {}))
                if no_value.get(key):
                    gone["no value"] += no_value[key]
                found = samples.get(key, [])
                if self.figure.aggregate == "none":
                    for unit, value, step in found:
                        px = x_values.get((unit.run_id, step)) if self.x.kind == "metric" else x
                        points.append(Point(axis.text, facet, series, px, mean=value, n=1, run=unit.key, step=step))
                    if gone:
                        points.append(Point(axis.text, facet, series, x, n=0, missing=dict(gone)))
                    continue
                point = Point(axis.text, facet, series, x, n=len(found), missing=dict(gone))
                if found:
                    _aggregate(point, [v for _, v, _ in found])
                    if self.x.kind == "metric":
                        xs = [x_values.get((u.run_id, s)) for u, _, s in found]
                        xs = [v for v in xs if v is not None]
                        point.x = math.fsum(xs) / len(xs) if xs else None
                points.append(point)
        return points

    def value_of(self, axis: Axis, chosen: str, run_id: int, stats, param_values) -> tuple[float | None, int | None]:
        if axis.kind == "param":
            value = param_values.get((run_id, axis.name))
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise self.error(f"y: the param {axis.text!r} is not a number ({value!r})")
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
            row = stats.get((run_id, self.x.name))
            if row is not None and row.last_step == step:
                if row.last is not None:
                    found[(run_id, step)] = row.last
            else:
                needed[run_id].add(step)
        ids = sorted(needed)
        steps = sorted(set().union(*needed.values())) if needed else []
        for chunk in _chunks(ids):
            for start in range(0, len(steps), CHUNK):
                query = (select(metrics.c.run_id, metrics.c.step, metrics.c.value)
                         .where(metrics.c.run_id.in_(chunk), metrics.c.name == self.x.name,
                                metrics.c.step.in_(steps[start:start + CHUNK])))
                for run_id, step, value in self.conn.execute(query):
                    if step in needed[run_id] and value is not None:
                        found[(run_id, step)] = value
        return found

    def series_points(self, units: list[_Unit], usable: list[_Unit]) -> list[Point]:
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
            key = self.point_key(unit)[:2] + ((unit.key,) if aggregate == "none" else ())
            curve = curves.setdefault(key, len(curves))
            members[curve].append((unit.run_id, unit.baseline))
        names = [a.name for a in self.y]
        shift = self.shifts(sorted(u.run_id for u in usable), names)
        # (curve, name) -> {step: [count, sum, sum of squares, min, max, sum of x]}
        found: dict[tuple[int, str], dict[int, list]] = defaultdict(dict)
        plain = self.figure.relative_to is None and self.x.kind == "step"
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
        text_of = {a.name: a.text for a in self.y}
        empty: dict = {}
        points: list[Point] = []
        keys = set(curves) | {k[:2] for k in absent if k[:2] not in {c[:2] for c in curves}}
        for key in sorted(keys, key=lambda k: (_order_key(k[0]), _order_key(k[1]), k[2:])):
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
                    x = step if self.x.kind == "step" else (x_total / count if x_total is not None else None)
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
        if self.figure.relative_to is not None or not ids:
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
        relative = self.figure.relative_to is not None
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
        if self.x.kind == "metric":
            mx = metrics.alias("mx")
            joined = joined.join(mx, (mx.c.run_id == g.c.run_id) & (mx.c.name == self.x.name) & (mx.c.step == m.c.step))
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


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(wanted)
    return value == wanted


def _summaries(conn: Connection, ids: Sequence[int], names: Sequence[str]) -> dict[tuple[int, str], Any]:
    found = {}
    for chunk in _chunks(ids):
        query = (select(summaries.c.run_id, summaries.c.name, summaries.c.last, summaries.c.last_step,
                        summaries.c.min, summaries.c.min_step, summaries.c.max, summaries.c.max_step)
                 .where(summaries.c.run_id.in_(chunk), summaries.c.name.in_(list(names))))
        for row in conn.execute(query):
            found[(row.run_id, row.name)] = row
    return found


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def _plain(value: Any) -> Any:
    if isinstance(value, RunStatus):
        return value.value
    return value


def _order_key(value: Any) -> tuple:
    """Numbers before strings, None last; numbers by value."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, bool):
        return (1, 0, str(value))
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (2, 0, str(value))


@dataclass(frozen=True)
class FigureProblem:
    """A figure that cannot be computed, and why (shown in its place in a report)."""

    name: str
    message: str


def experiment_figures(conn: Connection, experiment: str,
                       figures: dict[str, Figure] | None = None) -> list[FigureData | FigureProblem]:
    """Every figure of an experiment (the stored spec's, or `figures`); a figure that cannot be
    computed yields a FigureProblem instead, so one bad figure does not hide the others."""
    row = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).first()
    if row is None:
        known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        raise UsageError(f"no experiment named {experiment!r} in the database; known: {', '.join(known) or 'none yet'}")
    if figures is None:
        text = conn.execute(select(experiments.c.spec_text).where(experiments.c.id == row.id)).scalar_one()
        found, problems = parse_figures(text or "")
    else:
        found, problems = dict(figures), {}
    results: list[FigureData | FigureProblem] = []
    for name, figure in found.items():
        try:
            results.append(figure_data(conn, FigureRef(experiment, row.id, name, figure)))
        except UsageError as err:
            results.append(FigureProblem(name, str(err)))
    for name, problem in problems.items():
        results.append(FigureProblem(name, f"figure {experiment}:{name} in the stored spec is not valid: {problem}"))
    return results
