"""The named architectures built through their plans are the hand-written models they replaced.

tests/reference/models_before_plan.npz was written by those models (ntklab/engine/models.py at
commit 0419176, before the layer plan): per architecture, the parameters by path in leaf order,
their values from PRNGKey(7), the frozen arrays, and the logits in evaluation and training mode
(with the updated BatchNorm statistics) on fixed inputs. Stored `params` artifacts and
`dist_init/<path>` metrics depend on exactly these paths, this order and these values.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from ntklab.engine.config import parse_model_config
from ntklab.engine.models import build_model, named_frozen, named_parameters, train_forward

BEFORE = np.load(Path(__file__).resolve().parent.parent / "reference" / "models_before_plan.npz")
CASES = json.loads(str(BEFORE["cases"]))


def test_every_layer_architecture_is_covered():
    archs = {case["config"]["arch"] for case in CASES.values()}
    assert archs == {"mlp", "cnn", "lenet5", "myrtle5", "logistic", "wrn", "resnet18"}
    assert {case["config"].get("parameterization", "standard") for case in CASES.values()} == {
        "standard", "ntk", "taylor", "mean_field"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_pytree_values_and_outputs_as_before(name):
    case = CASES[name]
    model = build_model(parse_model_config(case["config"]), tuple(case["input_shape"]), case["out_dim"], jax.random.PRNGKey(7))
    params = named_parameters(model)
    assert list(params) == case["parameters"], "parameter paths and leaf order"
    assert list(named_frozen(model)) == case["frozen"]
    assert len(jax.tree_util.tree_leaves(model)) == case["leaves"]
    for path, value in params.items():
        np.testing.assert_array_equal(np.asarray(value), BEFORE[f"{name}/param/{path}"], err_msg=path)
    x = BEFORE[f"{name}/x"]
    # Float32 rounding differs from one CPU to another (XLA generates different code): up to 7e-7
    # on the WRN's logits; batch statistics through ResNet-18's 20 BatchNorms, up to 4e-6.
    np.testing.assert_allclose(np.asarray(model(x)), BEFORE[f"{name}/logits"], rtol=1e-6, atol=2e-6)
    logits, updated = train_forward(model, x)
    np.testing.assert_allclose(np.asarray(logits), BEFORE[f"{name}/train_logits"], rtol=1e-6, atol=1e-5)
    for path, value in named_frozen(updated).items():
        np.testing.assert_allclose(np.asarray(value), BEFORE[f"{name}/trained_frozen/{path}"], rtol=1e-6, atol=1e-5)
