"""The architectures of the model configs. Models map a batch (n, *input_shape) to logits (n, out_dim).

Conventions every model follows:

- Every field of a model is an array, a sub-module or static. Arrays wrapped in `Frozen` (BatchNorm
  running statistics, fixed random features) are not trained; every other array is a parameter.
  `frozen_filter()` marks the frozen leaves, `partition_parameters` splits a model into its
  parameters and the rest.
- `model(x)` is the evaluation-mode forward pass (BatchNorm with its running statistics). Models
  with batch statistics also define `forward_train(x) -> (logits, model with updated statistics)`;
  `train_forward(model, x)` calls it where it exists.
- Sequential models keep their parameterized layers in a `layers` tuple, in forward order, so their
  parameters are named `layers.<i>.weight` / `layers.<i>.bias`; residual networks name their parts
  (`stem`, `blocks.<i>.conv1`, `readout`).
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.activations import activation
from ntklab.engine.config import (
    CNNModel,
    LayerInit,
    LeNet5Model,
    LogisticModel,
    MLPModel,
    ModelConfig,
    Myrtle5Model,
    NeuralTangentModel,
    RandomFeaturesModel,
    ResNet18Model,
    WideResNetModel,
)
from ntklab.engine.layers import (
    BatchNorm,
    Conv2d,
    Dense,
    Frozen,
    Scales,
    avg_pool_2x2,
    flatten,
    global_avg_pool,
    is_frozen,
)


def frozen_filter(model: Any) -> Any:
    """A pytree of booleans shaped like `model`'s leaves: True for the leaves inside `Frozen`."""
    return jax.tree_util.tree_map(
        lambda node: jax.tree_util.tree_map(lambda _: True, node) if is_frozen(node) else False,
        model,
        is_leaf=is_frozen,
    )


class Model(eqx.Module):
    """Base of the architectures: the marking of frozen arrays that kernels and optimizers read."""

    def frozen_filter(self) -> Any:
        return frozen_filter(self)


def partition_parameters(model: Any) -> tuple[Any, Any]:
    """(trainable parameters, everything else): `eqx.combine` of the two gives the model back.
    Works on shape structs too (under `eqx.filter_eval_shape`)."""
    mask = jax.tree_util.tree_map(lambda frozen: not frozen, frozen_filter(model))
    return eqx.partition(model, mask)


def parameters(model: Any) -> Any:
    """The trainable parameters of `model`, with None in place of everything else."""
    return partition_parameters(model)[0]


