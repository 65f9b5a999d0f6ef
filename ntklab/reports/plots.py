"""Matplotlib renderings of figure data, as PNG bytes for the HTML report.

matplotlib is imported only here and only when a plot is drawn (the CLI stays fast), and only the
object-oriented API is used (no pyplot, no global state, the Agg renderer). Plots are what a paper
prints: axis labels with units where known, a legend of the series values, log scales where the
data spans two decades or more (unless the figure says otherwise), and error bands for the spread
over seeds (mean ± standard deviation or min–max). An images figure is a grid of images per run,
pixel for pixel (nearest neighbour), signed images on a colour map symmetric around 0.
"""

import io
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ntklab.reports.aggregation import Point
from ntklab.reports.axes import Axis
from ntklab.reports.figures import FigureData
from ntklab.reports.images import DEFAULT_COLUMNS, ImageFigureData

DPI = 110
PANEL_SIZE = (4.2, 2.9)  # inches, the axes alone
MARGIN_LEFT = 0.95
MARGIN_BOTTOM = 0.6
MARGIN_TOP = 0.5
FACET_TITLE = 0.25
COLORBAR = 0.9
TITLE_CHAR_WIDTH = 0.105  # inches per character of the 12-point title, roughly
TITLE_LINE = 0.22
MAX_COLUMNS = 3
DECADES_FOR_LOG = 2.0
MAX_MARKED_POINTS = 40
MAX_ANNOTATED_CELLS = 150
MAX_TICKS = 10
SEQUENTIAL_FROM = 5  # numeric series with more values get a sequential colour map
IMAGE_CELL = 1.1  # inches per image of an images figure, its title included
IMAGE_TITLE = 0.22
RUN_TITLE = 0.3
COLORBAR_WIDTH = 0.75

# Units of metrics, by the last word of their name.
UNITS = {
    "accuracy": "fraction correct",
    "acc": "fraction correct",
    "agreement": "fraction of test points",
    "seconds": "s",
    "time": "s",
    "epoch": "epochs",
}
# What a param is, by the last part of its dotted key.
MEANINGS = {
    "lr": "learning rate",
    "tau": "noise strength τ",
    "width": "width",
    "channels": "channels",
    "depth": "depth",
    "expansion_order": "Taylor expansion order",
    "epochs": "epochs",
    "batch_size": "batch size",
    "ridge": "ridge λ",
}
KNOWN_LABELS = {"step": "step", "group": "group", "seed": "seed"}


def axis_label(axis: Axis, given: str | None = None, *, relation: str | None = None) -> str:
    """The label of an axis: the figure's own, else the field name with its unit when known."""
    if given:
        return given
    if axis.text in KNOWN_LABELS and axis.kind in ("step", "group", "param"):
        return KNOWN_LABELS[axis.text]
    text = axis.text
    if axis.kind == "param":
        meaning = MEANINGS.get(axis.name.split(".")[-1])
        return f"{meaning} ({text})" if meaning else text
    if axis.kind == "metric" and relation is not None:
        return {"difference": f"{text} − baseline", "abs_difference": f"|{text} − baseline|",
                "ratio": f"{text} / baseline"}[relation]
    last = axis.name.replace("/", ".").split(".")[-1].split("_")[-1].lower()
    unit = UNITS.get(last)
    if axis.kind == "metric" and (axis.name.lower().endswith("_rel") or "relative" in axis.name.lower()):
        unit = "relative"
    return f"{text} ({unit})" if unit else text


def render_png(data: FigureData | ImageFigureData) -> bytes | None:
    """The figure as PNG bytes, or None when it is a table or has no value to plot yet."""
    canvas = draw(data)
    if canvas is None:
        return None
    buffer = io.BytesIO()
    canvas.savefig(buffer, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 4})
    return buffer.getvalue()


