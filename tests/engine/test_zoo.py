"""The model zoo added for Taylorized training and Ghorbani's models: WideResNet, ResNet-18 with
BatchNorm, random features, neural tangent, logistic regression, the taylor and mean-field
parameterizations, swish and softplus."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from pydantic import TypeAdapter, ValidationError

from ntklab.engine.activations import activation
from ntklab.engine.config import ModelConfig, TrainConfig
from ntklab.engine.layers import Dense, Frozen
from ntklab.engine.losses import mean_loss
from ntklab.engine.models import build_model, frozen_filter, named_frozen, named_parameters, partition_parameters
from ntklab.engine.optim import make_optimizer
from ntklab.engine.plan import Init
from ntklab.engine.training import init_train_state, make_train_step

parse_model = TypeAdapter(ModelConfig).validate_python


def shapes(model) -> dict[str, tuple]:
    return {name: tuple(p.shape) for name, p in named_parameters(model).items()}


build = eqx.filter_jit(build_model)  # one compilation instead of one per layer shape
forward = eqx.filter_jit(lambda model, x: model(x))
forward_train = eqx.filter_jit(lambda model, x: model.forward_train(x))


def abstract(config: dict, input_shape, out_dim=10):
    return eqx.filter_eval_shape(build_model, parse_model(config), input_shape, out_dim, jax.random.PRNGKey(0))


# ----------------------------------------------------------------------------------------------
# WideResNet (Bai et al.)


def test_wrn_16_4_with_a_128_channel_stem_has_bai_s_layout():
    model = abstract({"arch": "wrn", "blocks_per_group": 2, "widening": 4, "stem_channels": 128}, (32, 32, 3))
    names = shapes(model)
    assert names["stem.weight"] == (3, 3, 3, 128)
    assert len(model.blocks) == 6
    assert [hasattr(b, "shortcut") for b in model.blocks] == [True, False, True, False, True, False]
    assert names["blocks.0.shortcut.weight"] == (3, 3, 128, 64), "3x3 convolution shortcut at the group entry"
    assert names["blocks.2.conv1.weight"] == (3, 3, 64, 128)
    assert names["blocks.4.shortcut.weight"] == (3, 3, 128, 256)
    assert [b.conv1.strides for b in model.blocks] == [(1, 1)] * 2 + [(2, 2), (1, 1)] * 2
    assert names["readout.weight"] == (256, 10)
    assert len(names) == 1 + 6 * 2 + 3 + 1, "no biases by default"
    logits = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert logits.shape == (2, 10)


def test_wrn_block_is_pre_activation_with_a_conv_shortcut():
    model = build(parse_model({"arch": "wrn", "blocks_per_group": 1, "widening": 1, "stem_channels": 3,
                               "b_std": 0.1}), (8, 8, 2), 4, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype(np.float32)
    relu = jax.nn.relu

    @eqx.filter_jit
    def check(model, x):
        out, shapes = model.stem(x), []
        for block in model.blocks:
            out = block.conv2(relu(block.conv1(relu(out)))) + block.shortcut(out)
            shapes.append(out.shape)
        return model.readout(jnp.mean(out, axis=(1, 2))), model(x), shapes

    expected, logits, block_shapes = check(model, x)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert block_shapes == [(2, 8, 8, 16), (2, 4, 4, 32), (2, 2, 2, 64)], "stride 2 at the second and third groups"


# ----------------------------------------------------------------------------------------------
# ResNet-18 with BatchNorm


def test_resnet18_has_the_cifar_parameter_count():
    model = abstract({"arch": "resnet18"}, (32, 32, 3))
    count = sum(math.prod(s) for s in shapes(model).values())
    assert count == 11_173_962 - 10, "torchvision-style CIFAR ResNet-18 without the readout bias"
    frozen = named_frozen(model)
    assert "stem_bn.running_mean.value" in frozen and len(frozen) == 2 * (1 + 8 * 2 + 3)


@pytest.fixture(scope="module")
def resnet():
    """A narrow ResNet-18, built once: initialization compiles a random draw per weight shape."""
    return build(parse_model({"arch": "resnet18", "width": 1, "bn_momentum": 0.25}), (4, 4, 3), 3,
                 jax.random.PRNGKey(0))


def test_batchnorm_trains_on_batch_statistics_and_evaluates_with_running_ones(resnet):
    model = resnet
    x = np.random.default_rng(1).normal(loc=2.0, size=(6, 4, 4, 3)).astype(np.float32)
    logits, updated = forward_train(model, x)
    stem_out = np.asarray(model.stem(x), np.float64)
    mean, var = stem_out.mean(axis=(0, 1, 2)), stem_out.var(axis=(0, 1, 2))
    count = 6 * 4 * 4
    np.testing.assert_allclose(updated.stem_bn.running_mean.value, 0.25 * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(updated.stem_bn.running_var.value, 0.75 + 0.25 * var * count / (count - 1), rtol=1e-4)
    normalized = updated.stem_bn.train_call(jnp.asarray(stem_out, jnp.float32))[0]
    np.testing.assert_allclose(np.mean(normalized, axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.var(normalized, axis=(0, 1, 2)), 1.0, rtol=1e-3)
    # evaluation mode uses the running statistics: with the initial ones (0, 1) BN is the identity
    np.testing.assert_allclose(model.stem_bn(stem_out), stem_out, rtol=1e-5)
    assert not np.allclose(forward(model, x), logits, rtol=1e-2)
    # parameters are untouched by a training-mode forward pass
    for name, p in named_parameters(updated).items():
        np.testing.assert_array_equal(p, named_parameters(model)[name])


def test_the_optimizer_never_sees_frozen_arrays_and_batch_statistics_update_in_training(resnet):
    model = resnet
    config = TrainConfig.model_validate({"optimizer": {"name": "momentum", "lr": 0.1}, "weight_decay": 0.1})
    optimizer = make_optimizer(config, 1, 10)
    state = init_train_state(model, optimizer)
    assert all(not jax.tree_util.tree_leaves(f) or not isinstance(f, Frozen)
               for f in jax.tree_util.tree_leaves(state.opt_state, is_leaf=lambda n: isinstance(n, Frozen)))
    x = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1], np.int32)
    after, _ = make_train_step("cross_entropy", optimizer)(state, x, y)
    _, expected = forward_train(model, x)
    for name, value in named_frozen(after.model).items():
        np.testing.assert_allclose(value, named_frozen(expected)[name], rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Ghorbani's random-features and neural-tangent models, logistic regression


def test_random_features_are_fixed_unit_norm_and_the_readout_starts_at_zero():
    model = build_model(parse_model({"arch": "rf", "width": 50}), (4, 4, 1), 3, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.linalg.norm(model.features.value, axis=0), 1.0, rtol=1e-5)
    assert shapes(model) == {"readout.weight": (50, 3), "readout.bias": (3,)}
    x = np.random.default_rng(0).normal(size=(7, 4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(model(x), 0.0)
    trained = eqx.tree_at(lambda m: (m.readout.weight, m.readout.bias), model, (jnp.ones((50, 3)), jnp.arange(3.0)))
    expected = np.maximum(x.reshape(7, 16) @ np.asarray(model.features.value), 0.0).sum(axis=1, keepdims=True) + np.arange(3)
    np.testing.assert_allclose(trained(x), expected, rtol=1e-5)
    seeded = [build_model(parse_model({"arch": "rf", "width": 5, "feature_seed": 1990}), (16,), 2, jax.random.PRNGKey(k))
              for k in (0, 1)]
    np.testing.assert_array_equal(seeded[0].features.value, seeded[1].features.value)


def test_neural_tangent_model_is_the_first_order_expansion_of_a_two_layer_relu_net():
    model = build_model(parse_model({"arch": "nt", "width": 20}), (6,), 4, jax.random.PRNGKey(0))
    assert shapes(model) == {"tangent": (6, 20), "readout.weight": (20, 4), "readout.bias": (4,)}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 6)).astype(np.float32)
    np.testing.assert_array_equal(model(x), 0.0)
    g, a, c = rng.normal(size=(6, 20)), rng.normal(size=(20, 4)), rng.normal(size=4)
    trained = eqx.tree_at(lambda m: (m.tangent, m.readout.weight, m.readout.bias), model,
                          (jnp.asarray(g, jnp.float32), jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32)))
    w0, a0 = np.asarray(model.features.value, np.float64), np.asarray(model.readout0.value, np.float64)
    z = x @ w0
    expected = np.maximum(z, 0) @ a + c + ((z > 0) * (x @ g)) @ a0  # Ghorbani's closed form
    np.testing.assert_allclose(trained(x), expected, rtol=1e-4, atol=1e-4)
    assert set(named_frozen(model)) == {"features.value", "readout0.value"}


def test_logistic_regression_is_one_dense_layer():
    model = build_model(parse_model({"arch": "logistic", "b_std": 0.5}), (3, 3, 2), 4, jax.random.PRNGKey(0))
    assert shapes(model) == {"layers.0.weight": (18, 4), "layers.0.bias": (4,)}
    x = np.random.default_rng(0).normal(size=(5, 3, 3, 2)).astype(np.float32)
    layer = model.layers[0]
    np.testing.assert_allclose(model(x), x.reshape(5, 18) @ layer.weight + layer.bias, rtol=1e-5)


def test_frozen_filter_marks_exactly_the_frozen_leaves():
    model = build_model(parse_model({"arch": "nt", "width": 3}), (2,), 2, jax.random.PRNGKey(0))
    marks = jax.tree_util.tree_leaves(frozen_filter(model))
    assert marks == [True, True, False, False, False]
    params, rest = partition_parameters(model)
    assert len(jax.tree_util.tree_leaves(params)) == 3 and len(jax.tree_util.tree_leaves(rest)) == 2


# ----------------------------------------------------------------------------------------------
# Parameterizations


def test_taylor_parameterization_of_order_one_is_the_ntk_one():
    key = jax.random.PRNGKey(3)
    ntk = Dense(30, 20, Init(parameterization="ntk", w_std=1.3, b_std=0.2), key)
    taylor = Dense(30, 20, Init(parameterization="taylor", param_order=1, w_std=1.3, b_std=0.2), key)
    np.testing.assert_allclose(taylor.weight, ntk.weight, rtol=1e-6)
    assert taylor.weight_multiplier == pytest.approx(ntk.weight_multiplier)
    assert taylor.bias_multiplier == ntk.bias_multiplier


@pytest.mark.parametrize("order", [2, 4])
def test_taylor_parameterization_stores_and_scales_weights_as_bai(order):
    fan_in = 400
    key = jax.random.PRNGKey(0)
    layer = Dense(fan_in, 300, Init(parameterization="taylor", param_order=order, w_std=1.5), key)
    standard = Dense(fan_in, 300, Init(parameterization="standard", w_std=1.5), key)
    assert float(np.var(layer.weight)) == pytest.approx(fan_in ** (-(order - 1) / (order + 1)), rel=0.03)
    assert layer.weight_multiplier == pytest.approx(1.5 * fan_in ** (-1 / (order + 1)))
    x = np.random.default_rng(0).normal(size=(4, fan_in)).astype(np.float32)
    np.testing.assert_allclose(layer(x), standard(x), rtol=1e-4, atol=1e-5), "the same function at init"


def test_parameterization_fields_are_checked():
    with pytest.raises(ValidationError, match="param_order"):
        parse_model({"arch": "mlp", "parameterization": "taylor"})
    with pytest.raises(ValidationError, match="param_order"):
        parse_model({"arch": "mlp", "param_order": 2})
    with pytest.raises(ValidationError, match="mlp only"):
        parse_model({"arch": "cnn", "parameterization": "mean_field"})


def test_mean_field_mlp_matches_ghorbani_s_network_and_gradient_scaling():
    n, d, c = 64, 10, 3
    config = parse_model({"arch": "mlp", "depth": 2, "width": n, "parameterization": "mean_field", "b_std": 0.01})
    model = build_model(config, (d,), c, jax.random.PRNGKey(0))
    first, hidden, readout = model.layers
    assert float(np.std(first.weight)) == pytest.approx(1 / math.sqrt(d), rel=0.1)
    assert float(np.std(hidden.weight)) == pytest.approx(1.0, rel=0.05)
    assert float(np.std(readout.weight)) == pytest.approx(1.0, rel=0.1)
    np.testing.assert_array_equal(first.bias, np.float32(0.01))
    np.testing.assert_array_equal(readout.bias, 0.0)
    x = np.random.default_rng(0).normal(size=(5, d)).astype(np.float32)
    h = np.maximum(x @ first.weight + first.bias, 0)
    h = np.maximum(h @ hidden.weight + hidden.bias, 0) / n
    np.testing.assert_allclose(model(x), h @ readout.weight / n + readout.bias, rtol=1e-4, atol=1e-6)

    y = np.array([0, 1, 2, 1, 0], np.int32)
    lr = 0.01
    optimizer = make_optimizer(TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": lr}}), 1, 10)
    after, _ = make_train_step("cross_entropy", optimizer)(init_train_state(model, optimizer), x, y)
    grads = jax.grad(lambda m: mean_loss("cross_entropy", m(x), y))(model)
    expected = {
        "layers.0.weight": n, "layers.0.bias": n, "layers.1.weight": n * n, "layers.1.bias": n,
        "layers.2.weight": n * c, "layers.2.bias": 1,
    }
    for name, scale in expected.items():
        step = named_parameters(model)[name] - named_parameters(after.model)[name]
        np.testing.assert_allclose(step, lr * scale * named_parameters(grads)[name], rtol=2e-3, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Activations


def test_swish_and_softplus():
    x = np.linspace(-30, 30, 121).astype(np.float32)
    np.testing.assert_allclose(activation("swish")(x), x / (1 + np.exp(-x.astype(np.float64))), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(activation("softplus")(x), np.logaddexp(0, x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    slope = jax.vmap(jax.grad(activation("softplus")))(jnp.asarray(x))
    np.testing.assert_allclose(slope, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-5, atol=1e-6)
    second = jax.vmap(jax.grad(jax.grad(activation("swish"))))(jnp.asarray([0.0, 1.0]))
    s = 1 / (1 + np.exp(-1.0))
    np.testing.assert_allclose(second, [0.5, 2 * s * (1 - s) + s * (1 - s) * (1 - 2 * s)], rtol=1e-5)


def test_optimizer_state_covers_parameters_only():
    model = build_model(parse_model({"arch": "rf", "width": 8}), (4,), 2, jax.random.PRNGKey(0))
    optimizer = optax.adam(0.1)
    state = init_train_state(model, optimizer)
    sizes = sorted(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(state.opt_state))
    assert sizes == sorted([1] + [8 * 2, 2] * 2), "count, then mu and nu of the readout weight and bias only"
