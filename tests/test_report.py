"""`ntklab report` and `ntklab query --paper` on a real (short) quickstart run: a self-contained
HTML file that parses, one real plot per figure, no external URL, and a page headless Chromium
renders without console errors. Also: a partially finished experiment, escaping, and the plots'
axes, legends, log scales and error bands."""

import base64
import csv
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import SPECS, ntklab
from filelock import FileLock
from sqlalchemy import update

from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Run, RunStatus
from ntklab.db.queue import PlanRow, enqueue, sync_experiment
from ntklab.db.records import MetricPoint, write_metrics
from ntklab.db.schema import ensure_schema
from ntklab.reports.figures import FigureRef, figure_data
from ntklab.reports.html import render_report
from ntklab.spec.load import load_spec
from ntklab.spec.models import Figure
from ntklab.tasks import registry

QUICKSTART = SPECS / "quickstart.yaml"
# Two epochs (44 steps), evaluated every 14 steps and at the end.
SHORT = ("--set", "train.epochs=2", "--set", "train.eval_every_steps=14")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
runs = Run.__table__


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory) -> Path:
    """A home holding a short run of the quickstart (8 runs, 2 epochs each), run once per session
    even under pytest-xdist: the workers share the directory above their own temporary roots."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    home = root / "quickstart-report"
    with FileLock(str(root / "quickstart-report.lock")):
        if not (home / "complete").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            ntklab("run", str(QUICKSTART), *SHORT, home=home, check=True)
            (home / "complete").touch()
    return home


@pytest.fixture(scope="module")
def report(quickstart, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    ntklab("report", str(QUICKSTART), "-o", str(path), home=quickstart, check=True)
    return path


class StrictParser(HTMLParser):
    """Checks that every element is closed in order, and collects images and links."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.images: list[dict[str, str]] = []
        self.references: list[str] = []
        self.sections: list[tuple[str, int, int]] = []  # (h3 id, images, table rows with n > 0)
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("src", "href", "action", "poster", "srcset"):
            if name in attributes:
                self.references.append(attributes[name] or "")
        if tag == "img":
            self.images.append(attributes)
            if self.sections:
                self.sections[-1] = (self.sections[-1][0], self.sections[-1][1] + 1, self.sections[-1][2])
        if tag == "h3":
            self.sections.append((attributes.get("id", ""), 0, 0))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert not parser.problems, parser.problems[:5]
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return parser


def png_pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(data), format="png")


def test_report_of_the_quickstart_is_one_self_contained_file(report, quickstart):
    page = report.read_text(encoding="utf-8")
    parser = parse(page)
    figures = load_spec(QUICKSTART, tasks=registry).figures
    assert [i for i in parser.images if not i["src"].startswith("data:image/png;base64,")] == []
    assert len(parser.images) == len(figures) == 3
    for image in parser.images:
        pixels = png_pixels(base64.b64decode(image["src"].split(",", 1)[1], validate=True))
        height, width = pixels.shape[:2]
        assert width >= 400 and height >= 300
        assert pixels[..., :3].std() > 0.05, "the plot is blank"
    sections = {name: images for name, images, _ in parser.sections if name.startswith("figure-")}
    assert sections == {f"figure-{name}": 1 for name in figures}
    # Nothing points outside the file: no script, stylesheet link, font or remote URL.
    assert all(r.startswith(("data:", "#")) for r in parser.references), parser.references
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|<script|<link|@import|url\(|//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)
    # The sections a reader needs, with their contents.
    for heading in ("Runs by group and status", "Runs", "Failures", "Provenance", "Spec"):
        assert f">{heading}</h2>" in page
    assert page.count('class="status-done"') >= 8 and "8 runs</strong>: 8 done" in page
    assert "jaxlib" in page and "No run failed or diverged" in page
    assert "name: quickstart" in page and "train.optimizer.lr" in page
    # The default output name (in the working directory), and an experiment name instead of a spec.
    work = report.parent / "work"
    work.mkdir()
    ntklab("report", "quickstart", "--home", str(quickstart), home=work, check=True)
    again = (work / "quickstart-report.html").read_text(encoding="utf-8")
    assert len(parse(again).images) == 3


def test_query_paper_on_the_quickstart(quickstart):
    rows = list(csv.DictReader(io.StringIO(ntklab("query", "--paper", "fig1", "-f", "csv", home=quickstart,
                                                  check=True).stdout)))
    steps = sorted({int(r["step"]) for r in rows})
    assert steps[:4] == [0, 14, 28, 42] and len(steps) <= 5  # every 14 steps, and the last one
    assert len(rows) == 2 * 2 * len(steps)  # lr x group x evaluation steps
    assert {r["n"] for r in rows} == {"2"} and {r["missing"] for r in rows} == {""}
    final = [float(r["mean"]) for r in rows if int(r["step"]) == steps[-1]]
    assert min(final) > 0.5, "two epochs should already classify digits"
    best = list(csv.DictReader(io.StringIO(ntklab("query", "--paper", "quickstart:best", "-f", "csv",
                                                  home=quickstart, check=True).stdout)))
    assert {r["metric"] for r in best} == {"test_accuracy", "test_loss"} and len(best) == 8
    listed = ntklab("query", "--paper", home=quickstart, check=True).stdout
    assert all(name in listed for name in ("fig1", "lr", "best"))


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = find_chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI=true but chromium is not installed: scripts/chromium.sh installs it")
        pytest.skip("chromium is not installed (apt-get install chromium, or scripts/chromium.sh as root)")
    screenshot = tmp_path / "report.png"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot = subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1280,2000", report.as_uri()],
                          check=False, capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    console = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    pixels = png_pixels(screenshot.read_bytes())
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05, "the screenshot is blank"
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], check=False, capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0
    assert "</html>" in dom.stdout and dom.stdout.count("data:image/png;base64,") == 3
    assert all(f'id="figure-{name}"' in dom.stdout for name in ("fig1", "lr", "best"))


