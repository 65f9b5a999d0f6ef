"""Every empirical NTK implementation against a brute-force `jax.jacrev` J·Jᵀ of the whole batch."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakectx import fast_compile


from ntklab.engine.config import CNNModel, LeNet5Model, MLPModel, parse_model_config
from ntklab.engine.entk import EmpiricalNTK, cast_floats, plan_blocks, reference_ntk
from ntklab.engine.entk_rules import sum_positions
from ntklab.engine.models import build_model, named_parameters



CONV = {"op": "conv", "kernel_size": 3, "padding": "SAME"}
# conv-BN-relu stem, one ResNet-18 basic block (stride 2, a 1x1 conv-BN shortcut), global average
# pooling, Dense readout: the zoo's ResNet-18 structure at a size that compiles fast
SMALL_RESNET = parse_model_config({"arch": "layers", "layers": [
    dict(CONV, out=4), {"op": "batch_norm"}, {"op": "act"},
    {"op": "sum", "branches": [
        [dict(CONV, out=6, strides=2), {"op": "batch_norm"}, {"op": "act"}, dict(CONV, out=6), {"op": "batch_norm"}],
        [dict(CONV, out=6, kernel_size=1, strides=2), {"op": "batch_norm"}]]},
    {"op": "act"}, {"op": "global_avg_pool"}, {"op": "dense"},
]})  # fmt: skip
# a depthwise convolution (two output channels per input channel) and a grouped one, max pooling,
# a concatenation
GROUPED = parse_model_config({"arch": "layers", "b_std": 0.1, "parameterization": "ntk", "layers": [
    dict(CONV, out=4), {"op": "act"}, dict(CONV, out=8, groups=4, strides=[2, 1]), {"op": "max_pool", "window": 2},
    {"op": "concat", "branches": [[dict(CONV, out=4, groups=2)], [{"op": "act", "name": "gelu"}]]},
    {"op": "flatten"}, {"op": "dense"},
]})  # fmt: skip


MODELS = {
    "mlp": (MLPModel(arch="mlp", depth=2, width=12, b_std=0.1, parameterization="ntk"), (4, 4, 1)),
    "cnn_pool": (CNNModel(arch="cnn", depth=2, channels=4, padding="SAME", readout="gap", b_std=0.2), (6, 6, 2)),
    "lenet5": (LeNet5Model(arch="lenet5", b_std=0.1, parameterization="ntk"), (8, 8, 3)),
    "resnet_bn": (SMALL_RESNET, (8, 8, 3)),
    "grouped_maxpool_concat": (GROUPED, (8, 8, 2)),
}
IMPLEMENTATIONS = ("jacobian", "ntvp", "structured")
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@pytest.fixture(autouse=True)
def _fast_compile(monkeypatch):
    fast_compile(monkeypatch)


@functools.cache
def network(name: str) -> tuple[eqx.Module, tuple[int, ...]]:
    config, shape = MODELS[name]
    model = build_model(config, shape, 3, jax.random.PRNGKey(0))
    if name == "resnet_bn":  # BatchNorm with non-trivial running statistics and affine parameters
        leaves, treedef = jax.tree_util.tree_flatten(model)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        leaves = [leaf + 0.3 * jnp.abs(jax.random.normal(k, leaf.shape)) if eqx.is_inexact_array(leaf) and leaf.ndim == 1
                  else leaf for leaf, k in zip(leaves, keys)]
        model = jax.tree_util.tree_unflatten(treedef, leaves)
    return model, shape


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_implementation_matches_brute_force_jacobians(name, dtype):
    model, shape = network(name)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((5, *shape))
    x2 = rng.standard_normal((3, *shape))
    with jax.enable_x64(True):
        reference = {trace: reference_ntk(cast_floats(model, jnp.float64), x1, x2, trace) for trace in (False, True)}
    assert reference[False].shape == (15, 9) and reference[True].shape == (5, 3)
    with jax.enable_x64(dtype == "float64"):
        for trace in (False, True):
            for implementation in IMPLEMENTATIONS:
                kernel = EmpiricalNTK(model, shape, implementation, trace=trace, dtype=dtype, batch_size=5)
                got = kernel(x1.astype(dtype), x2.astype(dtype))
                assert got.dtype == np.dtype(dtype)
                error = np.max(np.abs(got - reference[trace])) / np.max(np.abs(reference[trace]))
                assert error < TOLERANCE[dtype], (name, dtype, trace, implementation, error)
    # computing in float64 casts a copy: the model keeps its float32 parameters
    assert all(p.dtype == jnp.float32 for p in named_parameters(model).values())


def test_structured_uses_layer_rules_for_batchnorm_too():
    model, shape = network("resnet_bn")
    kernel = EmpiricalNTK(model, shape, "structured", batch_size=4)
    structure = kernel._impl.structure
    assert {layer.rule for layer in structure.layers} >= {"explicit", "dense", "affine"}
    # BatchNorm scales and offsets are parameters (the affine rule); running statistics are not
    bn_parameters = sum(p.size for n, p in named_parameters(model).items() if n.endswith(("scale", "offset")))
    assert bn_parameters == 2 * (4 + 6 + 6 + 6)
    assert sum(layer.parameters for layer in structure.layers if layer.rule == "affine") == bn_parameters
    assert structure.rest_count == 0
    assert kernel.parameters == sum(p.size for p in named_parameters(model).values())


def test_running_statistics_are_frozen_in_the_kernel():
    """The kernel depends on the running statistics (evaluation mode), not on batch statistics."""
    model, shape = network("resnet_bn")
    x = np.random.default_rng(3).standard_normal((3, *shape)).astype(np.float32)
    single = EmpiricalNTK(model, shape, "structured", batch_size=3)
    full = single(x)
    one_by_one = np.block([[single(x[i : i + 1], x[j : j + 1]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(full, one_by_one, rtol=1e-5, atol=1e-6)


def test_auto_picks_structured_for_dense_networks_and_reports_its_choice():
    model, shape = network("mlp")
    kernel = EmpiricalNTK(model, shape, "auto", batch_size=8)
    assert kernel.chosen == "structured"
    plans = plan_blocks(kernel._structure, 3, 8, False, 1 << 40, 4, shape)
    assert min(plans, key=lambda impl: plans[impl].flops) == "structured"


def test_auto_builds_exactly_the_implementation_it_chooses():
    """What `auto` runs is what forcing its choice runs: the same layer rules and the same kernel,
    bit for bit (so any time difference between the two in bench/entk.py is the machine's)."""
    model, shape = network("lenet5")
    x = np.random.default_rng(2).standard_normal((4, *shape)).astype(np.float32)
    auto = EmpiricalNTK(model, shape, "auto", batch_size=4)
    forced = EmpiricalNTK(model, shape, auto.chosen, batch_size=4)
    assert [layer.rule for layer in auto._impl.structure.layers] == [layer.rule for layer in forced._impl.structure.layers]
    np.testing.assert_array_equal(auto(x), forced(x))


def test_float64_without_x64_raises():
    """Without x64 JAX would silently compute in float32; the kernel refuses instead."""
    model, shape = network("mlp")
    assert not jax.config.jax_enable_x64
    with pytest.raises(RuntimeError, match="jax_enable_x64"):
        EmpiricalNTK(model, shape, "structured", dtype="float64")
    with pytest.raises(ValueError, match="float32, float64"):
        EmpiricalNTK(model, shape, "structured", dtype="float16")


def test_grouped_convolutions_have_their_rule():
    model, shape = network("grouped_maxpool_concat")
    structure = EmpiricalNTK(model, shape, "structured", batch_size=4)._impl.structure
    assert structure.rest_count == 0
    assert [(layer.kind, layer.groups) for layer in structure.layers] == [("conv", 1), ("conv", 4), ("conv", 2),
                                                                          ("dense", 1)]
    assert [layer.depthwise for layer in structure.layers[:3]] == [False, True, False]


@pytest.mark.parametrize("positions", [1, 7, 12, 16])
def test_sum_positions_is_the_sum_of_the_product(positions):
    rng = np.random.default_rng(positions)
    a = rng.standard_normal((2, 3, positions, 5))
    b = rng.standard_normal((2, 1, positions, 1))
    got = sum_positions(jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(got, np.sum(a * b, axis=2), rtol=1e-5, atol=1e-5)
    c = rng.standard_normal((2, 3, 4, positions, 5))
    np.testing.assert_allclose(sum_positions(jnp.asarray(c), axis=3), np.sum(c, axis=3), rtol=1e-5, atol=1e-5)


def test_scale_and_padding():
    model, shape = network("mlp")
    x = np.random.default_rng(1).standard_normal((7, *shape)).astype(np.float32)
    plain = EmpiricalNTK(model, shape, "structured", batch_size=4)(x)
    scaled = EmpiricalNTK(model, shape, "structured", batch_size=4, scale=0.5)(x)
    np.testing.assert_allclose(scaled, 0.5 * plain, rtol=1e-6)
    # x with itself in two batches: the block below the diagonal is the one above, transposed
    np.testing.assert_allclose(plain, reference_ntk(model, x, x), rtol=1e-5, atol=1e-5 * np.max(np.abs(plain)))
