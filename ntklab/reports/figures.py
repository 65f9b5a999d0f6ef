"""Figures as queries: the data behind a figure declared in a spec, from the database alone.

A figure lives in its experiment's stored spec (experiments.spec_text); its `figures:` section is
parsed again with the same `Figure` model, so `ntklab query --paper NAME` needs no spec file. A
figure that only an earlier spec version of the experiment declares (spec_versions: another spec
file with the same `name:`) stays queryable; the latest spec wins where both declare a name.

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
- `best_over` with `by`: per point and seed the run best by `by` (reports/best.py); the point
  aggregates the chosen runs and the table names the winning values.
- Values never travel one query per run: run ids go in chunks (reports/records.py).

The parts: name resolution (reports/axes.py), run selection (reports/selection.py), baseline
matching (reports/baselines.py), the best run over a hyper-parameter (reports/best.py) and
aggregation (reports/aggregation.py); this module finds the stored figures and puts the parts
together. An images figure (reports/images.py) draws artifacts instead of points.
"""

import difflib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, select

from ntklab.db.tables import experiments, spec_versions
from ntklab.errors import SpecError, UsageError
from ntklab.reports.aggregation import Aggregation, Point
from ntklab.reports.axes import Axis, FigureAxes, FigureError, resolve_axes, value_selection
from ntklab.reports.baselines import attach_baselines
from ntklab.reports.best import choose_best
from ntklab.reports.filters import Vocabulary
from ntklab.reports.images import ImageFigureData, image_figure_data
from ntklab.reports.records import differing_params, param_values, params_signature
from ntklab.reports.selection import FigureRun, MissingRun, select_runs
from ntklab.spec.models import Figure
from ntklab.spec.yaml_source import parse_yaml


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


def _versions_figures(conn: Connection, experiment_id: int, name: str) -> tuple[dict[str, Figure], dict[str, str]]:
    """The figures of every spec version of an experiment, the latest spec's first."""
    latest = conn.execute(select(experiments.c.spec_text).where(experiments.c.id == experiment_id)).scalar_one()
    older = conn.execute(select(spec_versions.c.spec_text).where(spec_versions.c.experiment_id == experiment_id)
                         .order_by(spec_versions.c.id.desc())).scalars()
    found: dict[str, Figure] = {}
    problems: dict[str, str] = {}
    for text in dict.fromkeys([latest, *older]):
        figures, bad = parse_figures(text or "", f"{name} (stored spec)")
        for figure_name, figure in figures.items():
            if figure_name not in found and figure_name not in problems:
                found[figure_name] = figure
        for figure_name, problem in bad.items():
            if figure_name not in found and figure_name not in problems:
                problems[figure_name] = problem
    return found, problems


def stored_figures(conn: Connection, experiment: str | None = None) -> StoredFigures:
    query = select(experiments.c.id, experiments.c.name).order_by(experiments.c.name)
    if experiment is not None:
        query = query.where(experiments.c.name == experiment)
    figures, problems = [], {}
    for experiment_id, name in conn.execute(query).all():
        found, bad = _versions_figures(conn, experiment_id, name)
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
        return columns + [f"best {text}" for text in self.figure.best_over or ()] + ["n", "missing"]

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
            row += [(p.best or {}).get(text) for text in self.figure.best_over or ()]
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
        if self.figure.best_over:
            text += (f"; per point and seed the run with the best {self.figure.by} over "
                     f"{', '.join(self.figure.best_over)} (the winning values in the table)")
        spread = {"mean_std": "mean ± sample standard deviation over the runs of each point (seeds)",
                  "mean_minmax": "mean, with min–max over the runs of each point (seeds)",
                  "none": "every run separately"}[self.figure.aggregate]
        done = self.counts.get("done", 0)
        text = f"{text}; {spread}; {done} of {self.total_runs} runs done."
        if self.pooled:
            text += (f" Note: points also pool runs that differ in {', '.join(self.pooled)} (plot it as series or "
                     "facet, or filter with where:).")
        return text


