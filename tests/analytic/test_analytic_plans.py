"""The analytic kernel of plans: what has a kernel and what says why not, tiling, precision."""

import numpy as np
import pytest

from ntklab.engine import analytic as A
from ntklab.engine.config import parse_model_config
from ntklab.engine.kernel_maps import MAPS
from ntklab.engine.plan import KERNEL_ACTIVATIONS, PlanError
from ntklab.engine.presets import plan_of



def test_the_activations_with_kernels_are_the_maps():
    assert set(KERNEL_ACTIVATIONS) == set(MAPS)


def test_unsupported_configs_say_why():
    with pytest.raises(PlanError, match="act: activation 'tanh' has no closed-form"):
        A.kernel_from_config(parse_model_config({"arch": "mlp", "activation": "tanh"}), np.ones((2, 3)))
    with pytest.raises(PlanError, match="layers.0 \\(dense\\): the scalings of the mean_field"):
        A.kernel_from_config(parse_model_config({"arch": "mlp", "parameterization": "mean_field"}), np.ones((2, 3)))
    with pytest.raises(PlanError, match="stem_bn \\(batch_norm\\): has no infinite-width kernel"):
        A.kernel_from_config(parse_model_config({"arch": "resnet18", "width": 1}), np.ones((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="'rf' is not a network of layers"):
        plan_of(parse_model_config({"arch": "rf"}))


def test_taylor_parameterization_ntk():
    """Taylor-k's NTK: the weight term is w^2 m^((k-1)/(k+1)) A(K): k = 1 is the NTK parameterization."""
    x = np.random.default_rng(0).normal(size=(4, 6))
    base = {"arch": "mlp", "depth": 2, "width": 32, "b_std": 0.3, "w_std": 1.2}
    ntk = A.kernel_from_config(parse_model_config({**base, "parameterization": "ntk"}), x)
    k1 = A.kernel_from_config(parse_model_config({**base, "parameterization": "taylor", "param_order": 1}), x)
    k3 = A.analytic_kernels(plan_of(parse_model_config({**base, "parameterization": "taylor", "param_order": 3})), x)
    np.testing.assert_allclose(k1, ntk, rtol=1e-12)
    np.testing.assert_allclose(k3["nngp"], A.kernel_from_config(parse_model_config(base), x, which="nngp"), rtol=1e-12)
    assert np.all(np.diag(k3["ntk"]) > np.diag(ntk))  # m^(1/2) > 1 on the hidden layers


def test_tiles_match_one_block():
    plan = plan_of(parse_model_config({"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "parameterization": "ntk"}))
    x = np.random.default_rng(0).normal(size=(7, 4, 4, 1))
    z = np.random.default_rng(1).normal(size=(4, 4, 4, 1))
    whole = A.analytic_kernels(plan, x, z, tile=16)
    tiled = A.analytic_kernels(plan, x, z, tile=3)
    for which in ("nngp", "ntk"):
        np.testing.assert_allclose(tiled[which], whole[which], rtol=1e-13)
    np.testing.assert_allclose(A.analytic_kernel(plan, x, z, "nngp", tile=3), whole["nngp"], rtol=1e-13)
    sym = A.analytic_kernel(plan, x, tile=3)
    np.testing.assert_array_equal(sym, sym.T)
    np.testing.assert_allclose(sym, A.analytic_kernel(plan, x, x, tile=16), rtol=1e-13)


def test_float32_agrees_with_float64():
    config = parse_model_config({"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "parameterization": "ntk",
                    "b_std": 0.1})
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 2))
    k32 = A.kernel_from_config(config, x, dtype="float32")
    k64 = A.kernel_from_config(config, x, dtype="float64")
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k32, k64, rtol=1e-5)
