"""Neural anisotropy directions (NADs, Ortiz-Jiménez et al. 2020 and 2021): the input directions a
network's gradient is most and least sensitive to, from its mixed second derivative at θ0.

With f the network's single logit and x the input (D values), the operator A: R^D -> R^P,

    A v = mean over the points x of ∇_θ ⟨∇_x f(θ0, x), v⟩,

is the mixed derivative ∂²f/∂θ∂x applied to v (a JVP in x, then a gradient in θ). The NADs are
its right singular vectors u_1, u_2, ... (directions in input space) in decreasing order of the
singular values σ_i, i.e. the eigenvectors of the D x D Gram matrix G = AᵀA, with eigenvalues σ².
The points are x = σ_x·N(0, I); σ_x = 0 gives the seed's single all-zero image.

Two exact routes:
- `explicit`: the rows A e_d for every input basis vector e_d, vmapped over d in chunks (D·P
  values in memory), then G = B Bᵀ and LAPACK's eigh: about D²P + D³ flops.
- `krylov`: Lanczos (ntklab/engine/eigen.py) over v -> Aᵀ(A v), where Aᵀu = mean over x of
  ∇_x ⟨∇_θ f, u⟩; memory a few parameter vectors, for networks whose D x P matrix does not fit.
The seed runs scipy's svds over A with one JVP/VJP pair per product, which for k = D - 1 costs
thousands of products (bench/spectral.py); the explicit route needs D (vectorized) gradients.
(The seed sums over the points in Aᵀ and averages in A; both average here, so Aᵀ is the adjoint.)
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntklab.engine.eigen import Spectrum, dense_eigenpairs, operator_eigenpairs


def _scalar(model_fn: Callable, params: Any, rest: Any, x: jax.Array) -> jax.Array:
    """The single logit of one input (no batch axis)."""
    return model_fn(eqx.combine(params, rest), x[None])[0, 0]


def mixed_derivative_rows(model_fn: Callable, params: Any, rest: Any, points: np.ndarray, chunk: int = 64
                          ) -> np.ndarray:
    """B = Aᵀ as a (D, P) array: row d is mean over the points of ∇_θ ∂f/∂x_d."""
    shape = points.shape[1:]
    d = int(np.prod(shape))
    flat, unravel = ravel_pytree(params)

    @jax.jit
    def rows(directions, x):
        def row(direction):
            def directional(p):
                return jax.jvp(lambda xx: _scalar(model_fn, unravel(p), rest, xx), (x,), (direction.reshape(shape),))[1]

            return jax.grad(directional)(flat)

        return jax.vmap(row)(directions)

    out = np.zeros((d, flat.size), np.dtype(flat.dtype.name))
    for start in range(0, d, chunk):
        stop = min(start + chunk, d)
        directions = jnp.eye(d, dtype=flat.dtype)[start:stop]
        for x in points:
            out[start:stop] += np.asarray(rows(directions, jnp.asarray(x, flat.dtype))) / len(points)
    return out


def gram_operator(model_fn: Callable, params: Any, rest: Any, points: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """v -> AᵀA v through JVPs and VJPs, never forming A."""
    shape = points.shape[1:]
    flat, unravel = ravel_pytree(params)
    xs = jnp.asarray(points, flat.dtype)

    def a(v):  # R^D -> R^P
        def one(x):
            return jax.grad(lambda p: jax.jvp(lambda xx: _scalar(model_fn, unravel(p), rest, xx), (x,),
                                              (v.reshape(shape),))[1])(flat)

        return jnp.mean(jax.vmap(one)(xs), axis=0)

    def a_transpose(u):  # R^P -> R^D
        def one(x):
            return jax.grad(lambda xx: jax.jvp(lambda p: _scalar(model_fn, unravel(p), rest, xx), (flat,), (u,))[1])(x)

        return jnp.mean(jax.vmap(one)(xs), axis=0).reshape(-1)

    product = jax.jit(lambda v: a_transpose(a(v)))
    return lambda v: np.asarray(product(jnp.asarray(v, flat.dtype)), np.float64)


def choose_route(d: int, p: int, itemsize: int, memory_bytes: int) -> str:
    """explicit when the D x P matrix (and its Gram) fits in `memory_bytes`, krylov otherwise."""
    return "explicit" if d * p * itemsize + d * d * 8 <= memory_bytes else "krylov"


def neural_anisotropy_directions(model_fn: Callable, params: Any, rest: Any, points: np.ndarray, k: int,
                                 route: str = "explicit", seed: int = 0) -> Spectrum:
    """The top-k NADs (rows, D values each, flattened in the input's (h, w, c) order) and their σ²."""
    d = int(np.prod(points.shape[1:]))
    if route == "explicit":
        rows = mixed_derivative_rows(model_fn, params, rest, points).astype(np.float64)
        return dense_eigenpairs(rows @ rows.T, k)
    if route == "krylov":
        return operator_eigenpairs(gram_operator(model_fn, params, rest, points), d, k, seed=seed)
    raise ValueError(f"unknown NAD route {route!r}")
