"""The filter language on SQLite and PostgreSQL: every operator, precedence, params of each type,
metric summaries, run attributes, memberships, error messages and literal-only values.

The database is built once per backend and module (filters only read it). PostgreSQL runs when
NTKLAB_TEST_PG_URL is set, and must run in CI.
"""

import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from conftest import postgres_admin_url
from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Experiment, Run, RunStatus
from ntklab.db.queue import PlanRow, enqueue, sync_experiment
from ntklab.db.records import MetricPoint, write_metrics
from ntklab.db.schema import ensure_schema
from ntklab.errors import UsageError
from ntklab.reports.filters import FilterError, compile_filter

runs = Run.__table__
NOTE = """it's "quoted"'; DROP TABLE runs; --"""
SPREAD = "dist_init/layers.0.weight"

CONFIGS = {
    "r0": {"model": {"arch": "mlp", "width": 64}, "train": {"lr": 0.05, "augment": True}, "seed": 0, "note": NOTE},
    "r1": {"model": {"arch": "mlp", "width": 128}, "train": {"lr": 0.1, "augment": False}, "seed": 1},
    "r2": {"model": {"arch": "cnn", "width": 64, "channels": 16}, "train": {"lr": 0.5, "augment": True}, "seed": 0},
    "r3": {"model": {"arch": "cnn", "width": 256, "channels": 32}, "train": {"lr": 1.0, "augment": False}, "seed": 1,
           "tags": ["wide"]},
    "r4": {"model": {"arch": "mlp", "width": 64}, "train": {"augment": True}, "seed": 2},
    "r5": {"model": {"arch": "resnet", "width": 512}, "train": {"lr": "auto"}, "seed": 3},
}
MEMBERSHIP = {"sweep": {"r0": "mlp", "r1": "mlp", "r4": "mlp", "r2": "cnn", "r3": "cnn"},
              "other": {"r1": "extra", "r5": "extra"}}
METRICS = {
    "r0": {"test_accuracy": [0.5, 0.9, 0.8], SPREAD: [1.5]},
    "r1": {"test_accuracy": [0.6, 0.7], SPREAD: [3.0]},
    "r2": {"test_accuracy": [0.95]},
    "r3": {"test_accuracy": [None], "train_loss": [2.0]},
}
STATES = {
    "r0": {"status": RunStatus.done, "started_at": datetime(2026, 1, 1), "finished_at": datetime(2026, 1, 1, 1)},
    "r1": {"status": RunStatus.done, "started_at": datetime(2026, 1, 2), "finished_at": datetime(2026, 1, 2, 1)},
    "r2": {"status": RunStatus.failed, "started_at": datetime(2026, 1, 3), "error_type": "FloatingPointError"},
    "r3": {"status": RunStatus.diverged, "started_at": datetime(2026, 1, 4)},
    "r5": {"status": RunStatus.running, "started_at": datetime(2026, 1, 6), "host": "node1", "worker_id": "w1"},
}
ALL = set(CONFIGS)


