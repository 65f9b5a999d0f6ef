"""Figures as queries over a hand-built database, on SQLite and PostgreSQL: aggregation over seeds,
last vs best vs every step, missing runs per point, cross-run (baseline) values, figure names,
and the notebook API. Expected numbers are computed here with numpy from the inserted values."""

import json

import numpy as np
import pytest
from conftest import ntklab
from sqlalchemy import select, update

from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Experiment, Run, RunStatus
from ntklab.db.queue import PlanRow, enqueue, sync_experiment
from ntklab.db.records import MetricPoint, write_metrics
from ntklab.db.schema import ensure_schema
from ntklab.errors import UsageError
from ntklab.reports.figures import (
    FigureRef,
    figure_data,
    resolve_figure,
    stored_figures,
)
from ntklab.spec.models import Figure

runs = Run.__table__
experiments = Experiment.__table__
WIDTHS = (16, 64)
LRS = (0.1, 1.0)
SEEDS = (0, 1, 2)
STEPS = (0, 10, 20)
# Runs that are not (fully) in the figures: (width, lr, seed) -> status; "nometric" is done
# without a test_accuracy series.
SPECIAL = {(64, 1.0, 2): "failed", (64, 1.0, 1): "pending", (16, 0.1, 2): "diverged", (16, 1.0, 2): "nometric"}
ORDERS = (0, 1, 2)

SPEC = """\
name: {name}
groups:
  net: {{task: train}}
figures:
  acc: {{x: model.width, y: test_accuracy, series: train.lr}}
  best: {{x: model.width, y: test_accuracy, series: train.lr, step: best, aggregate: mean_minmax}}
  curve: {{x: step, y: [test_accuracy, test_loss], series: train.lr, where: "model.width == 16"}}
  shared: {{x: model.width, y: test_loss}}
"""


def accuracy(width: int, lr: float, seed: int, step: int) -> float:
    """Rises, then drops at the last step: the last value is never the best one."""
    base = 0.5 + 0.001 * width + 0.1 * lr + 0.013 * seed
    return base + {0: 0.0, 10: 0.3, 20: 0.2}[step] + 0.0007 * seed * step


def loss(width: int, lr: float, seed: int, step: int) -> float:
    return 2.0 / (1 + step) + 0.01 * width / 16 + 0.05 * seed + lr


def key(*parts) -> str:
    return "k_" + "_".join(str(p) for p in parts)


@pytest.fixture
def engine(db_url):
    """Experiment `sweep` (width x lr x seed, with failed, pending, diverged and metric-less runs),
    experiment `other` (also declares `shared`), and `taylor` (orders 0..2 x seeds, for baselines)."""
    engine = open_engine(db_url)
    ensure_schema(engine)
    with writing(engine) as conn:
        sweep = sync_experiment(conn, "sweep", "", SPEC.format(name="sweep"), "0" * 64, "sweep.yaml")
        rows = [PlanRow(key(w, lr, s), "net", "train", {"model": {"width": w}, "train": {"lr": lr}, "seed": s})
                for w in WIDTHS for lr in LRS for s in SEEDS]
        ids = enqueue(conn, sweep, rows)
        for (w, lr, s) in [(w, lr, s) for w in WIDTHS for lr in LRS for s in SEEDS]:
            special = SPECIAL.get((w, lr, s))
            points = [MetricPoint("test_loss", t, loss(w, lr, s, t), 0.0) for t in STEPS]
            if special != "nometric":
                points += [MetricPoint("test_accuracy", t, accuracy(w, lr, s, t), 0.0) for t in STEPS]
            if special not in ("failed", "pending"):
                write_metrics(conn, ids[key(w, lr, s)], points)
            status = {"nometric": "done", None: "done"}.get(special, special)
            conn.execute(update(runs).where(runs.c.id == ids[key(w, lr, s)])
                         .values(status=RunStatus(status), error_type="ValueError" if status == "failed" else None,
                                 error_message="boom" if status == "failed" else None))
        other = sync_experiment(conn, "other", "", SPEC.format(name="other"), "1" * 64, "other.yaml")
        enqueue(conn, other, [PlanRow(key("o"), "net", "train", {"model": {"width": 8}, "train": {"lr": 0.5},
                                                                 "seed": 0})])
        taylor = sync_experiment(conn, "taylor", "", "name: taylor\n", "2" * 64, "taylor.yaml")
        rows = [PlanRow(key("t", o, s), "taylor", "train", {"train": {"order": o, "lr": 0.1}, "seed": s})
                for o in ORDERS for s in SEEDS]
        tids = enqueue(conn, taylor, rows)
        for o in ORDERS:
            for s in SEEDS:
                if (o, s) == (0, 2):
                    continue  # the baseline of seed 2 is still pending
                write_metrics(conn, tids[key("t", o, s)],
                              [MetricPoint("logit", t, taylor_logit(o, s, t), 0.0) for t in STEPS])
                conn.execute(update(runs).where(runs.c.id == tids[key("t", o, s)]).values(status=RunStatus.done))
    return engine