def test_report_of_a_partial_experiment_shows_what_is_missing_and_escapes_text(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'partial.db'}")
    ensure_schema(engine)
    spec = ("name: partial\ndescription: <script>alert(1)</script> & more\ngroups:\n  g: {task: train}\n"
            "figures:\n  fig1: {x: model.width, y: test_accuracy, title: 'width <i>sweep</i>'}\n"
            "  fig2: {x: step, y: test_accuracy, where: 'model.width == 64'}\n"
            "  fig3: {x: model.width, y: test_accuracy, series: model.depth}\n")
    with writing(engine) as conn:
        experiment = sync_experiment(conn, "partial", "<script>alert(1)</script> & more", spec, "0" * 64, "p.yaml")
        ids = enqueue(conn, experiment, [PlanRow(f"r{w}{s}", "g", "train", {"model": {"width": w}, "seed": s})
                                         for w in (16, 64) for s in (0, 1)])
        write_metrics(conn, ids["r160"], [MetricPoint("test_accuracy", t, 0.5 + t / 100, 0.0) for t in (0, 10)])
        conn.execute(update(runs).where(runs.c.id == ids["r160"]).values(status=RunStatus.done))
        conn.execute(update(runs).where(runs.c.id == ids["r161"]).values(
            status=RunStatus.failed, error_type="ValueError", error_message="bad <b>input</b>",
            traceback="Traceback (most recent call last):\n  <frame>\nValueError: bad <b>input</b>"))
    with reading(engine) as conn:
        page = render_report(conn, "partial")
    parser = parse(page)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "width &lt;i&gt;sweep&lt;/i&gt;" in page and "bad &lt;b&gt;input&lt;/b&gt;" in page
    assert "This experiment is not finished: 3 of 4 runs are not done" in page
    assert "4 runs</strong>: 2 pending, 1 done, 1 failed" in page
    assert len(parser.images) == 1  # fig2 (width 64) has no finished run yet
    assert "Nothing to plot yet" in page
    assert "3 runs not in this figure yet: 2 pending, 1 failed" in page
    assert "<td>1 failed</td>" in page and "<td>2 pending</td>" in page  # fig1's missing column
    assert "ValueError: bad &lt;b&gt;input&lt;/b&gt;" in page and "&lt;frame&gt;" in page  # failures
    # A figure that cannot be computed says why, in its place, and the others still render.
    assert "figure partial:fig3: series: &#x27;model.depth&#x27; is not a param" in page


def test_plots_have_labels_legends_log_scales_and_bands(tmp_path):
    from ntklab.reports.plots import draw

    engine = open_engine(f"sqlite:///{tmp_path / 'plots.db'}")
    ensure_schema(engine)
    with writing(engine) as conn:
        experiment = sync_experiment(conn, "plots", "", "name: plots\n", "0" * 64, "p.yaml")
        configs = {f"r{i}{d}{s}": {"train": {"lr": lr}, "model": {"depth": d}, "seed": s}
                   for i, lr in enumerate((0.001, 0.01, 0.1, 1.0)) for d in (1, 2) for s in (0, 1, 2)}
        ids = enqueue(conn, experiment, [PlanRow(k, "g", "train", c) for k, c in configs.items()])
        for k, c in configs.items():
            lr, s = c["train"]["lr"], c["seed"]
            write_metrics(conn, ids[k], [MetricPoint("test_accuracy", t, 0.5 + 0.1 * s + lr * t / 10, 0.0)
                                         for t in (0, 5, 10)]
                          + [MetricPoint("train_loss", t, lr * (1 + s) / (1 + t), 0.0) for t in (0, 5, 10)])
        conn.execute(update(runs).values(status=RunStatus.done))
    with reading(engine) as conn:
        def drawn(**figure):
            return draw(figure_data(conn, FigureRef("plots", experiment, "f", Figure(**figure))))

        canvas = drawn(x="train.lr", y="test_accuracy", series="model.depth", title="Accuracy")
        (ax,) = canvas.axes
        assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"  # lr spans 3 decades
        assert ax.get_xlabel() == "learning rate (train.lr)" and ax.get_ylabel() == "test_accuracy (fraction correct)"
        assert len(ax.collections) == 2  # one band (mean ± std over seeds) per series
        (legend,) = canvas.legends
        assert legend.get_title().get_text() == "model.depth" and [t.get_text() for t in legend.texts] == ["1", "2"]
        assert canvas._suptitle.get_text() == "Accuracy"
        losses = drawn(x="step", y=["test_accuracy", "train_loss"], facet="model.depth", series="train.lr",
                       aggregate="mean_minmax")
        axes = losses.axes
        assert len(axes) == 4 and [a.get_title() for a in axes] == ["model.depth = 1", "model.depth = 2"] * 2
        assert axes[2].get_yscale() == "log" and axes[0].get_yscale() == "linear"  # losses span 3 decades
        assert axes[0].get_xlabel() == "step" and axes[0].get_xscale() == "linear"
        assert drawn(x="train.lr", y="test_accuracy", log_x=False).axes[0].get_xscale() == "linear"
        heat = drawn(x="train.lr", y="test_accuracy", series="model.depth", kind="heatmap")
        assert heat.axes[0].images and heat.axes[1].get_ylabel() == "test_accuracy (fraction correct)"  # colorbar
        bars = drawn(x="model.depth", y="train_loss", series="train.lr", kind="bar", step="best")
        assert len(bars.axes[0].patches) == 8
        assert drawn(x="train.lr", y="test_accuracy", kind="table") is None
