"""Neural anisotropy directions (NADs, Ortiz-Jiménez et al. 2020 and 2021): the input directions a
network's gradient is most and least sensitive to, from its mixed second derivative at θ0.

With f the network's single logit and x the input (D values), the operator A: R^D -> R^P,

    A v = mean over the points x of ∇_θ ⟨∇_x f(θ0, x), v⟩,

is the mixed derivative ∂²f/∂θ∂x applied to v (a JVP in x, then a gradient in θ). The NADs are
its right singular vectors u_1, u_2, ... (directions in input space) in decreasing order of the
singular values σ_i, i.e. the eigenvectors of the D x D Gram matrix G = AᵀA, with eigenvalues σ².
The points are x = σ_x·N(0, I); σ_x = 0 gives the seed's single all-zero image.

Two exact routes, both through products with A and Aᵀ, where Aᵀu = mean over x of
∇_x ⟨∇_θ f, u⟩ (a JVP in θ, then a gradient in x), so the D x P matrix is never formed:
- `explicit`: G itself, column j = Aᵀ(A e_j) for every input basis vector, vmapped over chunks
  of CHUNK, then LAPACK's eigh. That is D products at the cost of a few network passes each
  (for the seed's LeNet at 32x32 about 1e10 multiply-adds in all), where forming the D x P
  mixed-derivative matrix B and its Gram B Bᵀ costs D²P (1.4e11 at P = 135,594) and D·P
  memory (0.55 GB): that route, measured 1.25x slower on the same LeNet, was dropped.
- `krylov`: Lanczos (ntklab/engine/eigen.py) over v -> Aᵀ(A v), one product at a time; about
  2k + 20 products for the top k, so it wins when k is small (below D / KRYLOV_BELOW), or when
  G does not fit in memory.
The seed runs scipy's svds over A with one JVP/VJP pair per product: for k = D - 1 ARPACK takes
ncv = D Lanczos vectors and at least D sequential products plus its own O(D³) work per restart
(bench/spectral.py); the explicit route does the same D products vectorized.
(The seed sums over the points in Aᵀ and averages in A; both average here, so Aᵀ is the adjoint.)
G is computed in the network's precision (as the seed's products); its eigenvalues below about
machine epsilon x σ_1² are rounding, in float32 as in the seed, so float64 is a config away.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ntklab.engine.eigen import Spectrum, dense_eigenpairs, operator_eigenpairs

CHUNK = 256  # basis vectors per vectorized product call (memory: a few chunk x P arrays)
KRYLOV_BELOW = 4  # krylov when k < D / KRYLOV_BELOW: LeNet at 32x32, k = D/8 took 0.66x, k = D/4 0.98x explicit


def _scalar(model_fn: Callable, params: Any, rest: Any, x: jax.Array) -> jax.Array:
    """The single logit of one input (no batch axis)."""
    return model_fn(eqx.combine(params, rest), x[None])[0, 0]


def _gram_columns(model_fn: Callable, params: Any, rest: Any, points: np.ndarray):
    """(dtype, V -> AᵀA V for a batch of directions V (rows), jitted). A and Aᵀ are vmapped over
    the directions; the points are accumulated by a scan, so memory is a few batch x P arrays
    whatever their number."""
    shape = points.shape[1:]
    flat, unravel = ravel_pytree(params)
    xs = jnp.asarray(points, flat.dtype)

    def f(p, x):
        return _scalar(model_fn, unravel(p), rest, x)

    def a(v, x):  # R^D -> R^P at one point
        return jax.grad(lambda p: jax.jvp(lambda xx: f(p, xx), (x,), (v.reshape(shape),))[1])(flat)

    def a_transpose(u, x):  # R^P -> R^D at one point
        return jax.grad(lambda xx: jax.jvp(lambda p: f(p, xx), (flat,), (u,))[1])(x).reshape(-1)

    def mean_over_points(apply, batch, width):
        def step(total, x):
            return total + jax.vmap(lambda b: apply(b, x))(batch), None

        return jax.lax.scan(step, jnp.zeros((len(batch), width), flat.dtype), xs)[0] / len(xs)

    d = int(np.prod(shape))
    return flat.dtype, jax.jit(lambda v: mean_over_points(a_transpose, mean_over_points(a, v, flat.size), d))


def gram_matrix(model_fn: Callable, params: Any, rest: Any, points: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """G = AᵀA as a (D, D) float64 array: column j is Aᵀ(A e_j), in chunks of basis vectors."""
    d = int(np.prod(points.shape[1:]))
    dtype, columns = _gram_columns(model_fn, params, rest, points)
    basis = jnp.eye(d, dtype=dtype)
    gram = np.concatenate([np.asarray(columns(basis[i:i + chunk]), np.float64) for i in range(0, d, chunk)])
    return (gram + gram.T) / 2


def gram_operator(model_fn: Callable, params: Any, rest: Any, points: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """v -> AᵀA v through JVPs and VJPs, one vector at a time, never forming A."""
    dtype, columns = _gram_columns(model_fn, params, rest, points)
    return lambda v: np.asarray(columns(jnp.asarray(v, dtype)[None])[0], np.float64)


def choose_route(d: int, p: int, k: int, itemsize: int, memory_bytes: int) -> str:
    """explicit when G (D x D, float64) and a chunk of products fit in `memory_bytes` and k is
    not small (KRYLOV_BELOW: Lanczos needs about 2k + 20 products, one at a time, against D
    vectorized ones); krylov otherwise."""
    fits = d * d * 8 + min(d, CHUNK) * p * itemsize * 4 <= memory_bytes
    return "explicit" if fits and (k >= d - 1 or k * KRYLOV_BELOW >= d) else "krylov"


def neural_anisotropy_directions(model_fn: Callable, params: Any, rest: Any, points: np.ndarray, k: int,
                                 route: str = "explicit", seed: int = 0) -> Spectrum:
    """The top-k NADs (rows, D values each, flattened in the input's (h, w, c) order) and their σ²."""
    d = int(np.prod(points.shape[1:]))
    if route == "explicit":
        return dense_eigenpairs(gram_matrix(model_fn, params, rest, points), k)
    if route == "krylov":
        return operator_eigenpairs(gram_operator(model_fn, params, rest, points), d, k, seed=seed)
    raise ValueError(f"unknown NAD route {route!r}")