def taylor_logit(order: int, seed: int, step: int) -> float:
    return 1.0 + 0.1 * seed + step * (0.05 + 0.02 * order) + 0.003 * order * seed * step


def data_of(engine, name: str):
    with reading(engine) as conn:
        return figure_data(conn, resolve_figure(conn, name))


def query(engine, experiment: str, **figure):
    with reading(engine) as conn:
        experiment_id = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).scalar_one()
        return figure_data(conn, FigureRef(experiment, experiment_id, "test", Figure(**figure)))


def done_values(metric, step: str, width: int, lr: float) -> list[float]:
    """The values a point aggregates: its done runs that have the metric, by hand."""
    found = []
    for s in SEEDS:
        special = SPECIAL.get((width, lr, s))
        if special is not None:
            continue
        series = [metric(width, lr, s, t) for t in STEPS]
        found.append({"last": series[-1], "max": max(series), "min": min(series)}[step])
    return found


def sample_std(values: list[float]):
    """What a point's std must be: numpy's with ddof=1, none for a single run."""
    return pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-12) if len(values) > 1 else None


def rows_by(data, *columns):
    index = [data.columns.index(c) for c in columns]
    return {tuple(row[i] for i in index): dict(zip(data.columns, row)) for row in data.rows}


def test_last_step_mean_and_sample_std_over_seeds_with_missing_runs(engine):
    data = data_of(engine, "sweep:acc")
    assert data.columns == ["train.lr", "model.width", "mean", "std", "n", "missing"]
    assert len(data.rows) == 4
    table = rows_by(data, "train.lr", "model.width")
    for w in WIDTHS:
        for lr in LRS:
            values = done_values(accuracy, "last", w, lr)
            row = table[(lr, w)]
            assert row["n"] == len(values)
            assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert row["std"] == sample_std(values)
    assert table[(1.0, 64)]["n"] == 1 and table[(1.0, 64)]["std"] is None
    assert table[(1.0, 64)]["missing"] == "1 pending, 1 failed"
    assert table[(0.1, 16)]["missing"] == "1 diverged"
    assert table[(1.0, 16)]["missing"] == "1 no value"
    assert table[(0.1, 64)]["missing"] == ""
    assert data.counts == {"done": 9, "pending": 1, "failed": 1, "diverged": 1}
    reasons = sorted((m.reason, m.error) for m in data.missing)
    assert reasons == [("diverged", None), ("failed", "ValueError: boom"), ("pending", None)]
    assert data.pooled == [] and "pool" not in data.describe()
    pooled = data_of(engine, "sweep:shared")  # x: model.width only, so each point mixes both learning rates
    assert pooled.pooled == ["train.lr"] and "differ in train.lr" in pooled.describe()
    assert rows_by(pooled, "model.width")[(16,)]["n"] == 5  # 6 runs, one diverged


