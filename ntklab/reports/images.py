"""Image figures (`kind: images`): rows of an array artifact drawn as a grid of images, one
grid per run.

A neural anisotropy direction (Ortiz-Jiménez et al. 2021) is a direction in input space, so it is
an image, and the paper shows the first ones side by side; any array whose rows are images (an
input-space eigenvector, a learned filter bank) is drawn the same way. The figure's runs are the
experiment's runs that match its `where`; each done one must have the artifact as an npy array of
k rows (k x D, or k x h x w (x c)), checked against its recorded sha256, and an image shape: the
figure's `shape`, else the `image_shape` recorded in the artifact's metadata (the nads task
records (h, w, c), its rows flattened in that order), else the array's own (k x h x w (x c)).
Anything else is a FigureError naming the run, so a wrong `where` or `artifact` reads as such.

The pixels live in the artifact files of the home, not in the database: the figure's table (what
`ntklab query --paper` prints) lists per run the artifact, its shape, the rows drawn and its file;
`ntklab.reports.api.load_artifact(RUN, ARTIFACT)` gives the array.
"""

import hashlib
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from ntklab.db.tables import artifacts
from ntklab.reports.axes import FigureError
from ntklab.reports.records import differing_params, param_values
from ntklab.reports.selection import FigureRun, MissingRun, select_runs
from ntklab.spec.models import Figure

DEFAULT_COUNT = 16
DEFAULT_COLUMNS = 8
MAX_RUNS = 12  # grids per figure; more is a figure nobody reads: narrow `where`
TITLE_PARAMS = 3  # params named in a run's title


@dataclass(frozen=True)
class RunImages:
    """The images of one run: `images[i]` (h x w x c) is row `indices[i]` of its artifact."""

    key: str
    group: str
    title: str
    indices: list[int]
    images: np.ndarray
    rows: int
    path: str


@dataclass
class ImageFigureData:
    """The images of a figure, its table, and the runs it does not show yet."""

    experiment: str
    name: str
    figure: Figure
    runs: list[RunImages]
    counts: dict[str, int]
    missing: list[MissingRun]

    columns = ["run", "group", "artifact", "rows", "image", "drawn", "file"]

    @property
    def rows(self) -> list[list[Any]]:
        return [[r.key, r.group, self.figure.artifact, r.rows, "x".join(map(str, r.images.shape[1:])),
                 _ranges(r.indices), r.path] for r in self.runs]

    @property
    def total_runs(self) -> int:
        return sum(self.counts.values())

    @property
    def label(self) -> str:
        return self.figure.label or self.figure.artifact

    def describe(self) -> str:
        """One sentence on what the images are, for captions."""
        scale = {"each": "each image scaled to its own largest |value|",
                 "shared": "one colour scale for all images of a run"}[self.figure.scale]
        colour = (f"colour map {self.figure.cmap}" if self.figure.cmap
                  else "signed images in blue (negative), white (0) and red (positive), others in gray")
        done = self.counts.get("done", 0)
        return (f"Rows of the artifact {self.figure.artifact!r}, one grid per run, titled '{self.label} i' for row i; "
                f"{colour}, {scale}; {done} of {self.total_runs} runs done.")


def image_figure_data(conn: Connection, experiment: str, experiment_id: int, name: str, figure: Figure,
                      home: Path | None) -> ImageFigureData:
    """The images of figure `name` (qualified) from the done runs its `where` selects."""
    if home is None:
        raise FigureError(name, "an images figure reads artifact files: it needs the home directory")
    found = select_runs(conn, experiment_id, figure.where, None, name)
    done = [r for r in found if r.status == "done"]
    if len(done) > MAX_RUNS:
        raise FigureError(name, f"{len(done)} done runs match; an images figure draws at most {MAX_RUNS} grids: "
                                "select fewer runs with `where:`")
    titles = _titles(conn, done)
    drawn = [_run_images(conn, home, run, titles[run.run_id], figure, name) for run in done]
    missing = [MissingRun(r.key, r.group, r.status, r.status, r.error) for r in found if r.status != "done"]
    return ImageFigureData(experiment, name.rpartition(":")[2], figure, drawn, dict(Counter(r.status for r in found)),
                           missing)


