"""Elementwise activations by the names the model configs use."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x): its infinite-width kernel has a closed form, the tanh approximation's has not."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "erf": erf,
    "gelu": gelu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    return ACTIVATIONS[name]