def test_best_step_is_the_maximum_for_accuracy_and_min_max_spread(engine):
    data = data_of(engine, "sweep:best")
    assert data.columns == ["train.lr", "model.width", "mean", "min", "max", "n", "missing"]
    assert data.selection == {"test_accuracy": "max"}
    table = rows_by(data, "train.lr", "model.width")
    for w in WIDTHS:
        for lr in LRS:
            values = done_values(accuracy, "max", w, lr)
            last = done_values(accuracy, "last", w, lr)
            row = table[(lr, w)]
            assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert row["mean"] > np.mean(last) + 0.05  # best is not last
            assert (row["min"], row["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))
            assert row["n"] == len(values)


def test_loss_best_is_its_minimum(engine):
    data = query(engine, "sweep", x="model.width", y="test_loss", step="best", series="train.lr")
    table = rows_by(data, "train.lr", "model.width")
    for w in WIDTHS:
        for lr in LRS:
            values = done_values(loss, "min", w, lr) + ([loss(w, lr, 2, 20)] if (w, lr) == (16, 1.0) else [])
            assert table[(lr, w)]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    with pytest.raises(UsageError, match="best: max or best: min"):
        query(engine, "taylor", x="train.order", y="logit", step="best")
    with pytest.raises(UsageError, match="no run has logged a metric named 'test_acuracy'; did you mean test_accuracy"):
        query(engine, "sweep", x="model.width", y="test_acuracy")


def test_every_step_aggregates_each_step_and_filters_by_where(engine):
    data = data_of(engine, "sweep:curve")
    assert data.columns == ["train.lr", "step", "metric", "mean", "std", "n", "missing"]
    table = rows_by(data, "train.lr", "step", "metric")
    assert len(table) == len(LRS) * len(STEPS) * 2  # width 64 is filtered out by `where`
    for lr in LRS:
        for step in STEPS:
            for name, metric in (("test_accuracy", accuracy), ("test_loss", loss)):
                seeds = [s for s in SEEDS if SPECIAL.get((16, lr, s)) is None
                         or (name == "test_loss" and SPECIAL[(16, lr, s)] == "nometric")]
                values = [metric(16, lr, s, step) for s in seeds]
                row = table[(lr, step, name)]
                assert row["n"] == len(values)
                assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
                assert row["std"] == sample_std(values)
    assert table[(0.1, 10, "test_accuracy")]["missing"] == "1 diverged"
    assert table[(1.0, 10, "test_accuracy")]["missing"] == "1 no value"
    assert table[(1.0, 10, "test_loss")]["missing"] == ""


def test_aggregate_none_lists_every_run(engine):
    data = query(engine, "sweep", x="model.width", y="test_accuracy", aggregate="none", where="train.lr == 0.1")
    assert data.columns == ["model.width", "run", "step", "value", "n", "missing"]
    found = {(r[1], r[2]): r[3] for r in data.rows if r[1] is not None}
    expected = {(key(w, 0.1, s), 20): accuracy(w, 0.1, s, 20) for w in WIDTHS for s in SEEDS
                if SPECIAL.get((w, 0.1, s)) is None}
    assert found == pytest.approx(expected)
    assert [r[-1] for r in data.rows if r[1] is None] == ["1 diverged"]


def test_x_may_be_a_metric(engine):
    data = query(engine, "sweep", x="test_loss", y="test_accuracy", kind="scatter", series="model.width",
                 where="train.lr == 1.0 and model.width == 16")
    (row,) = [r for r in data.rows if r[2] is not None]
    seeds = [0, 1]
    assert row[1] == pytest.approx(np.mean([loss(16, 1.0, s, 20) for s in seeds]))
    assert row[2] == pytest.approx(np.mean([accuracy(16, 1.0, s, 20) for s in seeds]))
    best = query(engine, "sweep", x="test_loss", y="test_accuracy", kind="scatter", step="best",
                 where="train.lr == 1.0 and model.width == 16")
    # the best accuracy is at step 10: x is the loss at that step, read from the series
    assert best.rows[0][0] == pytest.approx(np.mean([loss(16, 1.0, s, 10) for s in seeds]))


def test_baseline_differences_at_the_same_step(engine):
    data = query(engine, "taylor", x="step", y="logit", series="train.order", relative_to={"train.order": 0})
    table = rows_by(data, "train.order", "step")
    assert {o for o, _ in table} == {1, 2}  # the baseline runs are not plotted
    for o in (1, 2):
        for step in STEPS:
            values = [taylor_logit(o, s, step) - taylor_logit(0, s, step) for s in (0, 1)]
            row = table[(o, step)]
            assert row["mean"] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-12)
            assert row["std"] == sample_std(values)
            assert row["n"] == 2 and row["missing"] == "1 no baseline"
    ratio = query(engine, "taylor", x="train.order", y="logit", relative_to={"train.order": 0}, relation="ratio")
    table = rows_by(ratio, "train.order")
    for o in (1, 2):
        values = [taylor_logit(o, s, 20) / taylor_logit(0, s, 20) for s in (0, 1)]
        assert table[(o,)]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert "baseline" in ratio.describe()


def test_figure_names_unknown_ambiguous_and_listed(engine):
    with reading(engine) as conn:
        listed = sorted(f.qualified for f in stored_figures(conn).figures)
        assert listed == sorted([f"{e}:{n}" for e in ("other", "sweep") for n in ("acc", "best", "curve", "shared")])
        with pytest.raises(UsageError, match=r"several experiments: other:acc, sweep:acc; name one as EXPERIMENT:FIGURE"):
            resolve_figure(conn, "acc")
        assert resolve_figure(conn, "sweep:acc").experiment == "sweep"
        with pytest.raises(UsageError, match=r"no figure named 'acx'; did you mean acc"):
            resolve_figure(conn, "acx")
        with pytest.raises(UsageError, match=r"no experiment named 'nope'; known: other, sweep, taylor"):
            resolve_figure(conn, "nope:acc")
        with pytest.raises(UsageError, match=r"experiment 'taylor' declares no figures"):
            resolve_figure(conn, "taylor:acc")


def test_figure_model_rules():
    assert Figure(x="step", y="a").step == "all"
    assert Figure(x="lr", y="a").step == "last"
    for bad, message in [
        ({"x": "step", "y": "a", "step": "last"}, "x: step plots every evaluation step"),
        ({"x": "w", "y": "a", "best": "max"}, "set step: best"),
        ({"x": "w", "y": "a", "kind": "heatmap"}, "heatmap needs"),
        ({"x": "w", "y": ["a", "a"]}, "named twice"),
        ({"x": "w", "y": "a", "series": "w"}, "must be different"),
        ({"x": "w", "y": "a", "relation": "ratio"}, "only with relative_to"),
        ({"x": "w", "y": "a", "relative_to": {}}, "at least one param"),
    ]:
        with pytest.raises(ValueError, match=message):
            Figure(**bad)


def test_cli_paper_tables_and_name_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'figures.db'}"
    engine = open_engine(url)
    ensure_schema(engine)
    with writing(engine) as conn:
        for name in ("sweep", "other"):
            experiment = sync_experiment(conn, name, "", SPEC.format(name=name), "0" * 64, f"{name}.yaml")
            ids = enqueue(conn, experiment, [PlanRow(key(name, s), "net", "train",
                                                     {"model": {"width": 16}, "train": {"lr": 0.1}, "seed": s})
                                             for s in SEEDS])
            for s in SEEDS[:2]:
                write_metrics(conn, ids[key(name, s)], [MetricPoint("test_accuracy", 5, 0.5 + 0.1 * s, 0.0)])
                conn.execute(update(runs).where(runs.c.id == ids[key(name, s)]).values(status=RunStatus.done))
    home = tmp_path
    listed = ntklab("query", "--paper", "-f", "json", home=home, db=url, check=True)
    assert {(f["experiment"], f["figure"]) for f in json.loads(listed.stdout)} == {
        (e, n) for e in ("sweep", "other") for n in ("acc", "best", "curve", "shared")}
    table = ntklab("query", "--paper", "sweep:acc", "-f", "json", home=home, db=url, check=True)
    assert json.loads(table.stdout) == [{"train.lr": 0.1, "model.width": 16, "mean": pytest.approx(0.55),
                                         "std": pytest.approx(np.std([0.5, 0.6], ddof=1)), "n": 2,
                                         "missing": "1 pending"}]
    assert "1 of 3 runs are not in the figure yet: 1 pending" in table.stderr
    same = ntklab("query", "--paper", "acc", "-e", "sweep", "-f", "json", home=home, db=url, check=True)
    assert json.loads(same.stdout) == json.loads(table.stdout)
    ambiguous = ntklab("query", "--paper", "acc", home=home, db=url)
    assert ambiguous.returncode == 2
    assert "several experiments: other:acc, sweep:acc" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    unknown = ntklab("query", "--paper", "fig9", home=home, db=url)
    assert unknown.returncode == 2 and "no figure named 'fig9'" in unknown.stderr
    assert "sweep:acc" in unknown.stderr
    mixed = ntklab("query", "--paper", "sweep:acc", "-w", "seed == 1", home=home, db=url)
    assert mixed.returncode == 2 and "do not apply" in mixed.stderr


