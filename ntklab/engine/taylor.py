"""Taylor expansions of any model around a point: the linearized (order 1) and Taylorized
(orders 2..4) networks of Bai et al. 2020.

The order-k expansion of f around theta0, evaluated at theta = theta0 + delta, is

    f_k(theta) = sum_{j <= k} (1/j!) D^j f(theta0)[delta, ..., delta]
               = sum_{j <= k} (1/j!) d^j/dt^j f(theta0 + t delta) at t = 0,

the Taylor polynomial of the scalar path g(t) = f(theta0 + t delta). We compute all its
coefficients in one k-times nested forward-mode derivative of g at t = 0 (`taylor_coefficients`):
nesting `jax.jvp` k times yields 2^k outputs, one per subset of the nesting levels, and the one
taken with the tangent at the first j levels is g^(j)(0). Once jitted, XLA merges the repeated
sub-computations (every output with j tangents is the same function), which leaves a cost close to
Taylor-mode propagation: about 4.5x a forward pass at order 4 for an MLP, where
`jax.experimental.jet` costs about 9x (it multiplies the all-zero higher-order coefficients of the
parameter path) and fails on custom-JVP activations such as `jax.nn.relu` (bench/taylor.py).

Gradients. Reverse mode straight through the nested derivative is slow: it differentiates the 2^k
structure before XLA can merge it (12x a plain gradient at order 4). `taylor_polynomial` has a
custom JVP instead, from the identity (symmetry of D^j f)

    d/d delta f_k(theta0 + delta) [h] = D_theta f_{k-1}(theta; delta fixed) [h]  at theta = theta0,

i.e. the derivative with respect to delta of the order-k polynomial is the derivative with respect
to the expansion point of the order-(k-1) one, a single forward-mode derivative (which JAX
transposes for reverse mode) through a polynomial of one order less: about 5x a plain gradient at
order 4. Derivatives with respect to the expansion point or the other arguments (rarely needed)
fall back to differentiating the nested derivative itself.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ntklab.engine.models import partition_parameters, train_forward


def _path(center: Any, delta: Any, t: jax.Array) -> Any:
    """center + t delta, leaf by leaf (leaves where `delta` is None stay at the center)."""
    return jax.tree_util.tree_map(lambda c, d: c + t * d, center, delta)


def _scalar_like(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return jnp.zeros((), dtype)


def taylor_coefficients(fn: Callable, center: Any, delta: Any, args: tuple, order: int) -> list[Any]:
    """[c_0, ..., c_order] with c_j = (1/j!) d^j/dt^j fn(center + t delta, *args) at t = 0.

    `center` and `delta` are pytrees of arrays of the same structure (delta may hold None where
    center holds a leaf that does not move); `fn` returns a pytree of arrays.
    """

    def path_value(t):
        return fn(_path(center, delta, t), *args)

    nested = path_value
    for _ in range(order):
        nested = functools.partial(_with_derivative, nested)
    out = nested(_scalar_like(center))
    coefficients = []
    for j in range(order + 1):
        node = out
        for level in range(order):  # outermost level first: tangent at the first j levels
            node = node[1] if level < j else node[0]
        scale = 1.0 / math.factorial(j)
        coefficients.append(node if j < 2 else jax.tree_util.tree_map(lambda v, s=scale: v * s, node))
    return coefficients


def _with_derivative(h: Callable, t: jax.Array):
    return jax.jvp(h, (t,), (jnp.ones_like(t),))


def _sum(terms: list[Any]) -> Any:
    return functools.reduce(lambda a, b: jax.tree_util.tree_map(jnp.add, a, b), terms)


def _polynomial_value(fn: Callable, order: int, offset: bool, center: Any, delta: Any, args: tuple) -> Any:
    terms = taylor_coefficients(fn, center, delta, args, order)
    return _sum(terms if offset else terms[1:])


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _polynomial(fn: Callable, order: int, offset: bool, center: Any, delta: Any, args: tuple) -> Any:
    return _polynomial_value(fn, order, offset, center, delta, args)


def _is_zero(tree: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, SymbolicZero))
    return all(isinstance(leaf, SymbolicZero) for leaf in leaves)


def _instantiate(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, SymbolicZero) else x,
        tree,
        is_leaf=lambda x: isinstance(x, SymbolicZero),
    )


@_polynomial.defjvp
def _polynomial_jvp(fn, order, offset, primals, tangents):
    center, delta, args = primals
    d_center, d_delta, d_args = tangents
    out = _polynomial(fn, order, offset, center, delta, args)
    tangent_out = []
    if not _is_zero(d_delta):
        # D_delta f_k [h] = D_theta f_{k-1}(theta; delta) [h] at theta = center (see the module docstring).
        def lower(c):
            return _polynomial_value(fn, order - 1, True, c, delta, args)

        tangent_out.append(jax.jvp(lower, (center,), (_instantiate(d_delta),))[1])
    if not (_is_zero(d_center) and _is_zero(d_args)):

        def full(c, a):
            return _polynomial_value(fn, order, offset, c, delta, a)

        tangent_out.append(jax.jvp(full, (center, args), (_instantiate(d_center), _instantiate(d_args)))[1])
    if not tangent_out:
        return out, jax.tree_util.tree_map(jnp.zeros_like, out)
    return out, _sum(tangent_out)


_polynomial.defjvp(_polynomial_jvp, symbolic_zeros=True)


def taylor_polynomial(
    fn: Callable, center: Any, delta: Any, *args: Any, order: int, offset: bool = True
) -> Any:
    """sum_{j <= order} (1/j!) d^j/dt^j fn(center + t delta, *args) at t = 0 (from j = 1 when
    `offset` is False): the order-k Taylor expansion of `fn` around `center`, at center + delta.

    `fn` must be a hashable function of (params, *args) with no closure over traced values.
    Differentiable in `delta` (cheaply, see the module docstring), `center` and `args`, in forward
    and reverse mode.
    """
    if order < 0:
        raise ValueError(f"the order of an expansion is at least 0, got {order}")
    if order == 0:
        return fn(center, *args) if offset else jax.tree_util.tree_map(jnp.zeros_like, fn(center, *args))
    return _polynomial(fn, order, offset, center, delta, tuple(args))


def _call_model(params: Any, rest: Any, x: jax.Array) -> jax.Array:
    return eqx.combine(params, rest)(x)


class Network(eqx.Module):
    """The forward pass of the model itself (expansion order 0): `forward(model, x)` evaluates,
    `forward.train(model, x)` uses batch statistics and returns the updated model."""

    def __call__(self, model: Any, x: jax.Array) -> jax.Array:
        return model(x)

    def train(self, model: Any, x: jax.Array) -> tuple[jax.Array, Any]:
        return train_forward(model, x)


class TaylorExpansion(eqx.Module):
    """The order-k expansion of a model around `center` (its parameters theta0), as a forward pass
    of models of the same architecture: `expansion(model, x)` = f_k(theta_model)(x). Frozen arrays
    (BatchNorm statistics) are taken from the center and stay frozen, in training too."""

    center: Any
    order: int = eqx.field(static=True)
    offset: bool = eqx.field(static=True)

    def __call__(self, model: Any, x: jax.Array) -> jax.Array:
        center_params, rest = partition_parameters(self.center)
        params = partition_parameters(model)[0]
        delta = jax.tree_util.tree_map(jnp.subtract, params, center_params)
        return taylor_polynomial(_call_model, center_params, delta, rest, x, order=self.order, offset=self.offset)

    def train(self, model: Any, x: jax.Array) -> tuple[jax.Array, Any]:
        return self(model, x), model


def make_forward(center: Any, order: int, offset: bool = True) -> Network | TaylorExpansion:
    """The forward pass that training order `order` uses: the network at 0, else its expansion
    around `center`."""
    if order == 0:
        return Network()
    return TaylorExpansion(center, order, offset)