def populate(engine) -> None:
    """Six runs (keys r0..r5) in two experiments; r1 is in both."""
    ensure_schema(engine)
    with writing(engine) as conn:
        ids: dict[str, int] = {}
        for experiment, groups in MEMBERSHIP.items():
            experiment_id = sync_experiment(conn, experiment, "", "spec", "0" * 64, f"{experiment}.yaml")
            rows = [PlanRow(key, group, "train", CONFIGS[key]) for key, group in groups.items()]
            ids |= enqueue(conn, experiment_id, rows)
        for key, series in METRICS.items():
            points = [MetricPoint(name, step, value, 0.0) for name, values in series.items()
                      for step, value in enumerate(values)]
            write_metrics(conn, ids[key], points)
        for key, values in STATES.items():
            conn.execute(update(runs).where(runs.c.id == ids[key]).values(**values))


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory):
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('filters') / 'ntklab.db'}")
    populate(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path_factory):
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_engine")
        return
    admin = open_engine(make_url(postgres_admin_url()).set(drivername="postgresql+psycopg").render_as_string(False))
    name = f"ntklab_filters_{uuid.uuid4().hex[:12]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = open_engine(admin.url.set(database=name).render_as_string(False))
    try:
        populate(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def matching(engine, expression: str, **options) -> set[str]:
    with reading(engine) as conn:
        condition = compile_filter(expression, conn, **options)
        return set(conn.execute(select(runs.c.key).where(condition)).scalars())


def filter_error(engine, expression: str) -> str:
    with reading(engine) as conn, pytest.raises(FilterError) as caught:
        compile_filter(expression, conn)
    return str(caught.value)


@pytest.mark.parametrize(("expression", "expected"), [
    ("model.arch == 'mlp'", {"r0", "r1", "r4"}),
    ('model.arch != "mlp"', {"r2", "r3", "r5"}),
    ("train.lr < 0.5", {"r0", "r1"}),
    ("train.lr <= 0.5", {"r0", "r1", "r2"}),
    ("train.lr > 0.5", {"r3"}),
    ("train.lr >= 0.5", {"r2", "r3"}),
    ("train.lr > -1", {"r0", "r1", "r2", "r3"}),
    ("train.lr == 'auto'", {"r5"}),
    ("model.width == 64", {"r0", "r2", "r4"}),
    ("model.arch >= 'mlp'", {"r0", "r1", "r4", "r5"}),
])
def test_comparison_operators(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("0.1 <= train.lr < 1", {"r1", "r2"}),
    ("0.05 < train.lr <= 1.0", {"r1", "r2", "r3"}),
    ("1 > train.lr", {"r0", "r1", "r2"}),
    ("0.5 == train.lr", {"r2"}),
])
def test_chained_and_reversed_comparisons(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("model.width in [64, 512]", {"r0", "r2", "r4", "r5"}),
    ("model.width not in [64, 512]", {"r1", "r3"}),
    ("model.arch in ('cnn', 'resnet')", {"r2", "r3", "r5"}),
    ("model.arch not in ['mlp']", {"r2", "r3", "r5"}),
    ("train.lr in [0.05, 'auto']", {"r0", "r5"}),
    ("train.lr not in [0.05, 'auto']", {"r1", "r2", "r3"}),
    ("train.lr in [0.1, None]", {"r1", "r4"}),
    ("train.lr not in [0.1, None]", {"r0", "r2", "r3", "r5"}),
    ("model.arch in []", set()),
])
def test_in_and_not_in(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("train.augment == True", {"r0", "r2", "r4"}),
    ("train.augment == true", {"r0", "r2", "r4"}),
    ("train.augment == false", {"r1", "r3"}),
    ("train.augment", {"r0", "r2", "r4"}),
    ("not train.augment", {"r1", "r3", "r5"}),
    ("train.augment != True", {"r1", "r3"}),
    ("train.augment in [false]", {"r1", "r3"}),
])
def test_boolean_params(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("model.arch == 'cnn' or model.arch == 'mlp' and seed == 0", {"r0", "r2", "r3"}),
    ("(model.arch == 'cnn' or model.arch == 'mlp') and seed == 0", {"r0", "r2"}),
    ("not model.arch == 'mlp' and seed == 1", {"r3"}),
    ("not (model.arch == 'mlp' and seed == 1)", ALL - {"r1"}),
    ("not (train.lr < 0.1)", ALL - {"r0"}),
    ("not not train.lr < 0.1", {"r0"}),
    ("(model.arch == 'mlp'\n or model.arch == 'resnet')", {"r0", "r1", "r4", "r5"}),
])
def test_and_or_not_precedence(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("train.lr is None", {"r4"}),
    ("train.lr == None", {"r4"}),
    ("train.lr == null", {"r4"}),
    ("train.lr is not None", ALL - {"r4"}),
    ("train.lr != None", ALL - {"r4"}),
    ("model.channels is None", {"r0", "r1", "r4", "r5"}),
    ("tags is not None", {"r3"}),
    ("test_accuracy is None", {"r3", "r4", "r5"}),
    ("finished_at is None", {"r2", "r3", "r4", "r5"}),
    ("host is not None", {"r5"}),
])
def test_none(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("test_accuracy > 0.75", {"r0", "r2"}),
    ("test_accuracy.last > 0.75", {"r0", "r2"}),
    ("test_accuracy.max >= 0.9", {"r0", "r2"}),
    ("test_accuracy.min < 0.55", {"r0"}),
    ("metric.test_accuracy.last == 0.7", {"r1"}),
    ("metric.test_accuracy > 0.9", {"r2"}),
    ("test_accuracy != 0.8", {"r1", "r2", "r3"}),
    ("train_loss.max == 2", {"r3"}),
    (f'metric("{SPREAD}") > 2', {"r1"}),
    (f'metric("{SPREAD}", "min") < 2', {"r0"}),
    (f"metric('{SPREAD}', 'max') in [1.5, 3]", {"r0", "r1"}),
    (f'metric("{SPREAD}").min < 2', {"r0"}),
    ('metric("test_accuracy").max >= 0.9', {"r0", "r2"}),
])
def test_metrics(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("status == 'done'", {"r0", "r1"}),
    ("run.status == 'pending'", {"r4"}),
    ("status != 'done'", {"r2", "r3", "r4", "r5"}),
    ("status in ['failed', 'diverged']", {"r2", "r3"}),
    ("status not in ['failed', 'diverged', 'done']", {"r4", "r5"}),
    ("host == 'node1'", {"r5"}),
    ("not host == 'node1'", ALL - {"r5"}),
    ("host != 'node1'", ALL - {"r5"}),
    ("worker == 'w1'", {"r5"}),
    ("error_type == 'FloatingPointError'", {"r2"}),
    ("task == 'train' and attempts == 0", ALL),
    ("key == 'r3'", {"r3"}),
    ("started_at >= '2026-01-03'", {"r2", "r3", "r5"}),
    ("started_at < '2026-01-02T01:00+02:00'", {"r0"}),
    ("finished_at > '2026-01-01T00:30:00'", {"r0", "r1"}),
])
def test_run_attributes(engine, expression, expected):
    assert matching(engine, expression) == expected


