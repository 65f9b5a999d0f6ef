"""Every empirical NTK implementation against a brute-force `jax.jacrev` J·Jᵀ of the whole batch."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakectx import fast_compile

from ntklab.engine.config import CNNModel, LeNet5Model, MLPModel, ResNet18Model
from ntklab.engine.entk import (
    EmpiricalNTK,
    cast_floats,
    choose_implementation,
    reference_ntk,
)
from ntklab.engine.layers import BatchNorm, Conv2d, Dense, global_avg_pool
from ntklab.engine.models import BasicBlock, Model, build_model, named_parameters


class SmallResNet(Model):
    """conv-BN-relu stem, one ResNet-18 basic block (stride 2, a 1x1 conv-BN shortcut), global
    average pooling, Dense readout: the zoo's ResNet-18 structure at a size that compiles fast."""

    stem: Conv2d
    stem_bn: BatchNorm
    block: BasicBlock
    readout: Dense

    def __call__(self, x):
        x = jax.nn.relu(self.stem_bn(self.stem(x)))
        x, _ = self.block.forward(x, jax.nn.relu, False)
        return self.readout(global_avg_pool(x))


def small_resnet(key) -> SmallResNet:
    init = ResNet18Model(arch="resnet18", width=2)
    k = jax.random.split(key, 5)
    block = BasicBlock(conv1=Conv2d(4, 6, 3, "SAME", init, k[1], stride=2), bn1=BatchNorm(6),
                       conv2=Conv2d(6, 6, 3, "SAME", init, k[2]), bn2=BatchNorm(6),
                       shortcut_conv=Conv2d(4, 6, 1, "SAME", init, k[3], stride=2), shortcut_bn=BatchNorm(6))
    return SmallResNet(Conv2d(3, 4, 3, "SAME", init, k[0]), BatchNorm(4), block, Dense(6, 3, init, k[4]))


MODELS = {
    "mlp": (MLPModel(arch="mlp", depth=2, width=12, b_std=0.1, parameterization="ntk"), (4, 4, 1)),
    "cnn_pool": (CNNModel(arch="cnn", depth=2, channels=4, padding="SAME", readout="gap", b_std=0.2), (6, 6, 2)),
    "lenet5": (LeNet5Model(arch="lenet5", b_std=0.1, parameterization="ntk"), (8, 8, 3)),
    "resnet_bn": (None, (8, 8, 3)),
}
IMPLEMENTATIONS = ("jacobian", "ntvp", "structured")
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@pytest.fixture(autouse=True)
def _fast_compile(monkeypatch):
    fast_compile(monkeypatch)


@functools.cache
def network(name: str) -> tuple[eqx.Module, tuple[int, ...]]:
    config, shape = MODELS[name]
    model = small_resnet(jax.random.PRNGKey(0)) if config is None else build_model(config, shape, 3, jax.random.PRNGKey(0))
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
    precision = jnp.float64 if dtype == "float64" else jnp.float32
    with jax.enable_x64(dtype == "float64"):
        for trace in (False, True):
            for implementation in IMPLEMENTATIONS:
                kernel = EmpiricalNTK(model, shape, implementation, trace=trace, dtype=precision, batch_size=5)
                got = kernel(x1.astype(dtype), x2.astype(dtype))
                assert got.dtype == np.dtype(dtype)
                error = np.max(np.abs(got - reference[trace])) / np.max(np.abs(reference[trace]))
                assert error < TOLERANCE[dtype], (name, dtype, trace, implementation, error)
    # computing in float64 casts a copy: the model keeps its float32 parameters
    assert all(p.dtype == jnp.float32 for p in named_parameters(model).values())


def test_structured_uses_layer_rules_and_falls_back_for_batchnorm():
    model, shape = network("resnet_bn")
    kernel = EmpiricalNTK(model, shape, "structured", batch_size=4)
    structure = kernel._impl.structure
    assert {layer.rule for layer in structure.layers} >= {"explicit", "dense"}
    # BatchNorm scales and offsets are parameters (Jacobian fallback); running statistics are not
    bn_parameters = sum(p.size for n, p in named_parameters(model).items() if "bn" in n)
    assert bn_parameters == 2 * (4 + 6 + 6 + 6)
    assert structure.rest_count == bn_parameters > 0
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
    assert choose_implementation(kernel._structure, 3, 8, False, 1 << 40) == "structured"


def test_scale_and_padding():
    model, shape = network("mlp")
    x = np.random.default_rng(1).standard_normal((7, *shape)).astype(np.float32)
    plain = EmpiricalNTK(model, shape, "structured", batch_size=4)(x)
    scaled = EmpiricalNTK(model, shape, "structured", batch_size=4, scale=0.5)(x)
    np.testing.assert_allclose(scaled, 0.5 * plain, rtol=1e-6)
    np.testing.assert_allclose(plain, plain.T, rtol=1e-5, atol=1e-6)
