"""The shape of a spec file. Run configs inside groups are validated per expanded run."""

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator, model_validator

from ntklab.configbase import StrictModel
from ntklab.headline import best_direction  # noqa: F401 - figures take the direction of `step: best` from here
from ntklab.spec.executor import ExecutorConfig

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"


Scalar = str | int | float | bool
MAX_IMAGES = 256  # per run of an images figure: a grid larger than this is no longer readable


class Figure(StrictModel):
    """A figure is a query over the experiment's runs (`ntklab query --paper`, `ntklab report`).

    x, series and facet name a param (dotted config key), `group`, `seed`, a run attribute, or
    `step` (x only: every evaluation step); x may also be a metric (a scatter of two metrics).
    y names one or more metrics (or a numeric param). Runs that share x, series and facet (in
    practice: differ only by seed) are aggregated into one point.

    step: which value of each run's metric series: `last` (default), `min`, `max`, `best` (max or
    min by `best`, else by the metric's name: accuracy-like -> max, loss/error/distance-like ->
    min), or `all` (every evaluation step; the default when x is `step`).

    relative_to: cross-run values. Each run's value is compared (`relation`) with that of its
    baseline run: the run of the experiment whose params equal these values and whose other params
    equal the run's own (same seed, same everything else), at the same step. E.g. the distance
    of each Taylor order to the full network: `relative_to: {train.expansion_order: 0}`.
    Baseline runs themselves are left out of the figure. Values are compared, not vectors: a
    distance between two runs' test logits has to be logged as a metric by the run itself.

    best_over: a hyper-parameter search inside each point (Ghorbani et al. take, per noise level,
    the best of a sweep of the kernel constant, the ridge or the learning rate). The runs of a
    point that differ only in the `best_over` params are one replicate (one seed); per replicate
    the run whose metric `by` is best (max or min by `best`, else by the metric's name) is chosen,
    and the point aggregates the chosen runs, so seeds are averaged after the choice. The table
    names the winning value of each `best_over` param per point (a list when seeds disagree).

    With `group` on an axis, a run that belongs to several groups counts once in each; `where`
    selects runs, so `group in [...]` keeps a selected run's other groups too.

    kind: images draws rows of an array artifact as a grid of images, one grid per run that
    `where` selects (Ortiz-Jiménez et al.'s NADs): no x or y. `artifact` names it (k x D, or
    k x h x w (x c)); each row is reshaped to `shape` (h, w) or (h, w, c), by default the shape the
    run recorded with the artifact (rows flattened in (h, w, c) order). The rows drawn are
    `indices`, else the first `count`; each image is titled "`label` i". Signed images (NADs,
    eigenvectors) get a colour map symmetric around 0, so white is 0 and the sign reads off the
    colour; `scale: each` scales each image to its own largest |value|, `shared` all of a run's.
    """

    title: str = ""
    kind: Literal["line", "scatter", "bar", "heatmap", "table", "images"] = "line"
    x: str | None = None
    y: str | list[str] | None = None
    series: str | None = None
    facet: str | None = None
    where: str | None = Field(None, description="a filter expression over params and metrics")
    step: Literal["last", "best", "min", "max", "all"] = "last"
    best: Literal["max", "min"] | None = Field(
        None, description="for step: best and best_over's `by`, which direction is better"
    )
    aggregate: Literal["mean_std", "mean_minmax", "none"] = "mean_std"
    log_x: bool | None = None
    log_y: bool | None = None
    x_label: str | None = Field(None, description="axis label (default: the field name and its unit)")
    y_label: str | None = None
    relative_to: dict[str, Scalar] | None = Field(None, description="params of the baseline run (cross-run values)")
    relation: Literal["difference", "abs_difference", "ratio"] = "difference"
    best_over: list[str] | None = Field(
        None, description="params searched per point: each point shows, per seed, the run best by `by`"
    )
    by: str | None = Field(None, description="the metric that chooses the best run for best_over")
    artifact: str | None = Field(None, description="images: the array artifact whose rows are drawn")
    indices: list[NonNegativeInt] | None = Field(None, min_length=1, max_length=MAX_IMAGES,
                                                 description="images: the rows drawn (default: the first `count`)")
    count: int | None = Field(None, ge=1, le=MAX_IMAGES, description="images: the first rows drawn (default 16)")
    columns: PositiveInt | None = Field(None, description="images: images per row of the grid (default 8)")
    shape: tuple[PositiveInt, PositiveInt] | tuple[PositiveInt, PositiveInt, PositiveInt] | None = Field(
        None, description="images: (h, w) or (h, w, c) of a row (default: the shape recorded with the artifact)")
    label: str | None = Field(None, description="images: each image's title is 'LABEL i' (default: the artifact)")
    cmap: str | None = Field(None, description="images: a matplotlib colour map (default RdBu_r for signed "
                             "images, gray otherwise)")
    scale: Literal["each", "shared"] = Field("each", description="images: the colour range of each image, or "
                                             "one shared by a run's images")

    @model_validator(mode="before")
    @classmethod
    def _default_step(cls, data: Any) -> Any:
        """`x: step` plots every evaluation step, so `step` defaults to `all` there."""
        if isinstance(data, dict) and data.get("x") == "step" and "step" not in data and data.get("kind") != "images":
            return {**data, "step": "all"}
        return data

    @field_validator("y")
    @classmethod
    def _y_names(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return value
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("name at least one metric")
        if any(not n.strip() for n in names):
            raise ValueError("metric names are not empty")
        if len(set(names)) != len(names):
            raise ValueError("a metric is named twice")
        return value

    @field_validator("cmap")
    @classmethod
    def _known_cmap(cls, value: str | None) -> str | None:
        """Checked when the spec is read (matplotlib is imported only for a figure that names one)."""
        if value is None:
            return value
        import difflib

        from matplotlib import colormaps

        if value not in colormaps:
            guesses = difflib.get_close_matches(value, list(colormaps), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(guesses)}?" if guesses else " (e.g. RdBu_r, coolwarm, gray, viridis)"
            raise ValueError(f"{value!r} is not a matplotlib colour map{hint}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Figure":
        drawn = {"artifact", "indices", "count", "columns", "shape", "label", "cmap", "scale"}
        if self.kind == "images":
            plotted = sorted(set(self.model_fields_set) - drawn - {"kind", "title", "where"})
            if plotted:
                raise ValueError(f"an images figure draws the rows of an artifact; {', '.join(plotted)} "
                                 f"{'does' if len(plotted) == 1 else 'do'} not apply (it takes artifact, indices or "
                                 "count, columns, shape, label, cmap, scale, where and title)")
            if self.artifact is None or not self.artifact.strip():
                raise ValueError("an images figure needs `artifact`, the name of the array artifact to draw")
            if self.indices is not None and self.count is not None:
                raise ValueError("give either `indices` (the rows drawn) or `count` (the first rows), not both")
            return self
        misplaced = sorted(set(self.model_fields_set) & drawn)
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} {'applies' if len(misplaced) == 1 else 'apply'} only to "
                             "kind: images")
        if self.x is None or self.y is None:
            raise ValueError(f"a {self.kind} figure needs x and y")
        if self.x == "step" and self.step != "all":
            raise ValueError("x: step plots every evaluation step; leave `step` out or write step: all")
        if self.step == "all" and self.kind in ("bar", "heatmap"):
            raise ValueError(f"a {self.kind} figure shows one value per run: use step: last, best, min or max")
        if self.best is not None and self.step != "best" and self.best_over is None:
            raise ValueError("`best` chooses the direction of step: best (or of best_over's `by`); "
                             "set step: best or remove it")
        if (self.best_over is None) != (self.by is None):
            raise ValueError("best_over and by go together: best_over names the params searched, by the metric "
                             "that chooses")
        if self.best_over is not None:
            if not self.best_over or len(set(self.best_over)) != len(self.best_over):
                raise ValueError("best_over names one or more distinct params")
            if self.step == "all":
                raise ValueError("best_over chooses one run per seed by one value per run: use step: last, best, "
                                 "min or max")
            plotted = {self.x, self.series, self.facet} & set(self.best_over)
            if plotted:
                raise ValueError(f"best_over: {', '.join(sorted(plotted))} is plotted on an axis; a param is "
                                 "either plotted or searched")
        axes = [a for a in (self.x, self.series, self.facet) if a is not None]
        if len(set(axes)) != len(axes):
            raise ValueError("x, series and facet must be different fields")
        if self.kind == "heatmap" and (self.series is None or len(self.y_names) != 1):
            raise ValueError("a heatmap needs one y metric, and a series (its vertical axis)")
        if self.relative_to is not None:
            if not self.relative_to:
                raise ValueError("relative_to names at least one param of the baseline run")
        elif "relation" in self.model_fields_set:
            raise ValueError("`relation` applies only with relative_to")
        return self

    @property
    def y_names(self) -> list[str]:
        if self.y is None:
            return []
        return [self.y] if isinstance(self.y, str) else list(self.y)


class SpecFile(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = Field(min_length=1)
    sweep: dict[str, Any] | None = None
    figures: dict[str, Figure] = Field(default_factory=dict)
    executor: ExecutorConfig | None = Field(None, description="where `ntklab run` executes the runs (no part of their identity)")