@pytest.mark.parametrize(("expression", "expected"), [
    ("group == 'mlp'", {"r0", "r1", "r4"}),
    ("group == 'extra'", {"r1", "r5"}),
    ("group != 'mlp'", {"r2", "r3", "r5"}),
    ("group in ['cnn', 'extra']", {"r1", "r2", "r3", "r5"}),
    ("group not in ['cnn', 'extra']", {"r0", "r4"}),
    ("experiment == 'other'", {"r1", "r5"}),
    ("experiment != 'sweep'", {"r5"}),
    ("experiment == 'sweep' and group == 'extra'", {"r1"}),
])
def test_groups_and_experiments(engine, expression, expected):
    assert matching(engine, expression) == expected


def test_group_within_an_experiment(engine):
    with reading(engine) as conn:
        sweep = conn.execute(select(Experiment.id).where(Experiment.name == "sweep")).scalar_one()
    assert matching(engine, "group == 'extra'", experiment_id=sweep) == set()
    assert matching(engine, "group == 'mlp'", experiment_id=sweep) == {"r0", "r1", "r4"}


@pytest.mark.parametrize(("expression", "expected"), [
    ("param.seed == 1", {"r1", "r3"}),
    ('param("train.lr") == 0.1', {"r1"}),
    ("seed == 0 and model.width == 64", {"r0", "r2"}),
])
def test_param_namespaces(engine, expression, expected):
    assert matching(engine, expression) == expected


def test_string_literals_are_compared_literally(engine):
    assert matching(engine, f"note == {NOTE!r}") == {"r0"}
    assert matching(engine, '''model.arch == "mlp' OR '1'='1"''') == set()
    assert matching(engine, "model.arch == 'mlp\\'; DROP TABLE runs; --'") == set()
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(runs)).scalar_one() == len(CONFIGS)