def train_forward(model: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    """Logits in training mode (batch statistics) and the model with updated running statistics;
    the plain forward pass and the model itself for models without batch statistics."""
    forward = getattr(model, "forward_train", None)
    if forward is None:
        return model(x), model
    return forward(x)


# ----------------------------------------------------------------------------------------------
# Sequential networks


class MLP(Model):
    layers: tuple[Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = flatten(x)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class MeanFieldMLP(Model):
    """Ghorbani et al.'s mean-field network: act(first(x)), then act(hidden(x)) / N per hidden
    layer, then readout(x) = x a / N + c (the 1/N is the readout's weight multiplier)."""

    layers: tuple[Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    width: int = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.activation(self.layers[0](flatten(x)))
        for layer in self.layers[1:-1]:
            x = self.activation(layer(x)) / self.width
        return self.layers[-1](x)


class CNN(Model):
    layers: tuple[Conv2d | Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    readout: str = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.layers[:-1]:
            x = self.activation(conv(x))
        features = global_avg_pool(x) if self.readout == "gap" else flatten(x)
        return self.layers[-1](features)


class LeNet5(Model):
    layers: tuple[Conv2d, Conv2d, Dense, Dense, Dense]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        conv1, conv2, dense1, dense2, readout = self.layers
        x = avg_pool_2x2(self.activation(conv1(x)))
        x = flatten(avg_pool_2x2(self.activation(conv2(x))))
        x = self.activation(dense2(self.activation(dense1(x))))
        return readout(x)


class Myrtle5(Model):
    layers: tuple[Conv2d, Conv2d, Conv2d, Conv2d, Dense]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        conv1, conv2, conv3, conv4, readout = self.layers
        x = avg_pool_2x2(self.activation(conv2(self.activation(conv1(x)))))
        x = avg_pool_2x2(self.activation(conv3(x)))
        x = global_avg_pool(self.activation(conv4(x)))
        return readout(x)


class Logistic(Model):
    layers: tuple[Dense]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.layers[0](flatten(x))


# ----------------------------------------------------------------------------------------------
# Residual networks


class WideResNetBlock(eqx.Module):
    """Pre-activation block without BN: conv2(act(conv1(act(x)))) + shortcut(x)."""

    conv1: Conv2d
    conv2: Conv2d
    shortcut: Conv2d | None

    def __call__(self, x: jax.Array, act: Callable[[jax.Array], jax.Array]) -> jax.Array:
        y = self.conv2(act(self.conv1(act(x))))
        return y + (x if self.shortcut is None else self.shortcut(x))


class WideResNet(Model):
    stem: Conv2d
    blocks: tuple[WideResNetBlock, ...]
    readout: Dense
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, self.activation)
        return self.readout(global_avg_pool(x))


class BasicBlock(eqx.Module):
    """ResNet basic block: act(bn2(conv2(act(bn1(conv1(x))))) + shortcut(x))."""

    conv1: Conv2d
    bn1: BatchNorm
    conv2: Conv2d
    bn2: BatchNorm
    shortcut_conv: Conv2d | None
    shortcut_bn: BatchNorm | None

    def forward(self, x: jax.Array, act, train: bool) -> tuple[jax.Array, "BasicBlock"]:
        y, bn1 = _batch_norm(self.bn1, self.conv1(x), train)
        y, bn2 = _batch_norm(self.bn2, self.conv2(act(y)), train)
        shortcut_bn = self.shortcut_bn
        if self.shortcut_conv is None:
            shortcut = x
        else:
            shortcut, shortcut_bn = _batch_norm(self.shortcut_bn, self.shortcut_conv(x), train)
        updated = self
        if train:
            updated = eqx.tree_at(
                lambda b: (b.bn1, b.bn2, b.shortcut_bn), self, (bn1, bn2, shortcut_bn), is_leaf=lambda n: n is None
            )
        return act(y + shortcut), updated


def _batch_norm(bn: BatchNorm, x: jax.Array, train: bool) -> tuple[jax.Array, BatchNorm]:
    return bn.train_call(x) if train else (bn(x), bn)


class ResNet18(Model):
    stem: Conv2d
    stem_bn: BatchNorm
    blocks: tuple[BasicBlock, ...]
    readout: Dense
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def _forward(self, x: jax.Array, train: bool) -> tuple[jax.Array, "ResNet18"]:
        x, stem_bn = _batch_norm(self.stem_bn, self.stem(x), train)
        x = self.activation(x)
        blocks = []
        for block in self.blocks:
            x, block = block.forward(x, self.activation, train)
            blocks.append(block)
        logits = self.readout(global_avg_pool(x))
        if not train:
            return logits, self
        return logits, eqx.tree_at(lambda m: (m.stem_bn, m.blocks), self, (stem_bn, tuple(blocks)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._forward(x, train=False)[0]

    def forward_train(self, x: jax.Array) -> tuple[jax.Array, "ResNet18"]:
        return self._forward(x, train=True)


# ----------------------------------------------------------------------------------------------
# Ghorbani et al.'s random-features and neural-tangent models


class RandomFeatures(Model):
    """f(x) = readout(act(x W)), W (d x N) fixed with unit-norm columns."""

    features: Frozen
    readout: Dense
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.readout(self.activation(flatten(x) @ self.features.value))


class NeuralTangent(Model):
    """f(x) = readout(act(x W0)) + (act'(x W0) * (x G)) a0: the first-order expansion of the
    two-layer network x -> act(x W) a around (W0, a0) in W, plus a trained readout."""

    features: Frozen
    readout0: Frozen
    tangent: jax.Array
    readout: Dense
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = flatten(x)
        hidden, directional = jax.jvp(self.activation, (x @ self.features.value,), (x @ self.tangent,))
        return self.readout(hidden) + directional @ self.readout0.value


# ----------------------------------------------------------------------------------------------
# Builders


def _image_shape(input_shape: tuple[int, ...], arch: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs (height, width, channels) inputs, got shape {list(input_shape)}")
    return input_shape


def _build_mlp(config: MLPModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Model:
    sizes = [math.prod(input_shape)] + [config.width] * config.depth + [out_dim]
    keys = jax.random.split(key, len(sizes) - 1)
    if config.parameterization == "mean_field":
        return _build_mean_field_mlp(config, sizes, keys)
    layers = tuple(Dense(n_in, n_out, config, k) for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys))
    return MLP(layers, activation(config.activation))


def _build_mean_field_mlp(config: MLPModel, sizes: list[int], keys: jax.Array) -> MeanFieldMLP:
    n, w, b = config.width, config.w_std, config.b_std or 0.0
    first = Scales(w / math.sqrt(sizes[0]), 1.0, b, 1.0, weight_grad_scale=n, bias_grad_scale=n, constant_bias=True)
    hidden = Scales(w, 1.0, b, 1.0, weight_grad_scale=n * n, bias_grad_scale=n, constant_bias=True)
    layers = [Dense(sizes[0], n, config, keys[0], first)]
    layers += [Dense(n, n, config, k, hidden) for k in keys[1:-1]]
    with_bias = config.model_copy(update={"b_std": 0.0})  # the readout bias c always exists and starts at 0
    readout = Scales(w, 1.0 / n, 0.0, 1.0, weight_grad_scale=n * sizes[-1], constant_bias=True)
    layers.append(Dense(n, sizes[-1], with_bias, keys[-1], readout))
    return MeanFieldMLP(tuple(layers), activation(config.activation), n)


def _build_cnn(config: CNNModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> CNN:
    height, width, channels = _image_shape(input_shape, "cnn")
    shrink = 0 if config.padding == "SAME" else config.depth * (config.kernel_size - 1)
    if min(height, width) - shrink < 1:
        raise ValueError(
            f"{config.depth} VALID {config.kernel_size}x{config.kernel_size} convolutions "
            f"leave nothing of a {height}x{width} input"
        )
    keys = jax.random.split(key, config.depth + 1)
    in_channels = [channels] + [config.channels] * (config.depth - 1)
    convs = tuple(
        Conv2d(c, config.channels, config.kernel_size, config.padding, config, k)
        for c, k in zip(in_channels, keys[:-1])
    )
    spatial = 1 if config.readout == "gap" else (height - shrink) * (width - shrink)
    readout = Dense(spatial * config.channels, out_dim, config, keys[-1])
    return CNN(convs + (readout,), activation(config.activation), config.readout)


def _build_lenet5(config: LeNet5Model, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> LeNet5:
    height, width, channels = _image_shape(input_shape, "lenet5")
    pooled_area = (height // 4) * (width // 4)
    if pooled_area == 0:
        raise ValueError(f"lenet5 pools twice by 2 and needs inputs of at least 4x4, got {height}x{width}")
    k = jax.random.split(key, 5)
    layers = (
        Conv2d(channels, 6, 5, "SAME", config, k[0]),
        Conv2d(6, 16, 5, "SAME", config, k[1]),
        Dense(pooled_area * 16, 120, config, k[2]),
        Dense(120, 84, config, k[3]),
        Dense(84, out_dim, config, k[4]),
    )
    return LeNet5(layers, activation(config.activation))


def _build_myrtle5(config: Myrtle5Model, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Myrtle5:
    height, width, channels = _image_shape(input_shape, "myrtle5")
    if min(height, width) < 4:
        raise ValueError(f"myrtle5 pools twice by 2 and needs inputs of at least 4x4, got {height}x{width}")
    k = jax.random.split(key, 5)
    c = config.channels
    layers = (
        Conv2d(channels, c, 3, "SAME", config, k[0]),
        Conv2d(c, c, 3, "SAME", config, k[1]),
        Conv2d(c, c, 3, "SAME", config, k[2]),
        Conv2d(c, c, 3, "SAME", config, k[3]),
        Dense(c, out_dim, config, k[4]),
    )
    return Myrtle5(layers, activation(config.activation))


def _build_logistic(config: LogisticModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Logistic:
    return Logistic((Dense(math.prod(input_shape), out_dim, config, key),))


def _build_wrn(config: WideResNetModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> WideResNet:
    _, _, channels = _image_shape(input_shape, "wrn")
    groups = [(16 * config.widening, 1), (32 * config.widening, 2), (64 * config.widening, 2)]
    keys = iter(jax.random.split(key, 2 + 3 * len(groups) * config.blocks_per_group))
    stem = Conv2d(channels, config.stem_channels, 3, "SAME", config, next(keys))
    blocks = []
    in_channels = config.stem_channels
    for out_channels, stride in groups:
        for index in range(config.blocks_per_group):
            s = stride if index == 0 else 1
            conv1 = Conv2d(in_channels, out_channels, 3, "SAME", config, next(keys), stride=s)
            conv2 = Conv2d(out_channels, out_channels, 3, "SAME", config, next(keys))
            shortcut_key = next(keys)
            shortcut = (
                Conv2d(in_channels, out_channels, 3, "SAME", config, shortcut_key, stride=s) if index == 0 else None
            )
            blocks.append(WideResNetBlock(conv1, conv2, shortcut))
            in_channels = out_channels
    readout = Dense(in_channels, out_dim, config, next(keys))
    return WideResNet(stem, tuple(blocks), readout, activation(config.activation))


def _build_resnet18(config: ResNet18Model, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> ResNet18:
    _, _, channels = _image_shape(input_shape, "resnet18")
    w = config.width
    stages = [(w, 1), (2 * w, 2), (4 * w, 2), (8 * w, 2)]
    keys = iter(jax.random.split(key, 2 + 3 * 2 * len(stages)))

    def bn(c: int) -> BatchNorm:
        return BatchNorm(c, config.bn_momentum, config.bn_eps)

    stem = Conv2d(channels, w, 3, "SAME", config, next(keys))
    blocks = []
    in_channels = w
    for out_channels, stride in stages:
        for index in range(2):
            s = stride if index == 0 else 1
            conv1 = Conv2d(in_channels, out_channels, 3, "SAME", config, next(keys), stride=s)
            conv2 = Conv2d(out_channels, out_channels, 3, "SAME", config, next(keys))
            shortcut_key = next(keys)
            project = s != 1 or in_channels != out_channels
            shortcut_conv = Conv2d(in_channels, out_channels, 1, "SAME", config, shortcut_key, stride=s) if project else None
            blocks.append(
                BasicBlock(conv1, bn(out_channels), conv2, bn(out_channels), shortcut_conv, bn(out_channels) if project else None)
            )
            in_channels = out_channels
    readout = Dense(in_channels, out_dim, config, next(keys))
    return ResNet18(stem, bn(w), tuple(blocks), readout, activation(config.activation))


def _unit_norm_features(config, d: int, key: jax.Array, extra: int = 0) -> tuple[jax.Array, ...]:
    """W (d x width) with unit-norm Gaussian columns (and `extra` more standard-normal draws from the
    same stream), from `feature_seed` when set, else from the model key."""
    if config.feature_seed is not None:
        key = jax.random.PRNGKey(config.feature_seed)
    keys = jax.random.split(key, 1 + extra)
    w = jax.random.normal(keys[0], (d, config.width), jnp.float32)
    w = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    return (w, *keys[1:])


_ZERO_READOUT = Scales(0.0, 1.0, 0.0, 1.0, constant_bias=True)
_WITH_BIAS = LayerInit(b_std=0.0)


def _build_rf(config: RandomFeaturesModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> RandomFeatures:
    (features,) = _unit_norm_features(config, math.prod(input_shape), key)
    readout = Dense(config.width, out_dim, _WITH_BIAS, key, _ZERO_READOUT)
    return RandomFeatures(Frozen(features), readout, activation(config.activation))


def _build_nt(config: NeuralTangentModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> NeuralTangent:
    d = math.prod(input_shape)
    features, readout0_key = _unit_norm_features(config, d, key, extra=1)
    readout0 = jax.random.normal(readout0_key, (config.width, out_dim), jnp.float32)
    readout = Dense(config.width, out_dim, _WITH_BIAS, key, _ZERO_READOUT)
    tangent = jnp.zeros((d, config.width), jnp.float32)
    return NeuralTangent(Frozen(features), Frozen(readout0), tangent, readout, activation(config.activation))


_BUILDERS = {
    "mlp": _build_mlp,
    "cnn": _build_cnn,
    "lenet5": _build_lenet5,
    "myrtle5": _build_myrtle5,
    "logistic": _build_logistic,
    "wrn": _build_wrn,
    "resnet18": _build_resnet18,
    "rf": _build_rf,
    "nt": _build_nt,
}


def build_model(config: ModelConfig, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Model:
    """The initialized model: a pure function of the config, the shapes and the key."""
    return _BUILDERS[config.arch](config, tuple(input_shape), out_dim, key)


def path_name(path: tuple) -> str:
    """A pytree key path as dotted text: `layers.0.weight`."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return ".".join(parts)


def named_parameters(model: Any) -> dict[str, jax.Array]:
    """The model's trainable arrays by dotted path, in pytree order (arrays, or shape structs under
    `eqx.filter_eval_shape`); frozen arrays are left out."""
    leaves = jax.tree_util.tree_flatten_with_path(parameters(model))[0]
    return {path_name(path): leaf for path, leaf in leaves}


def named_frozen(model: Any) -> dict[str, jax.Array]:
    """The model's frozen arrays by dotted path (`stem_bn.running_mean.value`)."""
    leaves = jax.tree_util.tree_flatten_with_path(partition_parameters(model)[1])[0]
    return {path_name(path): leaf for path, leaf in leaves if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))}
