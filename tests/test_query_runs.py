"""Run listings on SQLite and PostgreSQL: default columns (only what differs), explicit columns,
selection by experiment, group, status and filter, limits, errors, and batched fetching."""

import json

import pytest
from sqlalchemy import event, update

from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Run, RunStatus
from ntklab.db.queue import PlanRow, enqueue, sync_experiment
from ntklab.db.records import MetricPoint, write_metrics
from ntklab.db.schema import ensure_schema
from ntklab.errors import UsageError
from ntklab.reports import records
from ntklab.reports import runs as listing
from ntklab.reports.filters import FilterError, MetricField, ParamField, Vocabulary, field_label, parse_field
from ntklab.reports.runs import list_runs

runs = Run.__table__
SPREAD = "dist_init/layers.0.weight"
COMMON = {"test_accuracy": 0.9, "test_loss": 0.3, "train_loss": 0.2, "zeta": 1.0, SPREAD: 2.0}


def config(arch: str, width: int, lr: float, seed: int, **model) -> dict:
    return {"data": {"dataset": "digits"}, "model": {"arch": arch, "width": width, **model},
            "train": {"lr": lr, "epochs": 8}, "seed": seed}


SWEEP = {
    "r0": ("mlp", config("mlp", 64, 0.1, 0)),
    "r1": ("mlp", config("mlp", 128, 0.1, 1)),
    "r2": ("cnn", config("cnn", 64, 0.5, 0, channels=16, padding="SAME")),
    "r3": ("cnn", config("cnn", 64, 0.5, 1, channels=32, padding="SAME")),
    "r4": ("mlp", config("mlp", 256, 1.0, 2)),
}
MANY = {
    "m0": ("g", {"flag": True, "shape": [1, 2], **{f"k{i:02}": 0 for i in range(10)}}),
    "m1": ("g", {"flag": False, "shape": [3], **{f"k{i:02}": 1 for i in range(10)}}),
}
EXTRA = {"r0": ("extra", SWEEP["r0"][1]), "r1": ("extra", SWEEP["r1"][1])}


@pytest.fixture
def engine(db_url):
    """Experiments sweep (r0..r4; r1 also in its group extra), many (m0, m1) and other (r0)."""
    engine = open_engine(db_url)
    ensure_schema(engine)
    with writing(engine) as conn:
        ids: dict[str, int] = {}
        for name, members in [("sweep", SWEEP), ("many", MANY), ("other", {"r0": EXTRA["r0"]})]:
            experiment_id = sync_experiment(conn, name, "", "spec", "0" * 64, f"{name}.yaml")
            ids |= enqueue(conn, experiment_id, [PlanRow(k, g, "train", c) for k, (g, c) in members.items()])
        sweep_id = sync_experiment(conn, "sweep", "", "spec", "0" * 64, "sweep.yaml")
        enqueue(conn, sweep_id, [PlanRow("r1", "extra", "train", SWEEP["r1"][1])])
        for n, key in enumerate(["r0", "r1", "r2", "r3"]):
            points = [MetricPoint(name, 1, value + n, 0.0) for name, value in COMMON.items()]
            write_metrics(conn, ids[key], points + [MetricPoint(name, 0, -1.0, 0.0) for name in COMMON])
        write_metrics(conn, ids["r0"], [MetricPoint("grad_norm", 1, 5.0, 0.0)])
        for key, status in [("r0", "done"), ("r1", "done"), ("r2", "done"), ("r3", "diverged")]:
            conn.execute(update(runs).where(runs.c.id == ids[key]).values(status=RunStatus(status)))
    yield engine
    engine.dispose()


def listed(engine, **options) -> listing.RunTable:
    with reading(engine) as conn:
        return list_runs(conn, **options)


def column(table: listing.RunTable, name: str) -> list:
    index = table.columns.index(name)
    return [row[index] for row in table.rows]


def test_default_columns_show_only_differing_params_and_common_metrics(engine):
    table = listed(engine, experiment="sweep")
    assert table.columns == ["key", "group", "status", "model.arch", "model.channels", "model.padding", "model.width",
                             "seed", "train.lr", "test_accuracy", "test_loss", "train_loss", "zeta"]
    assert column(table, "key") == ["r0", "r1", "r2", "r3", "r4"]
    assert column(table, "group") == ["mlp", "extra, mlp", "cnn", "cnn", "mlp"]
    assert column(table, "status") == ["done", "done", "done", "diverged", "pending"]
    assert column(table, "model.width") == [64, 128, 64, 64, 256]
    assert column(table, "model.channels") == [None, None, 16, 32, None]
    assert column(table, "model.padding") == [None, None, "SAME", "SAME", None]
    assert column(table, "train.lr") == [0.1, 0.1, 0.5, 0.5, 1.0]
    assert column(table, "test_accuracy") == [0.9, 1.9, 2.9, 3.9, None]


