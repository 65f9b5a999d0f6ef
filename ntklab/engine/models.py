"""The models of the model configs. Models map a batch (n, *input_shape) to logits (n, out_dim).

Every layer architecture (the named ones and `arch: layers`) is a `Network` built from its plan
(engine/presets.py -> engine/plan.py -> engine/network.py); Ghorbani et al.'s random-features and
neural-tangent models, which are not networks of layers, are written here.

Conventions every model follows:

- Every field of a model is an array, a sub-module or static. Arrays wrapped in `Frozen` (BatchNorm
  running statistics, fixed random features) are not trained; every other floating array is a
  parameter. `partition_parameters` splits a model into its parameters and the rest.
- `model(x)` is the evaluation-mode forward pass (BatchNorm with its running statistics). Models
  with batch statistics also define `forward_train(x) -> (logits, model with updated statistics)`;
  `train_forward(model, x)` calls it where it exists.
- Parameters are named by their path: `layers.<i>.weight`, `blocks.<i>.conv1.bias`, `readout.weight`.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.activations import activation
from ntklab.engine.config import ModelConfig, NeuralTangentModel, RandomFeaturesModel
from ntklab.engine.layers import Dense, Frozen, flatten, is_frozen
from ntklab.engine.network import build_network
from ntklab.engine.plan import Init, Scales
from ntklab.engine.presets import plan_of


def frozen_filter(model: Any) -> Any:
    """A pytree of booleans shaped like `model`'s leaves: True for the leaves inside `Frozen`."""
    return jax.tree_util.tree_map(
        lambda node: jax.tree_util.tree_map(lambda _: True, node) if is_frozen(node) else False,
        model,
        is_leaf=is_frozen,
    )


def _is_floating(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def partition_parameters(model: Any) -> tuple[Any, Any]:
    """(trainable parameters, everything else): the floating arrays outside `Frozen`. `eqx.combine`
    of the two gives the model back. Works on shape structs too (under `eqx.filter_eval_shape`)."""
    mask = jax.tree_util.tree_map(lambda leaf, frozen: _is_floating(leaf) and not frozen, model, frozen_filter(model))
    return eqx.partition(model, mask)


def parameters(model: Any) -> Any:
    """The trainable parameters of `model`, with None in place of everything else."""
    return partition_parameters(model)[0]


def parameter_count(model: Any) -> int:
    """The number of trainable numbers of `model` (or of a tree of parameters)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(parameters(model))))


def train_forward(model: Any, x: jax.Array) -> tuple[jax.Array, Any]:
    """Logits in training mode (batch statistics) and the model with updated running statistics;
    the plain forward pass and the model itself for models without batch statistics."""
    forward = getattr(model, "forward_train", None)
    if forward is None:
        return model(x), model
    return forward(x)


# ----------------------------------------------------------------------------------------------
# Ghorbani et al.'s random-features and neural-tangent models


class RandomFeatures(eqx.Module):
    """f(x) = readout(act(x W)), W (d x N) fixed with unit-norm columns."""

    features: Frozen
    readout: Dense
    activation: Callable[[jax.Array], jax.Array] = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.readout(self.activation(flatten(x) @ self.features.value))


class NeuralTangent(eqx.Module):
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
_WITH_BIAS = Init(b_std=0.0)


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


def build_model(config: ModelConfig, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Any:
    """The initialized model: a pure function of the config, the shapes and the key."""
    if config.arch == "rf":
        return _build_rf(config, tuple(input_shape), out_dim, key)
    if config.arch == "nt":
        return _build_nt(config, tuple(input_shape), out_dim, key)
    return build_network(plan_of(config, out_dim), tuple(input_shape), out_dim, key)


def path_name(path: tuple) -> str:
    """A pytree key path as dotted text: `layers.0.weight`."""
    return jax.tree_util.keystr(path, simple=True, separator=".")


def named_parameters(model: Any) -> dict[str, jax.Array]:
    """The model's trainable arrays by dotted path, in pytree order (arrays, or shape structs under
    `eqx.filter_eval_shape`); frozen arrays are left out."""
    leaves = jax.tree_util.tree_flatten_with_path(parameters(model))[0]
    return {path_name(path): leaf for path, leaf in leaves}


def named_frozen(model: Any) -> dict[str, jax.Array]:
    """The model's frozen arrays by dotted path (`stem_bn.running_mean.value`)."""
    leaves = jax.tree_util.tree_flatten_with_path(partition_parameters(model)[1])[0]
    return {path_name(path): leaf for path, leaf in leaves if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))}
