"""The analytic, closed_form and random_features kinds of the kernel config, through the block dispatch."""

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from ntklab.engine import analytic as A
from ntklab.engine.closed_form import ntk2
from ntklab.tasks.kernel_config import KernelConfig
from ntklab.engine.blocks import kernel_block
from ntklab.engine.kernels import KernelSetup, build_kernel
from ntklab.engine.presets import plan_of
from ntklab.engine.random_features import random_features_gram
from ntklab.tasks.kernel_error import relative_errors

parse = TypeAdapter(KernelConfig).validate_python
CNN = {"arch": "cnn", "depth": 2, "channels": 8, "padding": "SAME", "parameterization": "ntk", "b_std": 0.1}


def images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4, 4, 1))


def test_analytic_blocks_assemble_the_kernel():
    config = parse({"kind": "analytic", "which": "ntk", "model": CNN})
    assert config.dtype == "float64"
    kernel = build_kernel(config, KernelSetup(input_shape=(4, 4, 1), out_dim=10, seed=0, batch_size=3))
    x, z = images(7), images(4, seed=1)
    plan = plan_of(config.model)
    np.testing.assert_allclose(kernel_block(kernel, x), A.analytic_kernel(plan, x), rtol=1e-12)
    np.testing.assert_allclose(kernel_block(kernel, z, x), A.analytic_kernel(plan, z, x), rtol=1e-12)


def test_closed_form_and_random_features_blocks():
    x = images(5).reshape(5, -1)
    setup = KernelSetup(input_shape=(16,), out_dim=10, seed=0, batch_size=2)
    closed = build_kernel(parse({"kind": "closed_form", "which": "ntk2"}), setup)
    np.testing.assert_allclose(kernel_block(closed, x), ntk2(x), rtol=1e-14)
    rf = build_kernel(parse({"kind": "random_features", "features": 3000, "seed": 4, "intercept": True}), setup)
    whole = random_features_gram(x, features=3000, seed=4, intercept=True)
    np.testing.assert_allclose(kernel_block(rf, x), whole, rtol=1e-6)  # blocks computed apart agree


@pytest.mark.parametrize("bad, fragment", [
    ({"kind": "analytic", "model": {**CNN, "activation": "tanh"}}, "tanh"),
    ({"kind": "analytic", "model": {"arch": "resnet18"}}, "resnet18"),
    ({"kind": "analytic", "model": {"arch": "mlp", "parameterization": "mean_field"}}, "mean_field"),
    ({"kind": "closed_form", "which": "rf2", "degree": 3}, "polynomial"),
    ({"kind": "random_features", "features": 10, "activation": "gelu"}, "activation"),
])
def test_invalid_kernel_configs_fail_at_load(bad, fragment):
    with pytest.raises(ValidationError, match=fragment):
        parse(bad)


def test_relative_error_against_a_scalar_reference():
    reference = np.array([[2.0, 1.0], [1.0, 3.0]])
    full = np.kron(reference, np.eye(3)) * 1.1
    errors = relative_errors(full, reference, outputs=3, reference_outputs=1, scale=1.0)
    assert errors["rel_error"] == pytest.approx(0.1)
    assert relative_errors(3 * reference, reference, 1, 1, scale=1 / 3)["rel_error_max"] == pytest.approx(0.0)