def draw(data: FigureData | ImageFigureData):
    """The figure as a matplotlib Figure (not attached to pyplot), or None when there is nothing
    to draw: one panel per y metric and facet value, a legend of the series values."""
    if isinstance(data, ImageFigureData):
        return _image_grids(data) if data.runs else None
    if data.figure.kind == "table" or not any(p.mean is not None for p in data.points):
        return None
    from matplotlib.figure import Figure as Canvas

    facets = _distinct(p.facet for p in data.points) if data.facet is not None else [None]
    panels = [(y, f) for y in data.y for f in facets]
    columns = min(len(facets), MAX_COLUMNS)
    rows = math.ceil(len(panels) / columns)
    context = _Context.of(data)
    legend_width = 0.0
    if data.series is not None and data.figure.kind != "heatmap":
        longest = max([len(data.series.text)] + [len(_fmt(v)) + 3 for v in context.colors])
        legend_width = min(0.4 + 0.075 * longest, 4.0)
    # A fixed layout in inches (constrained layout costs more than drawing): margins for tick
    # labels and axis labels, room for facet titles, the title on top and the legend on the right.
    left, bottom, gap_x = MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_LEFT + 0.15
    top = MARGIN_TOP + (FACET_TITLE if data.facet is not None else 0.0)
    gap_y = MARGIN_BOTTOM + 0.2 + (FACET_TITLE if data.facet is not None else 0.0)
    panel_w, panel_h = PANEL_SIZE
    if data.figure.kind == "heatmap":
        panel_w += COLORBAR
    width = left + columns * panel_w + (columns - 1) * gap_x + 0.25 + legend_width
    title = textwrap.wrap(data.figure.title or data.name, width=max(24, int(width / TITLE_CHAR_WIDTH)))
    top += TITLE_LINE * (len(title) - 1)
    height = top + rows * panel_h + (rows - 1) * gap_y + bottom
    canvas = Canvas(figsize=(width, height), dpi=DPI)
    grid = canvas.subplots(rows, columns, squeeze=False, gridspec_kw={
        "left": left / width, "right": (width - 0.25 - legend_width) / width,
        "bottom": bottom / height, "top": 1 - top / height,
        "wspace": gap_x / panel_w, "hspace": gap_y / panel_h})
    colors = context.colors
    by_panel: dict[tuple, list[Point]] = defaultdict(list)
    for p in data.points:
        by_panel[(p.metric, p.facet if data.facet is not None else None)].append(p)
    handles: dict[Any, Any] = {}
    for index, (y, facet) in enumerate(panels):
        ax = grid[index // columns][index % columns]
        points = by_panel.get((y.text, facet), [])
        if data.figure.kind == "heatmap":
            _heatmap(canvas, ax, data, y, points)
        elif data.figure.kind == "bar":
            _bars(ax, data, points, colors, handles, context)
        else:
            _lines(ax, data, points, colors, handles, context)
        if data.figure.kind != "heatmap":
            ax.set_ylabel(axis_label(y, data.figure.y_label, relation=data.figure.relation
                                     if data.figure.relative_to is not None else None))
            ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.set_xlabel(axis_label(data.x, data.figure.x_label))
        if data.facet is not None:
            ax.set_title(f"{data.facet.text} = {_fmt(facet)}", fontsize=10)
        if not any(p.mean is not None for p in points):
            ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
    for extra in range(len(panels), rows * columns):
        grid[extra // columns][extra % columns].set_visible(False)
    if handles and data.series is not None:
        order = sorted(handles, key=_sort_key)
        canvas.legend([handles[s] for s in order], [_fmt(s) for s in order], title=data.series.text,
                      loc="upper left", bbox_to_anchor=(1 - (legend_width + 0.1) / width, 1 - top / height),
                      fontsize=9, title_fontsize=9, frameon=False, borderaxespad=0.0)
    canvas.suptitle("\n".join(title), fontsize=12, y=1 - 0.12 / height, va="top")
    return canvas


def _lines(ax, data: FigureData, points: list[Point], colors: dict, handles: dict, context: "_Context") -> None:
    figure = data.figure
    categorical = context.categorical
    positions = context.positions
    by_curve: dict[tuple, list[Point]] = {}
    for p in points:
        if p.mean is None or p.x is None:
            continue
        by_curve.setdefault((p.series, p.run if figure.aggregate == "none" else None), []).append(p)
    for (series, run), curve in by_curve.items():
        curve.sort(key=lambda p: positions.get(p.x, p.x) if categorical else float(p.x))
        xs = [positions[p.x] for p in curve] if categorical else [float(p.x) for p in curve]
        ys = [p.mean for p in curve]
        color = colors.get(series, "C0")
        marker = "o" if len(curve) <= MAX_MARKED_POINTS else None
        if figure.kind == "scatter" or (figure.aggregate == "none" and figure.step != "all"):
            errors = _errors(figure.aggregate, curve)
            handle = ax.errorbar(xs, ys, yerr=errors, fmt="o", color=color, markersize=4, capsize=2,
                                 elinewidth=0.8, alpha=0.85, linestyle="none")
        else:
            width = 0.9 if figure.aggregate == "none" else 1.6
            (handle,) = ax.plot(xs, ys, color=color, marker=marker, markersize=3.5, linewidth=width,
                                alpha=0.7 if figure.aggregate == "none" else 1.0)
            band = _band(figure.aggregate, curve)
            if band is not None:
                ax.fill_between(xs, band[0], band[1], color=color, alpha=0.18, linewidth=0)
        handles.setdefault(series, handle)
    if categorical:
        ax.set_xticks(list(positions.values()), [_fmt(v) for v in positions])
    if context.log_x:
        ax.set_xscale("log")
    if context.log_y.get(points[0].metric if points else None):
        ax.set_yscale("log")
    if not categorical and data.x.kind == "param":
        ticks = sorted(float(v) for v in positions)
        if len(ticks) <= MAX_TICKS and all(_is_round(t) for t in ticks):
            ax.set_xticks(ticks, [_fmt(t) for t in ticks])
            ax.minorticks_off()


def _bars(ax, data: FigureData, points: list[Point], colors: dict, handles: dict, context: "_Context") -> None:
    positions = context.positions
    series_values = list(colors)
    width = 0.8 / max(len(series_values), 1)
    for i, series in enumerate(series_values):
        chosen = [p for p in points if p.series == series and p.mean is not None and p.x is not None]
        if not chosen:
            continue
        xs = [positions[p.x] - 0.4 + width * (i + 0.5) for p in chosen]
        handle = ax.bar(xs, [p.mean for p in chosen], width=width * 0.95, color=colors.get(series, "C0"),
                        yerr=_errors(data.figure.aggregate, chosen), capsize=2, error_kw={"elinewidth": 0.8})
        handles.setdefault(series, handle)
    ax.set_xticks(list(positions.values()), [_fmt(v) for v in positions])
    if data.figure.log_y:
        ax.set_yscale("log")


def _heatmap(canvas, ax, data: FigureData, y: Axis, points: list[Point]) -> None:
    import numpy as np
    from matplotlib.colors import LogNorm

    xs = _distinct(p.x for p in data.points if p.x is not None)
    rows = _distinct(p.series for p in data.points)
    grid = np.full((len(rows), len(xs)), np.nan)
    for p in points:
        if p.mean is not None and p.x in xs:
            grid[rows.index(p.series), xs.index(p.x)] = p.mean
    finite = grid[np.isfinite(grid)]
    log = data.figure.log_y if data.figure.log_y is not None else _spans_decades(finite.tolist())
    norm = LogNorm() if log and finite.size and (finite > 0).all() else None
    image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", norm=norm, interpolation="nearest")
    ax.set_xticks(range(len(xs)), [_fmt(v) for v in xs], rotation=45 if len(xs) > 8 else 0)
    ax.set_yticks(range(len(rows)), [_fmt(v) for v in rows])
    ax.set_ylabel(axis_label(data.series) if data.series is not None else "")
    if grid.size <= MAX_ANNOTATED_CELLS and finite.size:
        middle = float(np.nanmedian(grid))
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if value < middle else "black")
    bar = canvas.colorbar(image, ax=ax)
    bar.set_label(axis_label(y, data.figure.y_label, relation=data.figure.relation
                             if data.figure.relative_to is not None else None))


def _image_grids(data: ImageFigureData):
    """One grid of images per run, `columns` wide, in a fixed layout in inches. A signed run is
    drawn on a diverging map with bounds ±max|value| (white is 0, so a pixel's sign is its
    colour); otherwise from the smallest to the largest value. RGB images are mapped the same way
    per channel."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure as Canvas

    figure = data.figure
    columns = min(figure.columns or DEFAULT_COLUMNS, max(len(r.indices) for r in data.runs))
    grid_rows = [math.ceil(len(r.indices) / columns) for r in data.runs]
    bar = COLORBAR_WIDTH if figure.scale == "shared" else 0.0
    width = max(columns * IMAGE_CELL + 0.2 + bar, 3.0)
    title = textwrap.wrap(figure.title or data.name, width=max(24, int(width / TITLE_CHAR_WIDTH)))
    top = MARGIN_TOP + TITLE_LINE * (len(title) - 1)
    height = top + sum(RUN_TITLE + n * IMAGE_CELL for n in grid_rows) + 0.1
    canvas = Canvas(figsize=(width, height), dpi=DPI)
    side = IMAGE_CELL - IMAGE_TITLE - 0.08
    y = height - top
    for run, n_rows in zip(data.runs, grid_rows):
        canvas.text(0.1 / width, (y - RUN_TITLE / 2) / height, run.title, fontsize=10, va="center")
        y -= RUN_TITLE
        signed = bool((run.images < 0).any())
        cmap = colormaps[figure.cmap or ("RdBu_r" if signed else "gray")]
        image = None
        for i, (index, pixels) in enumerate(zip(run.indices, run.images)):
            row, column = divmod(i, columns)
            left, bottom = 0.1 + column * IMAGE_CELL + 0.04, y - (row + 1) * IMAGE_CELL + 0.04
            ax = canvas.add_axes((left / width, bottom / height, side / width, side / height))
            low, high = _color_range(pixels if figure.scale == "each" else run.images, signed)
            if pixels.shape[-1] == 1:
                image = ax.imshow(pixels[..., 0], cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            else:
                ax.imshow(np.clip((pixels - low) / (high - low), 0.0, 1.0), interpolation="nearest")
            ax.set_title(f"{data.label} {index}", fontsize=8, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
        if image is not None and bar:
            bottom = y - n_rows * IMAGE_CELL + 0.1
            axis = canvas.add_axes(((0.2 + columns * IMAGE_CELL) / width, bottom / height, 0.12 / width,
                                    (n_rows * IMAGE_CELL - 0.3) / height))
            canvas.colorbar(image, cax=axis)
        y -= n_rows * IMAGE_CELL
    canvas.suptitle("\n".join(title), fontsize=12, y=1 - 0.12 / height, va="top")
    return canvas


def _color_range(values, signed: bool) -> tuple[float, float]:
    """±max|value| for signed values, else (min, max); never an empty range."""
    if signed:
        bound = float(abs(values).max()) or 1.0
        return -bound, bound
    low, high = float(values.min()), float(values.max())
    return low, high if high > low else low + 1.0


def _errors(aggregate: str, curve: Sequence[Point]):
    if aggregate == "mean_std":
        if all(p.std is None for p in curve):
            return None
        return [p.std or 0.0 for p in curve]
    if aggregate == "mean_minmax":
        return [[p.mean - p.low for p in curve], [p.high - p.mean for p in curve]]
    return None


def _band(aggregate: str, curve: Sequence[Point]):
    if aggregate == "mean_std":
        if all(p.std is None for p in curve):
            return None
        return [p.mean - (p.std or 0.0) for p in curve], [p.mean + (p.std or 0.0) for p in curve]
    if aggregate == "mean_minmax":
        return [p.low for p in curve], [p.high for p in curve]
    return None


@dataclass(frozen=True)
class _Context:
    """What every panel of a figure shares, computed once: whether x is categorical (and the
    position of each category), the log scales, and the colour of each series value."""

    categorical: bool
    positions: dict[Any, int]
    log_x: bool
    log_y: dict[str, bool]
    colors: dict[Any, Any]

    @classmethod
    def of(cls, data: FigureData) -> "_Context":
        figure = data.figure
        xs = _distinct(p.x for p in data.points if p.x is not None)
        categorical = figure.kind == "bar" or any(not _is_number(x) for x in xs)
        log_x = False
        if not categorical:
            valued = [float(p.x) for p in data.points if p.x is not None and p.mean is not None]
            log_x = figure.log_x if figure.log_x is not None else _spans_decades(valued)
        means: dict[str, list[float]] = defaultdict(list)
        for p in data.points:
            if p.mean is not None:
                means[p.metric].append(p.mean)
        log_y = {m: (figure.log_y if figure.log_y is not None else _spans_decades(v)) for m, v in means.items()}
        return cls(categorical, {x: i for i, x in enumerate(xs)}, bool(log_x), log_y, _colors(data))


def _spans_decades(values: Sequence[float]) -> bool:
    """All positive and the largest at least 100 times the smallest."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < 2 or min(values) <= 0:
        return False
    return math.log10(max(values) / min(values)) >= DECADES_FOR_LOG


def _colors(data: FigureData) -> dict[Any, Any]:
    """Distinct colours; for many ordered (numeric) series values, a sequential colour map."""
    values = _distinct(p.series for p in data.points)
    ordered = len(values) > SEQUENTIAL_FROM and all(_is_number(v) for v in values)
    if len(values) <= 10 and not ordered:
        return {v: f"C{i}" for i, v in enumerate(values)}
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return {v: cmap(0.9 * i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def _distinct(values) -> list[Any]:
    found = list(dict.fromkeys(values))
    return sorted(found, key=_sort_key)


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (3, 0.0, "")
    if _is_number(value):
        return (0, float(value), "")
    return (2, 0.0, str(value))


def _is_round(value: float) -> bool:
    """A value with at most three significant digits (a sweep value worth a tick of its own)."""
    return abs(value - float(f"{value:.3g}")) <= 1e-9 * max(1.0, abs(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
