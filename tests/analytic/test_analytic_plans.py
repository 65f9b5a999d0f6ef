"""The analytic plan of a model config is the finite model's forward pass, op for op."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.engine import analytic as A
from ntklab.engine.activations import activation
from ntklab.engine.config import ModelConfig
from ntklab.engine.layers import parameterization_scales
from ntklab.engine.models import build_model

parse = TypeAdapter(ModelConfig).validate_python

CONFIGS = {
    "mlp": ({"arch": "mlp", "depth": 3, "width": 16, "b_std": 0.1, "activation": "erf"}, (5, 5, 2)),
    "mlp_vectors_taylor": ({"arch": "mlp", "depth": 2, "width": 8, "parameterization": "taylor", "param_order": 3,
                            "b_std": 0.2}, (7,)),
    "cnn_gap_same": ({"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "b_std": 0.1}, (6, 6, 2)),
    "cnn_flatten_valid": ({"arch": "cnn", "depth": 2, "channels": 4, "readout": "flatten",
                           "parameterization": "ntk", "activation": "gelu"}, (6, 6, 2)),
    "lenet5": ({"arch": "lenet5", "b_std": 0.1}, (8, 8, 1)),
    "myrtle5": ({"arch": "myrtle5", "channels": 4, "parameterization": "ntk"}, (8, 8, 3)),
    "wrn": ({"arch": "wrn", "blocks_per_group": 1, "widening": 1, "stem_channels": 4, "b_std": 0.1}, (4, 4, 1)),
    "logistic": ({"arch": "logistic", "b_std": 0.5}, (4, 4, 1)),
}


def resolve(model, path: str):
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def run_plan(plan, model, x):
    """The finite network the plan describes, with the model's own layers."""
    for op in plan:
        if isinstance(op, A.Affine):
            x = resolve(model, op.layer)(x)
        elif isinstance(op, A.Activation):
            x = activation(op.name)(x)
        elif isinstance(op, A.AvgPool):
            window = (1, *op.window, 1)
            x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, *op.strides, 1), "VALID") / np.prod(op.window)
        elif isinstance(op, A.GlobalAvgPool):
            x = jnp.mean(x, axis=(1, 2))
        elif isinstance(op, A.Flatten):
            x = x.reshape(len(x), -1)
        elif isinstance(op, A.Residual):
            x = functools.reduce(jnp.add, [run_plan(b, model, x) if b else x for b in op.branches])
    return x


def affine_ops(plan):
    for op in plan:
        if isinstance(op, A.Affine):
            yield op
        elif isinstance(op, A.Residual):
            for branch in op.branches:
                yield from affine_ops(branch)


@pytest.mark.parametrize("name", CONFIGS)
def test_plan_is_the_model(name):
    spec, shape = CONFIGS[name]
    config = parse(spec)
    model = build_model(config, shape, 1, jax.random.PRNGKey(0))
    plan = A.plan_from_config(config, shape)
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    np.testing.assert_allclose(run_plan(plan, model, x), model(x), rtol=1e-5, atol=1e-6)
    # Every layer of the plan says what the model's layer is: shape, stride, padding, scales.
    layers = list(affine_ops(plan))
    assert len(layers) == len(jax.tree_util.tree_leaves(model)) - sum(op.b_std is not None for op in layers)
    for op in layers:
        layer = resolve(model, op.layer)
        if op.kernel_size is not None:
            assert layer.weight.shape[:2] == op.kernel_size and layer.weight.shape[3] == op.out_channels
            assert (layer.stride, layer.stride) == op.strides and layer.padding == op.padding
            fan_in = int(np.prod(layer.weight.shape[:3]))
        else:
            fan_in = layer.weight.shape[0]
        scales = parameterization_scales(config, fan_in)
        assert layer.weight_multiplier == pytest.approx(scales.weight_multiplier)
        assert (layer.bias is None) == (op.b_std is None)


def test_unsupported_configs_say_why():
    with pytest.raises(ValueError, match="tanh"):
        A.kernel_from_config(parse({"arch": "mlp", "activation": "tanh"}), np.ones((2, 3)))
    with pytest.raises(ValueError, match="mean_field"):
        A.plan_from_config(parse({"arch": "mlp", "parameterization": "mean_field"}), (3,))
    with pytest.raises(ValueError, match="resnet18"):
        A.plan_from_config(parse({"arch": "resnet18"}), (8, 8, 3))


def test_taylor_parameterization_ntk():
    """Taylor-k's NTK: the weight term is w^2 m^((k-1)/(k+1)) A(K): k = 1 is the NTK parameterization."""
    x = np.random.default_rng(0).normal(size=(4, 6))
    base = {"arch": "mlp", "depth": 2, "width": 32, "b_std": 0.3, "w_std": 1.2}
    ntk = A.kernel_from_config(parse({**base, "parameterization": "ntk"}), x)
    k1 = A.kernel_from_config(parse({**base, "parameterization": "taylor", "param_order": 1}), x)
    k3 = A.kernel_from_config(parse({**base, "parameterization": "taylor", "param_order": 3}), x)
    np.testing.assert_allclose(k1["ntk"], ntk["ntk"], rtol=1e-12)
    np.testing.assert_allclose(k3["nngp"], ntk["nngp"], rtol=1e-12)
    assert np.all(np.diag(k3["ntk"]) > np.diag(ntk["ntk"]))  # m^(1/2) > 1 on the hidden layers


def test_tiles_resume_and_match_one_block():
    config = parse({"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "parameterization": "ntk"})
    x = np.random.default_rng(0).normal(size=(7, 4, 4, 1))
    z = np.random.default_rng(1).normal(size=(4, 4, 4, 1))
    plan = A.plan_from_config(config, x.shape[1:])
    whole = A.analytic_kernel(plan, x, z, tile=16)
    sink = A.MemorySink(7, 4, ("nngp", "ntk"), np.float64, symmetric=False)
    calls = []
    stop = iter([False, False, True])
    assert A.analytic_kernel(plan, x, z, tile=3, sink=sink, should_stop=lambda: next(stop)) is None
    assert len(sink.done) == 2  # stopped after two of the six tiles
    A.analytic_kernel(plan, x, z, tile=3, sink=sink, progress=lambda d, n: calls.append((d, n)))
    assert calls[0] == (3, 6) and calls[-1] == (6, 6)  # resumed: the first two tiles were not recomputed
    for which in ("nngp", "ntk"):
        np.testing.assert_allclose(sink.arrays[which], whole[which], rtol=1e-13)
    sym = A.analytic_kernel(plan, x, tile=3)
    np.testing.assert_array_equal(sym["ntk"], sym["ntk"].T)
    np.testing.assert_allclose(sym["ntk"], A.analytic_kernel(plan, x, x, tile=16)["ntk"], rtol=1e-13)


def test_float32_agrees_with_float64():
    config = parse({"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "parameterization": "ntk",
                    "b_std": 0.1})
    x = np.random.default_rng(0).normal(size=(3, 5, 5, 2))
    k32 = A.kernel_from_config(config, x, dtype="float32")
    k64 = A.kernel_from_config(config, x, dtype="float64")
    assert k32["ntk"].dtype == np.float32
    np.testing.assert_allclose(k32["ntk"], k64["ntk"], rtol=1e-5)
