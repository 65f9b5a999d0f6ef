"""Spec expansion and run identity."""

import subprocess
import sys
import textwrap

import pytest

from ntklab.errors import SpecError
from ntklab.configbase import StrictModel, non_semantic
from ntklab.identity import run_key, semantic_dict
from ntklab.spec.load import load_spec
from ntklab.spec.yaml_source import parse_yaml
from ntklab.tasks import registry

BASE = """
name: t
defaults:
  data: {dataset: digits}
  train: {optimizer: {name: sgd, lr: 0.1}, batch_size: 32, epochs: 1}
groups:
  a:
    task: train
    model: {arch: mlp, width: 8}
"""


def write(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_is_a_product_and_zip_is_lockstep(tmp_path):
    spec = BASE + """
sweep:
  grid: {seed: [0, 1, 2], model.width: [8, 16]}
  zip: {train.optimizer.lr: [0.1, 0.2], train.batch_size: [16, 32]}
"""
    plan = load_spec(write(tmp_path, spec), tasks=registry)
    assert len(plan.runs) == 3 * 2 * 2
    pairs = {(r.config_json["train"]["optimizer"]["lr"], r.config_json["train"]["batch_size"]) for r in plan.runs}
    assert pairs == {(0.1, 16), (0.2, 32)}
    assert len({r.key for r in plan.runs}) == 12


def test_cases_with_their_own_sweeps_and_member_switch(tmp_path):
    spec = BASE + """
sweep:
  cases:
    - {model: {arch: cnn, channels: 4, depth: 1}}
    - model.width: 32
      sweep: {grid: {seed: [5, 6]}}
"""
    plan = load_spec(write(tmp_path, spec), tasks=registry)
    models = [(r.config_json["model"]["arch"], r.config_json["seed"]) for r in plan.runs]
    assert models == [("cnn", 0), ("mlp", 5), ("mlp", 6)]
    cnn = plan.runs[0].config_json["model"]
    assert "width" not in cnn, "switching arch replaces the model block instead of merging the mlp's width"


def test_top_level_sweep_applies_to_every_group_and_group_sweeps_multiply(tmp_path):
    spec = BASE + """
  b:
    task: train
    model: {arch: cnn, depth: 1, channels: 4}
    sweep: {grid: {model.channels: [4, 8]}}
sweep: {grid: {seed: [0, 1]}}
"""
    plan = load_spec(write(tmp_path, spec), tasks=registry)
    assert [r.group for r in plan.runs].count("a") == 2
    assert [r.group for r in plan.runs].count("b") == 4


def test_overrides_apply_last_and_parse_yaml_scalars(tmp_path):
    plan = load_spec(write(tmp_path, BASE), ["train.epochs=3", "train.optimizer.lr=1e-3", "model.width=64"],
                     tasks=registry)
    config = plan.runs[0].config_json
    assert config["train"]["epochs"] == 3
    assert config["train"]["optimizer"]["lr"] == pytest.approx(1e-3)
    assert config["model"]["width"] == 64


def test_identity_ignores_non_semantic_keys_but_not_semantic_ones(tmp_path):
    path = write(tmp_path, BASE)
    base = load_spec(path, tasks=registry).runs[0].key
    assert load_spec(path, ["train.checkpoint_every_steps=7"], tasks=registry).runs[0].key == base
    assert load_spec(path, ["train.epochs=2"], tasks=registry).runs[0].key != base


def test_identity_is_insensitive_to_spelling_of_equal_values(tmp_path):
    """1e-1, 0.1 and defaults written out explicitly all give the same run."""
    a = load_spec(write(tmp_path, BASE, "a.yaml"), tasks=registry).runs[0].key
    spelled = BASE.replace("lr: 0.1", "lr: 1e-1").replace("width: 8", "width: 8, depth: 2, activation: relu")
    assert load_spec(write(tmp_path, spelled, "b.yaml"), tasks=registry).runs[0].key == a


class _Inner(StrictModel):
    lr: float
    every: int = non_semantic(5, "not part of identity")


class _Config(StrictModel):
    name: str
    inner: _Inner
    sizes: list[int]


def test_identity_scheme_is_stable():
    """A changed scheme would orphan every recorded run: bump HASH_VERSION instead. This key was
    computed when version 1 was introduced, for a fixed config model."""
    config = _Config(name="é", inner=_Inner(lr=0.1, every=9), sizes=[3, 1])
    assert semantic_dict(config) == {"name": "é", "inner": {"lr": 0.1}, "sizes": [3, 1]}
    assert run_key(config) == "89b762279063c2331f7c19dd17c77f6103b199b4ec13e03d05916969c92561f1"


def test_duplicate_sweep_points_collapse(tmp_path):
    spec = BASE + "sweep: {grid: {train.checkpoint_every_steps: [10, 20]}}\n"
    plan = load_spec(write(tmp_path, spec), tasks=registry)
    assert len(plan.runs) == 1 and plan.duplicates == 1


def test_yaml_lines_and_1_2_floats():
    doc = parse_yaml("a:\n  b: 1e-3\n  c: [x, y]\n", "f.yaml")
    assert doc.value == {"a": {"b": 0.001, "c": ["x", "y"]}}
    assert doc.line_of(("a", "c", 1)) == 3
    with pytest.raises(SpecError, match="duplicate key"):
        parse_yaml("a: 1\na: 2\n", "f.yaml")


def test_the_spec_layer_imports_no_task_and_no_engine():
    """load_spec takes the task registry from its caller, so loading a spec's modules pulls in
    neither the tasks nor JAX; identity and flattening sit beside it for data and db to use."""
    code = ("import sys, ntklab.spec.load, ntklab.identity, ntklab.flatten; "
            "print(sorted(m for m in sys.modules if m.startswith(('ntklab.tasks', 'ntklab.engine', 'jax'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