def _run_images(conn: Connection, home: Path, run: FigureRun, title: str, figure: Figure, name: str) -> RunImages:
    where = f"run {run.key[:12]} ({run.group})"
    record = conn.execute(select(artifacts.c.path, artifacts.c.kind, artifacts.c.sha256,
                                 artifacts.c.metadata)
                          .where(artifacts.c.run_id == run.run_id, artifacts.c.name == figure.artifact)).first()
    if record is None:
        names = conn.execute(select(artifacts.c.name).where(artifacts.c.run_id == run.run_id)
                             .order_by(artifacts.c.name)).scalars().all()
        raise FigureError(name, f"{where} has no artifact {figure.artifact!r} (it has: {', '.join(names) or 'none'}); "
                                "choose the runs with `where:`")
    if record.kind != "npy":
        raise FigureError(name, f"artifact {figure.artifact!r} of {where} is {record.kind}, not an npy array")
    path = home / record.path
    data = path.read_bytes() if path.is_file() else None
    if data is None or hashlib.sha256(data).hexdigest() != record.sha256:
        raise FigureError(name, f"artifact {figure.artifact!r} of {where} at {path} is missing or differs from its "
                                "record")
    array = np.load(io.BytesIO(data), allow_pickle=False)
    shape = figure.shape or (record.metadata or {}).get("image_shape")
    images = _as_images(array, shape, f"artifact {figure.artifact!r} of {where}", name)
    if figure.indices is not None:
        beyond = [i for i in figure.indices if i >= len(images)]
        if beyond:
            raise FigureError(name, f"indices: {', '.join(map(str, beyond))} beyond the {len(images)} rows of "
                                    f"artifact {figure.artifact!r} of {where}")
        indices = list(figure.indices)
    else:
        indices = list(range(min(figure.count or DEFAULT_COUNT, len(images))))
    return RunImages(run.key, run.group, title, indices, images[indices], len(images), record.path)


def _as_images(array: np.ndarray, shape: Any, what: str, name: str) -> np.ndarray:
    """The rows of `array` as (k, h, w, c) images."""
    if array.ndim < 2 or not len(array) or array.dtype.kind not in "fiub":
        raise FigureError(name, f"{what} is an array of shape {array.shape} ({array.dtype}), not one numeric row "
                                "per image")
    if shape is None:
        if array.ndim == 2:
            raise FigureError(name, f"{what} has rows of {array.shape[1]} values and no recorded image shape: "
                                    "declare the figure's `shape: [h, w]` or `[h, w, c]`")
        shape = array.shape[1:]
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(array.shape[1:]))
    if size != int(np.prod(shape)):
        raise FigureError(name, f"{what} has rows of {size} values (shape {array.shape}), which are not "
                                f"{'x'.join(map(str, shape))} images")
    images = array.reshape(len(array), *shape[:2], shape[2] if len(shape) == 3 else 1).astype(np.float64)
    if images.shape[-1] not in (1, 3):
        raise FigureError(name, f"{what}: images of {images.shape[-1]} channels; only 1 (a colour map) or 3 (RGB) "
                                "can be drawn")
    return images


def _titles(conn: Connection, done: list[FigureRun]) -> dict[int, str]:
    """Each run's title: its group, and the params that tell it from the figure's other runs."""
    ids = [r.run_id for r in done]
    keys = differing_params(conn, ids)[:TITLE_PARAMS] if len(ids) > 1 else []
    values = param_values(conn, ids, keys) if keys else {}
    titles = {}
    for run in done:
        told = ", ".join(f"{k} = {values.get((run.run_id, k))}" for k in keys)
        titles[run.run_id] = f"{run.group} ({told})" if told else f"{run.group} (run {run.key[:12]})"
    return titles


def _ranges(indices: list[int]) -> str:
    """0-15 for a run of consecutive rows, else the list."""
    if indices == list(range(indices[0], indices[0] + len(indices))) and len(indices) > 2:
        return f"{indices[0]}-{indices[-1]}"
    return ", ".join(map(str, indices))