def figure_data(conn: Connection, ref: FigureRef, home: Path | None = None) -> FigureData | ImageFigureData:
    """The figure's points from whatever runs of its experiment are in the database (an images
    figure: its images, from the artifact files in `home`)."""
    figure, name = ref.figure, ref.qualified
    if figure.kind == "images":
        return image_figure_data(conn, ref.experiment, ref.experiment_id, name, figure, home)
    vocabulary = Vocabulary.load(conn)
    axes = resolve_axes(figure, vocabulary, name)
    found = select_runs(conn, ref.experiment_id, figure.where, axes, name)
    baseline_status: dict[int, str] = {}
    if figure.relative_to is not None:
        found, baseline_status = attach_baselines(conn, ref.experiment_id, figure.relative_to, found)
    counts = Counter(u.status for u in found)
    if axes.unlogged and counts.get("done"):
        unlogged = axes.unlogged[0]
        guesses = difflib.get_close_matches(unlogged, sorted(vocabulary.metric_names), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(guesses)}?" if guesses else ""
        raise FigureError(name, f"no run has logged a metric named {unlogged!r}{hint}")
    missing = [MissingRun(u.key, u.group, u.status, u.status, u.error) for u in found if u.status != "done"]
    usable = []
    for run in found:
        if run.status != "done":
            continue
        if figure.relative_to is not None and (run.baseline is None or baseline_status.get(run.baseline) != "done"):
            missing.append(MissingRun(run.key, run.group, "done", "no baseline", None))
            continue
        usable.append(run)
    selection = {a.text: value_selection(figure, a, name) for a in axes.y}
    best = choose_best(conn, figure, axes, usable, name) if figure.best_over is not None else None
    if best is not None:
        passed_over = {id(r) for r in usable} - {id(r) for r in best.chosen}
        found, usable = [r for r in found if id(r) not in passed_over], best.chosen
    points = Aggregation(conn, figure, axes, name, best.unscored if best else None).points(found, usable, selection)
    if best is not None:
        for point in points:
            point.best = best.winners.get(axes.point_key((point.facet, point.series, point.x)))
    baseline = None
    if figure.relative_to is not None:
        fixed = ", ".join(f"{k}={v}" for k, v in figure.relative_to.items())
        relation = {"difference": "minus", "abs_difference": "absolute difference to",
                    "ratio": "divided by"}[figure.relation]
        baseline = f"each run {relation} its baseline run ({fixed}, same other params)"
    return FigureData(ref.experiment, ref.name, figure, axes.x, axes.y, axes.series, axes.facet,
                      points, dict(counts), missing, selection, baseline, _pooled(conn, figure, axes, usable))


def _pooled(conn: Connection, figure: Figure, axes: FigureAxes, usable: list[FigureRun]) -> list[str]:
    """Params other than the seed (and the plotted ones) that take several values within one
    point: the point then averages over more than seeds, which the caption says."""
    if figure.aggregate == "none" or len(usable) < 2:
        return []
    ids = sorted({u.run_id for u in usable})
    ignored = axes.plotted_params() | {"seed"} | set(figure.relative_to or {}) | set(axes.best_over)
    candidates = [k for k in differing_params(conn, ids) if k not in ignored]
    if not candidates:
        return []
    values = param_values(conn, ids, candidates)
    found = []
    for key in candidates:
        seen: dict[tuple, tuple] = {}
        for run in usable:
            value = params_signature({key: values.get((run.run_id, key))})
            if seen.setdefault(axes.point_key(run.coords), value) != value:
                found.append(key)
                break
    return found

@dataclass(frozen=True)
class FigureProblem:
    """A figure that cannot be computed, and why (shown in its place in a report)."""

    name: str
    message: str


def experiment_figures(conn: Connection, experiment: str, figures: dict[str, Figure] | None = None,
                       home: Path | None = None) -> list[FigureData | ImageFigureData | FigureProblem]:
    """Every figure of an experiment (the stored spec's, or `figures`); a figure that cannot be
    computed yields a FigureProblem instead, so one bad figure does not hide the others."""
    row = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).first()
    if row is None:
        known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        raise UsageError(f"no experiment named {experiment!r} in the database; known: {', '.join(known) or 'none yet'}")
    if figures is None:
        found, problems = _versions_figures(conn, row.id, experiment)
    else:
        found, problems = dict(figures), {}
    results: list[FigureData | ImageFigureData | FigureProblem] = []
    for name, figure in found.items():
        try:
            results.append(figure_data(conn, FigureRef(experiment, row.id, name, figure), home))
        except UsageError as err:
            results.append(FigureProblem(name, str(err)))
    for name, problem in problems.items():
        results.append(FigureProblem(name, f"figure {experiment}:{name} in the stored spec is not valid: {problem}"))
    return results
