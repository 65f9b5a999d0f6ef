"""The architectures of the model configs. Models map a batch (n, *input_shape) to logits (n, out_dim).

Every model keeps its parameterized layers in a `layers` tuple, in forward order, so parameters are
named `layers.<i>.weight` / `layers.<i>.bias` whatever the architecture.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax

from ntklab.engine.activations import activation
from ntklab.engine.config import CNNModel, LeNet5Model, MLPModel, ModelConfig, Myrtle5Model
from ntklab.engine.layers import Conv2d, Dense, avg_pool_2x2, flatten, global_avg_pool


class MLP(eqx.Module):
    layers: tuple[Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = flatten(x)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class CNN(eqx.Module):
    layers: tuple[Conv2d | Dense, ...]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    readout: str = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.layers[:-1]:
            x = self.activation(conv(x))
        features = global_avg_pool(x) if self.readout == "gap" else flatten(x)
        return self.layers[-1](features)


class LeNet5(eqx.Module):
    layers: tuple[Conv2d, Conv2d, Dense, Dense, Dense]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        conv1, conv2, dense1, dense2, readout = self.layers
        x = avg_pool_2x2(self.activation(conv1(x)))
        x = flatten(avg_pool_2x2(self.activation(conv2(x))))
        x = self.activation(dense2(self.activation(dense1(x))))
        return readout(x)


class Myrtle5(eqx.Module):
    layers: tuple[Conv2d, Conv2d, Conv2d, Conv2d, Dense]
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        conv1, conv2, conv3, conv4, readout = self.layers
        x = avg_pool_2x2(self.activation(conv2(self.activation(conv1(x)))))
        x = avg_pool_2x2(self.activation(conv3(x)))
        x = global_avg_pool(self.activation(conv4(x)))
        return readout(x)


def _image_shape(input_shape: tuple[int, ...], arch: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs (height, width, channels) inputs, got shape {list(input_shape)}")
    return input_shape


def _build_mlp(config: MLPModel, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> MLP:
    sizes = [math.prod(input_shape)] + [config.width] * config.depth + [out_dim]
    keys = jax.random.split(key, len(sizes) - 1)
    layers = tuple(Dense(n_in, n_out, config, k) for n_in, n_out, k in zip(sizes[:-1], sizes[1:], keys))
    return MLP(layers, activation(config.activation))


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


_BUILDERS = {"mlp": _build_mlp, "cnn": _build_cnn, "lenet5": _build_lenet5, "myrtle5": _build_myrtle5}


def build_model(config: ModelConfig, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> eqx.Module:
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


def named_parameters(model: eqx.Module) -> dict[str, jax.Array]:
    """The model's arrays by dotted path, in pytree order. Every other field of a model is static,
    so its leaves are its parameters (arrays, or shape structs under `eqx.filter_eval_shape`)."""
    leaves = jax.tree_util.tree_flatten_with_path(model)[0]
    return {path_name(path): leaf for path, leaf in leaves}
