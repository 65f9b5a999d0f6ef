"""The empirical NTK of the zoo's layer kinds: every implementation against brute-force `jax.jacrev`
J·Jᵀ for a ResNet with bottlenecks, a MobileNet v2, a VGG and a DenseNet block (BatchNorm frozen
with non-trivial statistics), the structured rules they use, and blocks sized to a memory budget."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakectx import fast_compile

from ntklab.engine.config import parse_model_config
from ntklab.engine.entk import EmpiricalNTK, cast_floats, footprint, reference_ntk
from ntklab.engine.entk_rules import rule_cost
from ntklab.engine.models import build_model


def conv(out, k=3, s=1, groups=1):
    return {"op": "conv", "out": out, "kernel_size": k, "strides": s, "padding": "SAME", "groups": groups,
            "b_std": None}  # fmt: skip


BN, RELU = {"op": "batch_norm"}, {"op": "act"}


def bottleneck(width, out, stride):  # 1x1 reduce, strided 3x3, 1x1 expand; 1x1 strided projection
    main = [conv(width, 1), BN, RELU, conv(width, 3, stride), BN, RELU, conv(out, 1), BN]
    return [{"op": "sum", "branches": [main, [conv(out, 1, stride), BN]]}, RELU]


def inverted_residual(cin, out, expand, stride):  # MobileNet v2: expand, depthwise, project
    hidden = cin * expand
    main = [conv(hidden, 1), BN, RELU, conv(hidden, 3, stride, groups=hidden), BN, RELU, conv(out, 1), BN]
    return [{"op": "sum", "branches": [main, []]}] if stride == 1 and cin == out else main


def dense_layer(growth):  # DenseNet: BN-ReLU-1x1 bottleneck, BN-ReLU-3x3, concatenated to its input
    return {"op": "concat", "branches": [[], [BN, RELU, conv(4 * growth, 1), BN, RELU, conv(growth, 3)]]}


HEAD = [{"op": "global_avg_pool"}, {"op": "dense", "b_std": 0.1}]
ZOO = {
    "resnet_bottleneck": [conv(4), BN, RELU, *bottleneck(2, 8, 1), *bottleneck(3, 12, 2), *HEAD],
    "mobilenet_v2": [conv(4, 3, 2), BN, RELU, *inverted_residual(4, 4, 1, 1), *inverted_residual(4, 6, 2, 2),
                     *inverted_residual(6, 6, 2, 1), conv(16, 1), BN, RELU, *HEAD],
    "vgg": [conv(4), BN, RELU, {"op": "max_pool"}, conv(6), BN, RELU, conv(6), BN, RELU, {"op": "max_pool"},
            {"op": "flatten"}, {"op": "dense", "b_std": 0.1}],
    "densenet_block": [conv(6), dense_layer(3), dense_layer(3), BN, RELU, conv(6, 1), {"op": "avg_pool"},
                       BN, RELU, *HEAD],
}  # fmt: skip
SHAPE = (8, 8, 3)
IMPLEMENTATIONS = ("jacobian", "ntvp", "structured", "auto")
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@pytest.fixture(autouse=True)
def _fast_compile(monkeypatch):
    fast_compile(monkeypatch)


@functools.cache
def network(name: str) -> eqx.Module:
    """The network with BatchNorm running statistics, scales and offsets away from their
    initial 0 and 1 (each 1-D array shifted by a positive random amount)."""
    config = parse_model_config({"arch": "layers", "parameterization": "standard", "w_std": 1.4, "layers": ZOO[name]})
    model = build_model(config, SHAPE, 3, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    return jax.tree_util.tree_map(
        lambda leaf: leaf + 0.3 * np.abs(rng.standard_normal(leaf.shape, np.float32))
        if eqx.is_inexact_array(leaf) and leaf.ndim == 1 else leaf, model)


def relative_error(got, reference):
    return np.max(np.abs(got - reference)) / np.max(np.abs(reference))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(ZOO))
def test_every_implementation_matches_brute_force_jacobians(name, dtype):
    model = network(name)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((3, *SHAPE)), rng.standard_normal((2, *SHAPE))
    with jax.enable_x64(True):
        reference = reference_ntk(cast_floats(model, jnp.float64), x1, x2)
    assert reference.shape == (9, 6)
    with jax.enable_x64(dtype == "float64"):
        for implementation in IMPLEMENTATIONS:  # (traced blocks: tests/kernels/test_entk.py)
            kernel = EmpiricalNTK(model, SHAPE, implementation, dtype=dtype, batch_size=3)
            got = kernel(x1.astype(dtype), x2.astype(dtype))
            assert got.dtype == np.dtype(dtype)
            error = relative_error(got, reference)
            assert error < TOLERANCE[dtype], (name, dtype, implementation, error)


@pytest.mark.parametrize("name", list(ZOO))
def test_structured_has_a_rule_for_every_layer(name):
    """No parameter of the zoo's layers falls back to the Jacobian: BatchNorm (affine),
    depthwise, strided and 1x1 convolutions all have their rule."""
    model = network(name)
    kernel = EmpiricalNTK(model, SHAPE, "structured", batch_size=2)
    structure = kernel._impl.structure
    assert structure.rest_count == 0
    assert sum(layer.parameters for layer in structure.layers) == kernel.parameters
    kinds = {layer.kind for layer in structure.layers}
    assert kinds == {"conv", "batch_norm", "dense"}
    assert {layer.rule for layer in structure.layers if layer.kind == "batch_norm"} == {"affine"}
    if name == "mobilenet_v2":
        assert any(layer.groups > 1 and layer.groups == layer.in_shape[-1] for layer in structure.layers)


def test_both_convolution_rules_are_exercised():
    """The late, few-position convolutions take the positional rule, the early ones the explicit
    weight gradients (so the brute-force comparison above covers both)."""
    rules = set()
    for name in ZOO:
        structure = EmpiricalNTK(network(name), SHAPE, "structured", batch_size=3)._impl.structure
        rules |= {(layer.rule, layer.groups > 1) for layer in structure.layers if layer.kind == "conv"}
    assert {("explicit", False), ("positional", False), ("explicit", True)} <= rules, rules


def test_blocks_are_sized_to_the_memory_budget():
    """With a budget below what one batch needs, the block is computed in chunks: as few as fit
    by the estimated footprint, of equal size (no chunk padded far beyond its examples), each
    featurized in sub-batches as large as fit, XLA's own memory analysis of the compiled feature
    and block functions stays within the budget, and the kernel equals the unchunked one."""
    model = network("resnet_bottleneck")
    x = np.random.default_rng(5).standard_normal((7, *SHAPE)).astype(np.float32)
    whole = EmpiricalNTK(model, SHAPE, "jacobian", batch_size=7, memory_bytes=1 << 40)
    assert whole.chunk == 7
    m, itemsize = whole.out_dim, 4

    def peak(chunk, sub_batch=1):
        estimate = footprint(whole._structure, "jacobian", m, chunk, False, int(np.prod(SHAPE)))
        return estimate.peak(chunk, sub_batch, m, itemsize)

    budget = (peak(5) + peak(6)) / 2  # 5 examples fit, 6 do not: two chunks of 4, not of 5 and 2 padded to 5
    kernel = EmpiricalNTK(model, SHAPE, "jacobian", batch_size=7, memory_bytes=budget)
    c = kernel.chunk
    assert c == 4 and peak(c) <= budget, (c, peak(c), budget)
    assert peak(c, 2) > budget and kernel.sub_batch == 1  # featurized one example at a time
    chunk = jnp.zeros((c, *SHAPE), jnp.float32)
    features = kernel._impl._features.lower(chunk).compile().memory_analysis()
    f = kernel._impl.features(chunk)
    block = kernel._impl._block.lower(f, f).compile().memory_analysis()
    feature_bytes = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(f))
    measured = max(feature_bytes + features.temp_size_in_bytes + features.output_size_in_bytes,
                   2 * feature_bytes + block.temp_size_in_bytes + block.output_size_in_bytes)  # fmt: skip
    assert measured <= budget, (measured, budget)
    full = whole(x)
    np.testing.assert_allclose(kernel(x), full, rtol=1e-5, atol=1e-6 * np.max(np.abs(full)))
    y = x[:5]
    np.testing.assert_allclose(kernel(x, y), whole(x, y), rtol=1e-5, atol=1e-6 * np.max(np.abs(full)))

    # three chunks of 3 (the last padded from 1): a batch with itself featurizes chunks 0, 2, 1 in
    # the first row and reuses chunk 1 as the second row's (4 featurizations, not 3 + 9)
    thirds = EmpiricalNTK(model, SHAPE, "jacobian", batch_size=7, memory_bytes=(peak(3) + peak(4)) / 2)
    assert thirds.chunk == 3
    featurized = []
    features_of = thirds._impl.features
    thirds._impl.features = lambda x: featurized.append(x) or features_of(x)
    np.testing.assert_allclose(thirds(x), full, rtol=1e-5, atol=1e-6 * np.max(np.abs(full)))
    assert len(featurized) == 4, len(featurized)


@pytest.mark.parametrize("implementation", ["structured", "jacobian"])
@pytest.mark.parametrize("name", list(ZOO))
def test_featurizing_stays_within_its_estimate(name, implementation):
    """XLA's memory analysis of the compiled features of a chunk stays within the footprint's
    features and featurization intermediates (what sizes the chunks of a block)."""
    c = 4
    kernel = EmpiricalNTK(network(name), SHAPE, implementation, batch_size=c, memory_bytes=1 << 40)
    estimate = footprint(kernel._structure, implementation, kernel.out_dim, c, False, int(np.prod(SHAPE)))
    analysis = kernel._impl._features.lower(jnp.zeros((c, *SHAPE), jnp.float32)).compile().memory_analysis()
    measured = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    assert measured <= 4 * (estimate.feature_numbers + estimate.feature_working), (measured, estimate)


def test_the_positional_rules_block_stays_within_its_estimate():
    """Wide convolutions at 2x2 positions take the positional rule; XLA's memory analysis of the
    compiled block stays within the rules' estimate of their intermediates and the block."""
    layers = [conv(8), BN, RELU, {"op": "max_pool"}, {"op": "max_pool"}, conv(128), BN, RELU, conv(128), BN, RELU,
              {"op": "flatten"}, {"op": "dense", "b_std": 0.1}]  # fmt: skip
    config = parse_model_config({"arch": "layers", "parameterization": "standard", "w_std": 1.4, "layers": layers})
    model = build_model(config, SHAPE, 3, jax.random.PRNGKey(0))
    c, m = 32, 3
    kernel = EmpiricalNTK(model, SHAPE, "structured", batch_size=c, memory_bytes=1 << 40)
    layers = kernel._impl.structure.layers
    assert [layer.rule for layer in layers if layer.kind == "conv"] == ["explicit", "positional", "positional"]
    features = jax.eval_shape(kernel._impl._features, jnp.zeros((c, *SHAPE), jnp.float32))
    analysis = kernel._impl._block.lower(features, features).compile().memory_analysis()
    working = sum(rule_cost(layer, layer.rule, m, c, False).block_working for layer in layers)
    assert analysis.temp_size_in_bytes + analysis.output_size_in_bytes <= 4 * (working + (c * m) ** 2), analysis
    x = np.random.default_rng(3).standard_normal((5, *SHAPE)).astype(np.float32)
    for trace in (False, True):
        kernel = EmpiricalNTK(model, SHAPE, "structured", trace=trace, batch_size=c, memory_bytes=1 << 40)
        assert relative_error(kernel(x), reference_ntk(model, x, x, trace)) < TOLERANCE["float32"], trace


def test_a_budget_below_one_example_is_refused():
    model = network("vgg")
    with pytest.raises(ValueError, match="MiB for one example; the memory budget"):
        EmpiricalNTK(model, SHAPE, "jacobian", batch_size=4, memory_bytes=10_000)
