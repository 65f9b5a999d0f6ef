"""Planning validates each distinct block of a sweep once (ntklab/spec/validation.py); the plan it
makes must be the plan of validating every run's whole config: the same runs in the same order,
the same keys, configs, dumps (key order too), upstream runs and duplicates, and the same errors."""

import json
import textwrap
from pathlib import Path

import pytest

from ntklab.errors import SpecError
from ntklab.spec.load import load_spec
from ntklab.spec.validation import WholeValidation
from ntklab.tasks import registry

SPECS = sorted((Path(__file__).parent.parent / "specs").glob("*.yaml"))


WHOLE = WholeValidation(registry)

VARIED = """
name: varied
defaults:
  data: {dataset: digits}
  train: {optimizer: {name: sgd, lr: 0.1}, batch_size: 32, epochs: 1}
sweep: {grid: {seed: [0, 1]}}
groups:
  mlp:
    task: train
    model: {arch: mlp, width: 8}
    sweep:
      grid:
        train.optimizer: [{name: momentum, lr: 0.1, momentum: 0.0}, {name: momentum, lr: 0.1, momentum: -0.0},
                          {name: sgd, lr: 1}, {name: sgd, lr: 1.0}]
        train.stop_when: [null, {metric: train_loss, below: 0.5}]
  linearized:
    task: train
    model: {arch: mlp, width: 8}
    train.expansion_order: 1
    sweep:
      cases:
        - {model: {arch: cnn, channels: 4, depth: 1}}
        - model.width: 16
          sweep: {zip: {train.epochs: [1, 2], train.batch_size: [16, 32]}}
  pretrained:
    task: train
    model: {arch: mlp, width: 8}
    expansion_point: {task: train, data: {dataset: digits}, model: {arch: mlp, width: 8},
                      train: {optimizer: {name: sgd, lr: 0.1}, batch_size: 32, epochs: 1}}
    sweep: {grid: {reset_frozen: [false, true], train.checkpoint_every_steps: [10, 20]}}
  needs:
    task: probe
    steps: 2
    needs: {task: probe, seed: 9, steps: 3}
    sweep: {grid: {metrics_per_step: [1, 2]}}
"""


def plans(path: Path, overrides=()):
    return (load_spec(path, overrides, tasks=registry, max_runs=10**6),
            load_spec(path, overrides, tasks=WHOLE, max_runs=10**6))


def assert_same(fast, whole):
    assert [(r.key, r.group, r.task, r.upstream) for r in fast.runs] == \
        [(r.key, r.group, r.task, r.upstream) for r in whole.runs]
    assert [json.dumps(r.config_json) for r in fast.runs] == [json.dumps(r.config_json) for r in whole.runs]
    assert [r.config for r in fast.runs] == [r.config for r in whole.runs]
    assert fast.duplicates == whole.duplicates


def test_a_varied_sweep_plans_the_same_as_validating_every_run_whole(tmp_path):
    path = tmp_path / "varied.yaml"
    path.write_text(textwrap.dedent(VARIED))
    fast, whole = plans(path, ["train.epochs=2"])
    assert_same(fast, whole)
    groups = {r.group for r in fast.runs}
    assert {"mlp", "linearized", "linearized.full", "pretrained", "pretrained.expansion_point", "needs",
            "needs.needs"} <= groups
    momentum = {json.dumps(r.config_json["train"]["optimizer"].get("momentum")) for r in fast.runs if r.group == "mlp"}
    assert momentum == {"0.0", "-0.0", "null"}, "0.0 and -0.0 are different runs"
    assert fast.duplicates == 2 * 2 + 2 * 2, "lr 1 and 1.0 are one run (seeds x stop_when), so are " \
        "checkpoint_every_steps 10 and 20 (seeds x reset_frozen)"
    mlp = [r for r in fast.runs if r.group == "mlp"]
    assert mlp[0].config.data is mlp[-1].config.data, "a block shared by the runs is validated once"
    assert whole.runs[0].config.data is not whole.runs[1].config.data


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_plan_the_same_as_validating_every_run_whole(path):
    assert_same(*plans(path))


def test_errors_read_the_same(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(VARIED).replace("[0, 1]}}", "[0, -1]}}").replace("width: 16", "width: 0"))
    problems = []
    for tasks in (registry, WHOLE):
        with pytest.raises(SpecError) as raised:
            load_spec(path, ["train.epochs=2"], tasks=tasks)
        problems.append(raised.value.problems)
    assert problems[0] == problems[1]
    assert any(p.path == "seed" for p in problems[0]) and any(p.path == "model.width" for p in problems[0])