@pytest.mark.parametrize(("expression", "fragments"), [
    ("tran.lr > 1", ["unknown field 'tran.lr'", "did you mean train.lr", "column 1"]),
    ("model.arch == 'mlp' and lr > 0.1", ["unknown field 'lr'", "train.lr", "column 25"]),
    ("test_acuracy > 0.5", ["unknown field 'test_acuracy'", "test_accuracy"]),
    ("test_accuracy.mean > 0.5", ["unknown field 'test_accuracy.mean'", "test_accuracy"]),
    ("param.test_accuracy > 0.5", ["unknown field 'param.test_accuracy'", "test_accuracy"]),
    ('metric("dist_init/layer.0.weight") > 1', ["unknown metric", SPREAD]),
    ('metric("test_accuracy", "mean") > 1', ["statistic 'mean'", "last, min, max"]),
    ('metric("test_accuracy", "min").max > 1', ['metric("name").last, .min or .max']),
    ('metric("test_accuracy").mean > 1', ['metric("name").last, .min or .max']),
    ('param("seed").max > 1', ['metric("name").last, .min or .max']),
    ('param("model.arc") == 1', ["unknown param 'model.arc'", "model.arch"]),
    ("model.arch == mlp", ["unknown field 'mlp'", "quote", "column 15"]),
    ("status == 'finished'", ["unknown status 'finished'", "done", "column 1"]),
    ("status == 'Done'", ["did you mean 'done'"]),
    ("status < 'done'", ["no order"]),
    ("train.lr < None", ["compare numbers, strings or times"]),
    ("train.augment > False", ["compare numbers, strings or times"]),
    ("test_accuracy == 'high'", ["compares with numbers"]),
    ("group == 1", ["compares with names"]),
    ("attempts == 'many'", ["whole numbers"]),
    ("started_at > 'yesterday'", ["ISO date"]),
    ("train.lr in 0.1", ["list of values"]),
    ("train.lr in [seed]", ["the name 'seed'"]),
    ("train.lr == seed", ["two fields"]),
    ("1 == 1", ["two values"]),
    ("True", ["not a condition"]),
    ("test_accuracy", ["boolean param"]),
    ("train.lr is 0.1", ["'is' compares only with None"]),
    ("train.augment & seed == 1", ["write 'and'"]),
    (f"{SPREAD} > 1", [f'metric("{SPREAD}")']),
    ("__import__('os').system('true')", ["only functions are param"]),
    ("train.lr.__class__ == 1", ["unknown field"]),
    ("[x for x in seed]", ["expected a field name"]),
    ("", ["empty"]),
])
def test_errors_name_the_problem(engine, expression, fragments):
    message = filter_error(engine, expression)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(("expression", "fragments"), [
    ("model.arch ==", ["syntax error", "column 14"]),
    ("model.arch = 'mlp'", ["syntax error", "column"]),
    ("seed == 1 and (model.arch == 'mlp'", ["syntax error", "never closed", "column 15"]),
    ("layers.0.weight > 1", ["syntax error", 'param("layers.0.weight")']),
    ("model.lambda == 1", ["syntax error", 'param("model.lambda")']),
    ("seed == 1\nand seed == 2", ["syntax error", "parentheses"]),    (f'metric("{SPREAD}" > 1', ["never closed"]),
])
def test_syntax_errors_point_at_the_column(engine, expression, fragments):
    message = filter_error(engine, expression)
    for fragment in fragments:
        assert fragment in message


def test_quoted_names_get_no_quoting_hint(engine):
    assert "quoted" not in filter_error(engine, f'metric("{SPREAD}" > 1')


def test_filter_errors_are_usage_errors():
    assert issubclass(FilterError, UsageError)


def test_param_lookups_use_the_primary_key(sqlite_engine):
    """Each EXISTS probes params and summaries by (run_id, key): fast however many runs there are."""
    with reading(sqlite_engine) as conn:
        condition = compile_filter("train.lr < 0.5 and not model.arch in ['mlp'] and test_accuracy.max > 0.1", conn)
        sql = select(runs.c.id).where(condition).compile(conn, compile_kwargs={"literal_binds": True})
        plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert len(searches) == 3
    assert all("(run_id=? AND" in step for step in searches), plan