def test_notebook_api_records_and_frames(engine):
    from ntklab.reports.api import load_experiment

    exp = load_experiment("taylor", engine=engine)
    assert len(exp.runs) == len(ORDERS) * len(SEEDS)
    statuses = {r["key"]: r["status"] for r in exp.runs}
    assert statuses[key("t", 0, 2)] == "pending" and statuses[key("t", 1, 1)] == "done"
    params = {p["key"]: p for p in exp.params}
    assert params[key("t", 2, 1)]["train.order"] == 2 and params[key("t", 2, 1)]["seed"] == 1
    points = {(m["key"], m["step"]): m["value"] for m in exp.series(["logit"])}
    assert points[(key("t", 2, 1), 10)] == pytest.approx(taylor_logit(2, 1, 10))
    assert len(exp.metrics) == 8 * len(STEPS)
    last = {s["key"]: s["last"] for s in exp.summaries}
    assert last[key("t", 1, 0)] == pytest.approx(taylor_logit(1, 0, 20))
    pandas = pytest.importorskip("pandas")
    frame = exp.to_pandas()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == 9
    assert frame.loc[key("t", 1, 0), "logit"] == pytest.approx(taylor_logit(1, 0, 20))
    assert frame.loc[key("t", 1, 0), "train.order"] == 1
    assert set(exp.frames()) == {"runs", "params", "summaries", "metrics"}
