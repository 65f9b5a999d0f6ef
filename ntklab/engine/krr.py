"""Kernel ridge regression over a sweep of regularizations, with leave-one-out and GCV errors.

Solves (K + λI) α = Y for every λ of a list, from one factorization when that is cheaper:

- `eigh`: K = V diag(w) Vᵀ once (LAPACK syevr, see `eigendecomposition`). Then α for every λ at
  once, V [diag(1/(w+λ)) VᵀY]_λ (one n x n x (L·k) product), train predictions K α = Y - λα,
  test predictions K_test α (one m x n x (L·k) product), and the diagonal of (K+λI)⁻¹ for every
  λ as (V∘V) [1/(w+λ)]_λ (one n x n x L product).
- `cholesky`: one Cholesky factorization per λ (n³/3), plus the inverse of the factor when
  leave-one-out errors are asked for. Cheaper than `eigh` for a handful of λ.
- `auto`: the cheaper of the two for the number of λ, from their flop counts with a measured
  factor for the lower efficiency of the eigensolver.

Targets are one column per output (Y, n x k) for a scalar kernel shared by the outputs, or, for a
kernel with r rows per example (full output blocks, sample-major), one vector of n·r values.

Leave-one-out (exact for kernel ridge regression): with G = (K + λI)⁻¹, the residual of example i
when it is left out is r_i = (G_ii)⁻¹ α_i, where for r > 1 rows per example G_ii is the r x r
diagonal block of example i and α_i its r coefficients (all of an example's outputs are left out
together). GCV: (1/n) Σ_i ‖(I - H) y‖² / (1 - tr(H)/N)², H = K (K+λI)⁻¹, N = n·r rows; since
(I - H) y = λ α, it costs nothing once α is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.linalg

Solver = Literal["auto", "eigh", "cholesky"]
EIGH_THREADS = 1
EIGH_COST_FACTOR = 20.0  # numpy eigh(n=4000) took 10-20x a Cholesky factorization on the 2-core CPU


@dataclass
class RidgeSolution:
    """Per λ (leading axis): coefficients, predictions and error terms."""

    ridges: np.ndarray
    alpha: np.ndarray  # (L, N, k)
    train_predictions: np.ndarray  # (L, N, k)
    test_predictions: np.ndarray | None  # (L, M, k)
    loo_residuals: np.ndarray | None  # (L, N, k): y_i - prediction with example i left out
    gcv: np.ndarray  # (L,)
    solver: str = ""
    extra: dict = field(default_factory=dict)


def choose_solver(n_ridges: int) -> str:
    """Per λ the Cholesky path factors (n³/3 flops) and inverts the factor (n³/3, for the
    leave-one-out and GCV terms); the eigendecomposition costs EIGH_COST_FACTOR factorizations."""
    return "eigh" if EIGH_COST_FACTOR < 2.0 * n_ridges else "cholesky"


def _as_matrix(y: np.ndarray) -> np.ndarray:
    return y[:, None] if y.ndim == 1 else y


def solve_ridge_sweep(
    k_train: np.ndarray,
    y: np.ndarray,
    ridges: np.ndarray,
    *,
    k_test: np.ndarray | None = None,
    rows_per_example: int = 1,
    loo: bool = True,
    solver: Solver = "auto",
) -> RidgeSolution:
    """Solve (K + λI) α = y for each λ in `ridges`. `k_train` is (N, N) symmetric, `y` (N,) or
    (N, k), `k_test` (M, N). All in float64. Returns a RidgeSolution (y's shape kept as (N, k))."""
    k_train = np.asarray(k_train, np.float64)
    y = _as_matrix(np.asarray(y, np.float64))
    ridges = np.asarray(ridges, np.float64)
    n = k_train.shape[0]
    if n % rows_per_example:
        raise ValueError(f"{n} kernel rows are not a multiple of {rows_per_example} rows per example")
    if solver == "auto":
        solver = choose_solver(len(ridges))
    if solver == "eigh":
        return _solve_eigh(k_train, y, ridges, k_test, rows_per_example, loo)
    if solver == "cholesky":
        return _solve_cholesky(k_train, y, ridges, k_test, rows_per_example, loo)
    raise ValueError(f"unknown KRR solver {solver!r}")


def _gcv(ridges: np.ndarray, alpha: np.ndarray, trace_h: np.ndarray, n_examples: int, n_rows: int) -> np.ndarray:
    residual = ridges[:, None, None] * alpha  # (I - H) y = λ α
    mean_sq = np.sum(residual**2, axis=(1, 2)) / n_examples
    return mean_sq / (1.0 - trace_h / n_rows) ** 2


def _block_loo(alpha: np.ndarray, diag_blocks: np.ndarray, r: int) -> np.ndarray:
    """Residuals r_i = G_ii⁻¹ α_i for each example; alpha (N, k), diag_blocks (n, r, r)."""
    n_examples = alpha.shape[0] // r
    a = alpha.reshape(n_examples, r, -1)
    if r == 1:
        return (a / diag_blocks).reshape(alpha.shape)
    return np.linalg.solve(diag_blocks, a).reshape(alpha.shape)


def eigendecomposition(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w, V) of a symmetric matrix by LAPACK's MRRR driver (syevr), with one BLAS thread.

    Measured on the 2-core CPU (n = 4000, float64): syevr 16 s against 27 s for syevd (numpy's
    eigh) with one thread, and multithreaded OpenBLAS made both 2-5x slower still whenever the
    machine had other work, because the tridiagonalization is matrix-vector bound."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return scipy.linalg.eigh(k, driver="evr", check_finite=False)
    with threadpool_limits(EIGH_THREADS, user_api="blas"):
        return scipy.linalg.eigh(k, driver="evr", check_finite=False)


def _solve_eigh(k, y, ridges, k_test, r, loo) -> RidgeSolution:
    w, v = eigendecomposition(k)
    n_rows, outputs, count = k.shape[0], y.shape[1], len(ridges)
    inverse = 1.0 / (w[None, :] + ridges[:, None])  # (L, N)
    vty = v.T @ y  # (N, k)
    # every λ in one product: α_λ = V diag(1/(w+λ)) Vᵀy, stacked as N x (L·k) columns
    scaled = (inverse[:, :, None] * vty[None, :, :]).transpose(1, 0, 2).reshape(n_rows, count * outputs)
    alpha_columns = v @ scaled
    alphas = alpha_columns.reshape(n_rows, count, outputs).transpose(1, 0, 2)
    train = y[None] - ridges[:, None, None] * alphas  # K α = y - λ α
    test = None
    if k_test is not None:
        test = (k_test @ alpha_columns).reshape(k_test.shape[0], count, outputs).transpose(1, 0, 2)
    residuals = None
    if loo:
        if r == 1:
            diag = (v * v) @ inverse.T  # (N, L): diag of (K + λI)⁻¹ for every λ at once
            residuals = alphas / diag.T[:, :, None]
        else:
            residuals = np.empty_like(alphas)
            vb = v.reshape(n_rows // r, r, n_rows)
            for index in range(count):
                blocks = np.einsum("iak,k,ibk->iab", vb, inverse[index], vb, optimize=True)
                residuals[index] = _block_loo(alphas[index], blocks, r)
    trace_h = np.sum(w[None, :] * inverse, axis=1)
    gcv = _gcv(ridges, alphas, trace_h, n_rows // r, n_rows)
    return RidgeSolution(ridges, alphas, train, test, residuals, gcv, "eigh",
                         {"min_eigenvalue": float(w[0]), "max_eigenvalue": float(w[-1])})


def _solve_cholesky(k, y, ridges, k_test, r, loo) -> RidgeSolution:
    n_rows = k.shape[0]
    alphas = np.empty((len(ridges), *y.shape))
    train = np.empty_like(alphas)
    test = np.empty((len(ridges), k_test.shape[0], y.shape[1])) if k_test is not None else None
    residuals = np.empty_like(alphas) if loo else None
    trace_h = np.empty(len(ridges))
    shifted = np.array(k)
    diagonal = np.diag_indices(n_rows)
    base = k[diagonal].copy()
    for index, ridge in enumerate(ridges):
        shifted[diagonal] = base + ridge
        factor = scipy.linalg.cho_factor(shifted, lower=True, overwrite_a=False, check_finite=False)
        alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
        alphas[index] = alpha
        train[index] = y - ridge * alpha  # K α = y - λ α
        if test is not None:
            test[index] = k_test @ alpha
        inv_lower, info = scipy.linalg.lapack.dtrtri(factor[0], lower=1)
        if info:
            raise np.linalg.LinAlgError(f"the Cholesky factor at ridge {ridge:g} is singular")
        inv_lower = np.tril(inv_lower)
        # G = L⁻ᵀ L⁻¹; tr(H) = N - λ tr(G); the diagonal blocks of G from the columns of L⁻¹
        if loo:
            if r == 1:
                diag = np.sum(inv_lower**2, axis=0)
                residuals[index] = alpha / diag[:, None]
            else:
                columns = inv_lower.reshape(n_rows, n_rows // r, r)  # (rows of L⁻¹, example, output)
                blocks = np.einsum("kia,kib->iab", columns, columns, optimize=True)
                residuals[index] = _block_loo(alpha, blocks, r)
        trace_h[index] = n_rows - ridge * np.sum(inv_lower**2)
    gcv = _gcv(ridges, alphas, trace_h, n_rows // r, n_rows)
    return RidgeSolution(ridges, alphas, train, test, residuals, gcv, "cholesky")


def ridge_grid(spec) -> np.ndarray:
    """A ridge list, or {logspace: [a, b, n]} -> 10^linspace(a, b, n)."""
    if isinstance(spec, dict):
        a, b, count = spec["logspace"]
        return np.logspace(a, b, int(count))
    return np.asarray(list(spec), np.float64)
