"""Property-based tests: whatever YAML, `--set` value or filter string a user writes, the spec
loader and the query filter either accept it or raise the project's own errors (which the CLI
turns into exit 2 with a message), never anything else."""

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ntklab
from ntklab.db.connection import open_engine, reading
from ntklab.errors import SpecError, UsageError
from ntklab.reports.runs import list_runs
from ntklab.spec.load import load_spec
from ntklab.tasks import registry

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PROBE = "name: p\ngroups:\n  g: {task: probe, steps: 2}\n"

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["probe", "train", "digits", "mlp", "grid", "sweep", "seed", ".inf", "1e-3"]))
keys = st.one_of(st.sampled_from(["name", "groups", "task", "steps", "seed", "sweep", "grid", "zip", "cases",
                                  "defaults", "figures", "model", "arch", "train.epochs", "<<", "x", "y"]),
                 st.text(max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
spec_like = st.fixed_dictionaries({"name": st.one_of(st.just("p"), scalars), "groups": st.dictionaries(
    keys, st.dictionaries(keys, documents, max_size=5).map(lambda d: {"task": "probe", **d}), max_size=3)},
    optional={"sweep": documents, "defaults": documents, "figures": documents})
yaml_fragments = st.lists(st.sampled_from(["&a ", "*a", "<<: ", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "\t",
                                           "!!python/object:os.system", "%YAML 1.1\n", "---\n", "...", "'", '"',
                                           "\ufeff", "\x00", "é", "? ", "|", ">", "#"]), max_size=30).map("".join)


def load_text(text: str | bytes, overrides=()) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "spec.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            load_spec(path, overrides, tasks=registry)
        except SpecError as error:
            assert error.problems and all(str(p) for p in error.problems)


@SETTINGS
@given(st.one_of(documents, spec_like).map(lambda d: yaml.safe_dump(d, allow_unicode=True)))
def test_generated_yaml_documents_load_or_raise_spec_errors(text):
    load_text(text)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), yaml_fragments,
                 st.tuples(st.just(PROBE), yaml_fragments).map("".join)))
def test_arbitrary_text_and_yaml_fragments_load_or_raise_spec_errors(text):
    load_text(text)


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=40),
                          st.tuples(st.sampled_from(["steps", "seed", "step_seconds", "task", "groups.g", "x.y",
                                                     "", "."]),
                                    st.one_of(st.text(max_size=30), yaml_fragments,
                                              scalars.map(lambda v: yaml.safe_dump(v).removesuffix("\n...\n"))))
                          .map(lambda kv: f"{kv[0]}={kv[1]}")), max_size=3))
def test_set_values_apply_or_raise_spec_errors(overrides):
    load_text(PROBE, overrides)


@pytest.fixture(scope="module")
def recorded_db(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "p.yaml").write_text("name: p\ngroups:\n  g: {task: probe, steps: 2, metrics_per_step: 2, "
                                 "sweep: {grid: {seed: [0, 1]}}}\n")
    ntklab("run", "p.yaml", home=home, check=True)
    engine = open_engine(f"sqlite:///{home / 'ntklab.db'}", read_only=True)
    yield engine
    engine.dispose()


fields = st.sampled_from(["status", "group", "seed", "steps", "loss", "loss1", "loss.min", "loss.max", "key",
                          "experiment", "attempts", "metric('loss', 'max')", "metric(\"loss\")", "nothing",
                          "started_at", "task", "x.y", "not", "in"])
literals = st.one_of(st.integers(), st.floats(allow_nan=False).map(repr), st.text(max_size=6).map(repr),
                     st.sampled_from(["'done'", "[1, 2]", "['p', 'g']", "True", "None", "()", "1e999", "-0.0"]))
comparisons = st.tuples(fields, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "+", "is"]),
                        st.one_of(literals.map(str), fields)).map(" ".join)
filters = st.recursive(comparisons, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from([" and ", " or "]), inner).map("".join),
    inner.map(lambda e: f"not {e}"), inner.map(lambda e: f"({e})")), max_leaves=12)


@SETTINGS
@given(st.one_of(filters, st.text(max_size=60), yaml_fragments,
                 st.integers(1, 400).map(lambda n: "not " * n + "status == 'done'"),
                 st.integers(1, 400).map(lambda n: "(" * n + "seed == 1" + ")" * n)))
def test_filters_select_or_raise_usage_errors(recorded_db, expression):
    with reading(recorded_db) as conn:
        try:
            list_runs(conn, where=expression)
        except UsageError as error:
            assert str(error)
