"""Name resolution for figures: what each axis of a figure names (`step`, `group`, a param, a
metric, a run column), the consistency of the axes, and which value of a y metric a run gives."""

from dataclasses import dataclass, field

from ntklab.errors import UsageError
from ntklab.reports.filters import RUN_COLUMNS, MetricField, ParamField, RunField, Vocabulary, resolve_name
from ntklab.spec.models import Figure, best_direction

STEP = "step"
GROUP = "group"


class FigureError(UsageError):
    """A figure that cannot be computed; the message names the figure."""

    def __init__(self, figure: str, message: str):
        super().__init__(f"figure {figure}: {message}")


@dataclass(frozen=True)
class Axis:
    """What an axis name refers to: `step`, `group`, a param, a metric or a run column."""

    text: str
    kind: str  # step | group | param | metric | run
    name: str
    stat: str | None = None  # a metric's explicit .last/.min/.max suffix


@dataclass
class FigureAxes:
    """The resolved axes of a figure, with best_over's param keys and its metric `by`; `unlogged`
    lists x/y/by names no run has logged yet."""

    x: Axis
    y: list[Axis]
    series: Axis | None
    facet: Axis | None
    best_over: list[str] = field(default_factory=list)
    by: Axis | None = None
    unlogged: list[str] = field(default_factory=list)

    @property
    def coordinates(self) -> list[Axis | None]:
        """The axes that place a run, in the order of a run's coordinates: facet, series, x."""
        return [self.facet, self.series, self.x]

    def plotted_params(self) -> set[str]:
        return {a.name for a in (self.x, self.series, self.facet) if a is not None and a.kind == "param"}

    def per_group(self) -> bool:
        """`group` is an axis: a run of several groups counts once in each."""
        return any(a is not None and a.kind == "group" for a in (self.x, self.series, self.facet))

    def point_key(self, coords: tuple) -> tuple:
        """The point of a run's (facet, series, x): x is left out when it is a metric or the step."""
        facet, series, x = coords
        return facet, series, (None if self.x.kind in ("metric", "step") else x)


def resolve_axes(figure: Figure, vocabulary: Vocabulary, name: str) -> FigureAxes:
    """The axes of `figure` (called `name` in messages), checked against each other."""
    unlogged: list[str] = []

    def axis(text: str, role: str) -> Axis:
        return _axis(text, role, vocabulary, name, unlogged)

    axes = FigureAxes(x=axis(figure.x, "x"), series=axis(figure.series, "series") if figure.series else None,
                      facet=axis(figure.facet, "facet") if figure.facet else None,
                      y=[axis(text, "y") for text in figure.y_names],
                      best_over=[_searched(text, vocabulary, name) for text in figure.best_over or ()],
                      by=axis(figure.by, "by") if figure.by else None, unlogged=unlogged)
    _check(figure, axes, vocabulary, name)
    return axes


def _axis(text: str, role: str, vocabulary: Vocabulary, figure: str, unlogged: list[str]) -> Axis:
    if text == STEP:
        if role != "x":
            raise FigureError(figure, f"{role}: `step` can only be the x axis")
        return Axis(text, "step", STEP)
    if text == GROUP:
        return Axis(text, "group", GROUP)
    found = resolve_name(text, vocabulary)
    if isinstance(found, ParamField):
        return Axis(text, "param", found.key)
    if isinstance(found, MetricField):
        explicit = found.stat if text.endswith("." + found.stat) and found.name != text else None
        return Axis(text, "metric", found.name, explicit)
    if isinstance(found, RunField):
        if found.name not in RUN_COLUMNS:
            raise FigureError(figure, f"{role}: {text!r} cannot be plotted; use `group` or a param")
        return Axis(text, "run", found.name)
    if role in ("x", "y", "by"):
        # A metric no run has logged so far: fine while no run is done (checked by the query).
        unlogged.append(text)
        return Axis(text, "metric", text)
    raise FigureError(figure, f"{role}: {text!r} is not a param, run attribute or `group` of any run in the database")


def _searched(text: str, vocabulary: Vocabulary, figure: str) -> str:
    """The key of a best_over param."""
    found = resolve_name(text, vocabulary)
    if not isinstance(found, ParamField):
        raise FigureError(figure, f"best_over: {text!r} is not a param of any run in the database")
    return found.key


def _check(figure: Figure, axes: FigureAxes, vocabulary: Vocabulary, name: str) -> None:
    if axes.by is not None and axes.by.kind != "metric":
        raise FigureError(name, f"by: {axes.by.text!r} is not a metric; best_over chooses runs by a metric")
    for role, axis in (("series", axes.series), ("facet", axes.facet)):
        if axis is not None and axis.kind == "metric":
            raise FigureError(name, f"{role}: {axis.text!r} is a metric; series and facets are params or `group`")
    if figure.step == "all":
        if axes.x.kind not in ("step", "metric"):
            raise FigureError(name, "step: all plots every evaluation step, so x must be `step` or a metric")
        for axis in axes.y:
            if axis.kind != "metric":
                raise FigureError(name, f"y: {axis.text!r} is not a metric; step: all needs metric series")
            if axis.stat is not None:
                raise FigureError(name, f"y: {axis.text!r} picks one value per run; step: all plots every step")
    if axes.x.kind == "metric" and figure.kind in ("bar", "heatmap"):
        raise FigureError(name, f"a {figure.kind} needs categories on x, not the metric {axes.x.text!r}")
    if figure.relative_to is not None:
        unknown = [k for k in figure.relative_to if k != GROUP and k not in vocabulary.param_keys]
        if unknown:
            raise FigureError(name, f"relative_to: no run has the param {', '.join(map(repr, unknown))}")


def value_selection(figure: Figure, axis: Axis, name: str) -> str:
    """last | min | max | all for a y metric (`param` for a param)."""
    if axis.kind != "metric":
        return "param"
    if axis.stat is not None:
        return axis.stat
    step = figure.step
    if step != "best":
        return step
    direction = figure.best or best_direction(axis.name)
    if direction is None:
        raise FigureError(name, f"step: best, but is a larger or smaller {axis.name!r} better? "
                                "add best: max or best: min")
    return direction
