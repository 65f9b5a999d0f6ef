"""Elementwise activations by the names the model configs use."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x): its infinite-width kernel has a closed form, the tanh approximation's has not."""
    return jax.nn.gelu(x, approximate=False)


def swish(x: jax.Array) -> jax.Array:
    """x * sigmoid(x) (Bai et al.'s `swish`; also called SiLU)."""
    return x * jax.nn.sigmoid(x)


def softplus(x: jax.Array) -> jax.Array:
    """log(1 + e^x), computed stably (jax.nn.softplus, a custom-JVP function through logaddexp,
    whose derivatives of every order are right at 0 too)."""
    return jax.nn.softplus(x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "erf": erf,
    "gelu": gelu,
    "tanh": jnp.tanh,
    "swish": swish,
    "softplus": softplus,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[name]
