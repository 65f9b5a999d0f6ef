"""`kind: images` figures on a real (tiny) NAD experiment through the CLI: the report draws the
chosen rows of each run's `nads` artifact as a grid whose pixels are the artifact's values
(orientation, order, sign and scale), `query --paper` lists the artifacts, and a figure naming a
missing artifact or a wrong shape says so."""

import base64
import csv
import io
import re
import sqlite3

import numpy as np
from conftest import ntklab
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from test_report import parse, png_pixels

from ntklab.db.connection import open_engine, reading
from ntklab.reports.api import load_artifact
from ntklab.reports.figures import figure_data, resolve_figure
from ntklab.reports.plots import draw

SPEC = """\
name: nad_images
groups:
  nads:
    task: nads
    model: {arch: mlp, depth: 1, width: 12, activation: gelu}
    shape: [6, 5, 1]
    sweep: {grid: {seed: [1, 2]}}
figures:
  nads:
    title: NADs
    kind: images
    artifact: nads
    indices: [0, 3, 7]
    columns: 2
    label: NAD
  missing:
    kind: images
    artifact: eigenvectors
  wrong_shape:
    kind: images
    artifact: nads
    shape: [4, 4]
"""


def test_nads_drawn_as_images_in_the_report(home):
    (home / "spec.yaml").write_text(SPEC)
    ntklab("run", "spec.yaml", home=home, check=True)
    report = home / "report.html"
    result = ntklab("report", "spec.yaml", "-o", str(report), home=home, check=True)
    page = report.read_text(encoding="utf-8")
    parser = parse(page)
    sections = {name: images for name, images, _ in parser.sections if name.startswith("figure-")}
    assert sections == {"figure-nads": 1, "figure-missing": 0, "figure-wrong_shape": 0}
    # The bad figures say what is wrong, in the page and on the terminal.
    with sqlite3.connect(home / "ntklab.db") as conn:
        keys = [k for (k,) in conn.execute("select key from runs order by id")]
    named = r"run [0-9a-f]{12} \(nads\) has no artifact &#x27;eigenvectors&#x27; \(it has: nads, values\)"
    assert re.search(named, page)
    assert "has rows of 30 values (shape (29, 30)), which are not 4x4 images" in page
    assert "no artifact 'eigenvectors'" in result.stderr and "not 4x4 images" in result.stderr

    (image,) = parser.images
    pixels = png_pixels(base64.b64decode(image["src"].split(",", 1)[1], validate=True))
    engine = open_engine(f"sqlite:///{home / 'ntklab.db'}")
    with reading(engine) as conn:
        data = figure_data(conn, resolve_figure(conn, "nad_images:nads"), home)
    canvas = draw(data)
    FigureCanvasAgg(canvas).draw()  # the layout as saved (aspect applied)
    panels = [ax for ax in canvas.axes if ax.images]
    assert len(panels) == 2 * 3  # two runs, rows 0, 3 and 7 of each
    assert [ax.get_title() for ax in panels] == ["NAD 0", "NAD 3", "NAD 7"] * 2
    assert [run.key for run in data.runs] == keys
    cmap = colormaps["RdBu_r"]
    height = pixels.shape[0]
    for run_index, run in enumerate(data.runs):
        nads = load_artifact(run.key, "nads", home=home)
        assert nads.shape == (29, 30)
        for ax, row in zip(panels[3 * run_index:3 * run_index + 3], (0, 3, 7)):
            expected = nads[row].reshape(6, 5)
            assert np.array_equal(ax.images[0].get_array(), expected)
            bound = np.abs(expected).max()
            box = ax.get_window_extent()
            for i, j in np.ndindex(6, 5):  # the pixel at the centre of each image cell, in the report's PNG
                x = box.x0 + (j + 0.5) * box.width / 5
                y = box.y1 - (i + 0.5) * box.height / 6
                drawn = pixels[int(height - y), int(x), :3]
                colour = np.array(cmap(0.5 + expected[i, j] / (2 * bound))[:3])
                assert np.abs(drawn - colour).max() < 0.02, (run.key[:12], row, i, j, drawn, colour)

    listing = list(csv.DictReader(io.StringIO(ntklab("query", "--paper", "nads", "-f", "csv", home=home,
                                                     check=True).stdout)))
    assert [(r["run"], r["artifact"], r["rows"], r["image"], r["drawn"]) for r in listing] == [
        (key, "nads", "29", "6x5x1", "0, 3, 7") for key in keys]
    bad = ntklab("query", "--paper", "wrong_shape", home=home)
    assert bad.returncode != 0 and "figure nad_images:wrong_shape: artifact 'nads' of run" in bad.stderr
    assert "not 4x4 images" in bad.stderr and "Traceback" not in bad.stderr