def test_params_and_metrics_are_capped(engine):
    table = listed(engine, experiment="many")
    params = table.columns[3:]
    assert len(params) == listing.MAX_PARAMS
    assert params == ["flag", "k00", "k01", "k02", "k03", "k04", "k05", "k06"]
    assert table.rows[0][3:5] == [True, 0]
    metrics = listed(engine, experiment="sweep").columns[-listing.MAX_METRICS:]
    assert metrics == ["test_accuracy", "test_loss", "train_loss", "zeta"]


def test_without_an_experiment_each_run_is_listed_once(engine):
    table = listed(engine)
    assert table.columns[:4] == ["key", "experiment", "group", "status"]
    assert column(table, "key") == ["r0", "r1", "r2", "r3", "r4", "m0", "m1"]
    assert column(table, "experiment")[:2] == ["other, sweep", "sweep"]
    assert column(table, "group")[:2] == ["extra, mlp", "extra, mlp"]


def test_explicit_columns(engine):
    columns = ["key", "status", "train.lr", "test_accuracy.max", f'metric("{SPREAD}").min', "param.seed",
               "started_at", "experiment", "group", "shape"]
    table = listed(engine, columns=columns, where="key in ['r2', 'm0']")
    assert table.columns == columns
    assert table.rows == [
        ["r2", "done", 0.5, 2.9, -1.0, 0, None, "sweep", "cnn", None],
        ["m0", "pending", None, None, None, None, None, "many", "g", [1, 2]],
    ]


def test_timestamps_are_iso_strings_and_rows_are_json(engine):
    table = listed(engine, experiment="sweep", columns=["key", "created_at"])
    created = column(table, "created_at")[0]
    assert isinstance(created, str) and created[:4].isdigit() and "T" in created
    json.dumps(listed(engine).rows)


def test_selection_by_group_status_and_filter(engine):
    assert column(listed(engine, experiment="sweep", groups=["cnn"]), "key") == ["r2", "r3"]
    assert column(listed(engine, experiment="sweep", statuses=["done", "pending"]), "key") == ["r0", "r1", "r2", "r4"]
    table = listed(engine, experiment="sweep", where="train.lr >= 0.5 and test_accuracy.max > 3")
    assert column(table, "key") == ["r3"]
    both = listed(engine, experiment="sweep", groups=["mlp", "cnn"], statuses=["done"], where="model.width == 64")
    assert column(both, "key") == ["r0", "r2"]


def test_groups_are_those_within_the_chosen_experiment(engine):
    table = listed(engine, experiment="other")
    assert column(table, "key") == ["r0"] and column(table, "group") == ["extra"]
    assert column(listed(engine, experiment="sweep", groups=["extra"]), "group") == ["extra"]
    assert column(listed(engine, experiment="sweep", where="group == 'extra'"), "key") == ["r1"]
    assert column(listed(engine, experiment="other", where="group == 'mlp'"), "key") == []


def test_limit_keeps_the_first_runs_and_their_differences(engine):
    table = listed(engine, experiment="sweep", limit=2)
    assert column(table, "key") == ["r0", "r1"]
    assert table.columns == ["key", "group", "status", "model.width", "seed", "test_accuracy", "test_loss",
                             "train_loss", "zeta"]
    assert listed(engine, experiment="sweep", limit=0).rows == []
    with pytest.raises(UsageError, match="zero or more"):
        listed(engine, limit=-1)


@pytest.mark.parametrize(("options", "error", "fragments"), [
    ({"experiment": "swep"}, UsageError, ["swep", "many", "sweep"]),
    ({"experiment": "sweep", "groups": ["mpl"]}, UsageError, ["'mpl'", "cnn, extra, mlp"]),
    ({"statuses": ["finished"]}, UsageError, ["unknown status 'finished'", "done"]),
    ({"where": "train.lrr > 1"}, FilterError, ["unknown field 'train.lrr'", "train.lr"]),
    ({"columns": ["key", "test_acc"]}, FilterError, ["unknown field 'test_acc'", "test_accuracy"]),
])
def test_bad_requests_are_usage_errors(engine, options, error, fragments):
    with pytest.raises(error) as caught:
        listed(engine, **options)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_headers_name_their_columns_again(engine):
    table = listed(engine, experiment="sweep")
    assert listed(engine, experiment="sweep", columns=table.columns) == table
    with reading(engine) as conn:
        vocabulary = Vocabulary.load(conn)
    for field in [MetricField(SPREAD, "max"), MetricField("test_accuracy", "min"), ParamField("model.width")]:
        assert parse_field(field_label(field, vocabulary), vocabulary) == field
    assert field_label(MetricField(SPREAD, "max"), vocabulary) == f'metric("{SPREAD}").max'


def test_queries_do_not_grow_with_the_runs(engine):
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    counts = []
    for limit in (2, None):
        statements.clear()
        listed(engine, experiment="sweep", limit=limit)
        counts.append(len(statements))
    assert counts[0] == counts[1]


def test_chunked_fetches_give_the_same_table(engine, monkeypatch):
    whole = listed(engine)
    monkeypatch.setattr(records, "CHUNK", 2)
    assert listed(engine) == whole
