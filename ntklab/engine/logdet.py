"""Log-determinants of a symmetric positive definite matrix that is read one tile at a time.

ntkgen's users measure the log-determinant of whole-dataset empirical NTKs (10n × 10n, hundreds
of GiB) and of two cheap surrogates. Every routine here sees the matrix only through
`read_tile(i, j)` (any tile, float64) over a `Tiling`, so the matrix may live on disk (the zarr
kernel store) and never be held whole:

- `cholesky_logdet`: exact, log det A = 2 Σ log diag L for A = L Lᵀ, by a left-looking tiled
  Cholesky. Column j of tiles is A[:, j] - Σ_{k<j} L[:, k] L[j, k]ᵀ, then its diagonal tile is
  factored and the tiles below it solved against it. The factor's lower tiles go to `factor`, an
  (n, n) array the caller provides (a numpy memmap on disk for a kernel larger than RAM). Memory
  in RAM: four tiles. Reads: each tile of A once, and Σ_j (nb - j)·j tiles of L, the n³/3 flops
  of an in-core Cholesky. The rejected alternative, a right-looking update, writes the trailing
  matrix back after every column: nb³/3 tile writes instead of nb²/2. A column at a time is also
  the unit of resumption (`start`, `on_column`).
- `slq_logdet`: a stochastic Lanczos quadrature estimate (Ubaru, Chen and Saad 2017):
  log det A = tr log A ≈ (n / p) Σ_probes Σ_k τ_k² log θ_k from `steps` Lanczos steps per
  Rademacher probe, with (θ, τ) the Ritz values and first components of the Ritz vectors. All
  probes advance together, so each step streams the matrix once (`tiled_matmul`). Memory: the
  Lanczos bases, steps · n · probes floats (kept for full reorthogonalization, without which the
  Ritz values of a clustered NTK spectrum duplicate and bias the quadrature).
- `block_diagonal_logdet`: Σ_s log det A_ss over the r × r diagonal blocks of each example
  (sample-major rows), from the diagonal tiles only.
- `pseudo_tiles`: the n × n "pseudo-NTK" P_st = (Σ of the r × r block (s, t)) / r, as a tile
  reader of its own, whose log-determinant `cholesky_logdet` then computes.

A `ridge` λ makes each routine work on A + λI (an empirical NTK with more rows than parameters
is singular).

Tiles below `SMALL_TILE` rows are multiplied with one BLAS thread: OpenBLAS's threads spin-wait
between the many small products, and on a loaded machine that is ruinous (a tiled Cholesky of
2,000 rows in tiles of 100 on this project's 2-core machine at load 11: 41.6 s with OpenBLAS's
two threads, 1.4 s with one). Large tiles keep every thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

TileReader = Callable[[int, int], np.ndarray]
SMALL_TILE = 1024


class NotPositiveDefinite(ValueError):
    """The matrix (plus its ridge) has a non-positive pivot: it is not positive definite."""


@dataclass(frozen=True)
class Tiling:
    """An n × n matrix cut into square tiles of `tile` rows (the last ones may be shorter)."""

    size: int
    tile: int

    @property
    def count(self) -> int:
        return -(-self.size // self.tile)

    def rows(self, i: int) -> slice:
        return slice(i * self.tile, min((i + 1) * self.tile, self.size))

    def blas_threads(self):
        """A context limiting BLAS to one thread for small tiles (see the module docstring)."""
        return threadpool_limits(1, user_api="blas") if self.tile < SMALL_TILE else contextlib.nullcontext()


def _with_ridge(block: np.ndarray, ridge: float) -> np.ndarray:
    return block + ridge * np.eye(len(block)) if ridge else block


def cholesky_logdet(read_tile: TileReader, tiling: Tiling, factor, *, ridge: float = 0.0, start: int = 0,
                    logdet_before: float = 0.0,
                    on_column: Callable[[int, float], None] | None = None) -> float:
    """log det (A + ridge·I) by the left-looking tiled Cholesky described in the module docstring.

    `factor` receives L's lower tiles; to resume, pass the `factor` of an earlier call with the
    column to start from and the log-determinant of the columns before it. `on_column(j, logdet)`
    is called after tile column j is in `factor` (flushed when `factor` has a `flush`)."""
    with tiling.blas_threads():
        return _cholesky_columns(read_tile, tiling, factor, ridge, start, logdet_before, on_column)


def _cholesky_columns(read_tile, tiling, factor, ridge, start, logdet_before, on_column) -> float:
    logdet = logdet_before
    for j in range(start, tiling.count):
        cj = tiling.rows(j)
        diagonal = None
        for i in range(j, tiling.count):
            ri = tiling.rows(i)
            block = read_tile(i, j).astype(np.float64, copy=True)
            if i == j:
                block = _with_ridge(block, ridge)
            for k in range(j):
                ck = tiling.rows(k)
                block -= np.asarray(factor[ri, ck]) @ np.asarray(factor[cj, ck]).T
            if i == j:
                try:
                    diagonal = scipy.linalg.cholesky(block, lower=True, check_finite=True)
                except np.linalg.LinAlgError:
                    raise NotPositiveDefinite(
                        f"the matrix is not positive definite (a non-positive pivot in diagonal tile {j}, rows "
                        f"{cj.start}-{cj.stop - 1}); give a ridge > 0 to analyse K + ridge·I") from None
                factor[ri, cj] = diagonal
                logdet += 2.0 * float(np.sum(np.log(np.diag(diagonal))))
            else:
                factor[ri, cj] = scipy.linalg.solve_triangular(diagonal, block.T, lower=True).T
        if hasattr(factor, "flush"):
            factor.flush()
        if on_column is not None:
            on_column(j, logdet)
    return logdet


def tiled_matmul(read_tile: TileReader, tiling: Tiling, vectors: np.ndarray) -> np.ndarray:
    """A @ vectors for symmetric A, reading each tile of its upper triangle once."""
    result = np.zeros_like(vectors, dtype=np.float64)
    with tiling.blas_threads():
        for i in range(tiling.count):
            ri = tiling.rows(i)
            for j in range(i, tiling.count):
                rj = tiling.rows(j)
                block = read_tile(i, j)
                result[ri] += block @ vectors[rj]
                if i != j:
                    result[rj] += block.T @ vectors[ri]
    return result


@dataclass(frozen=True)
class SLQEstimate:
    logdet: float
    stderr: float  # the standard error of the mean over probes
    probes: int
    steps: int  # Lanczos steps taken (fewer than asked when the Krylov space is exhausted)


def slq_logdet(matmul: Callable[[np.ndarray], np.ndarray], size: int, *, probes: int, steps: int, seed: int,
               ridge: float = 0.0) -> SLQEstimate:
    """The stochastic Lanczos quadrature estimate of log det (A + ridge·I), A given by `matmul`
    on an (n, probes) block (see the module docstring)."""
    rng = np.random.default_rng(seed)
    z = rng.choice([-1.0, 1.0], size=(size, probes))
    steps = min(steps, size)
    basis = np.zeros((steps, size, probes))
    alpha = np.zeros((steps, probes))
    beta = np.zeros((steps, probes))
    q = z / np.sqrt(size)
    taken = steps
    for k in range(steps):
        basis[k] = q
        w = matmul(q) + ridge * q
        alpha[k] = np.einsum("np,np->p", q, w)
        # Full reorthogonalization (twice, which is enough in floating point) against all basis vectors.
        for _ in range(2):
            w -= np.einsum("knp,kp->np", basis[: k + 1], np.einsum("knp,np->kp", basis[: k + 1], w))
        norm = np.linalg.norm(w, axis=0)
        if k + 1 == steps:
            break
        if np.min(norm) <= 1e-10 * max(1.0, float(np.max(np.abs(alpha[: k + 1])))):
            taken = k + 1  # the Krylov space of some probe is exhausted: its quadrature is exact here
            break
        beta[k] = norm
        q = w / norm
    per_probe = np.empty(probes)
    for p in range(probes):
        theta, vectors = scipy.linalg.eigh_tridiagonal(alpha[:taken, p], beta[: taken - 1, p])
        if np.min(theta) <= 0:
            raise NotPositiveDefinite("a Ritz value is not positive: the matrix is not positive definite; "
                                      "give a ridge > 0")
        per_probe[p] = size * float(np.sum(vectors[0] ** 2 * np.log(theta)))
    stderr = float(np.std(per_probe, ddof=1) / np.sqrt(probes)) if probes > 1 else float("nan")
    return SLQEstimate(float(np.mean(per_probe)), stderr, probes, taken)


def block_diagonal_logdet(read_tile: TileReader, tiling: Tiling, rows_per_example: int, *,
                          ridge: float = 0.0) -> float:
    """Σ over examples of log det of its r × r diagonal block (r = `rows_per_example`)."""
    r = rows_per_example
    if tiling.tile % r:
        raise ValueError(f"tiles of {tiling.tile} rows do not hold whole examples of {r} rows")
    total = 0.0
    for i in range(tiling.count):
        tile = _with_ridge(read_tile(i, i), ridge)
        n = len(tile) // r
        blocks = tile.reshape(n, r, n, r)[np.arange(n), :, np.arange(n), :]
        sign, logdets = np.linalg.slogdet(blocks)
        if np.any(sign <= 0):
            first = i * (tiling.tile // r) + int(np.argmax(sign <= 0))
            raise NotPositiveDefinite(f"the diagonal block of example {first} is not positive definite; "
                                      "give a ridge > 0")
        total += float(np.sum(logdets))
    return total


def pseudo_tiles(read_tile: TileReader, tiling: Tiling, rows_per_example: int) -> tuple[TileReader, Tiling]:
    """The pseudo-NTK's tile reader and tiling: P_st = (Σ of block (s, t) of A) / r."""
    r = rows_per_example
    if tiling.tile % r or tiling.size % r:
        raise ValueError(f"tiles of {tiling.tile} rows do not hold whole examples of {r} rows")

    def read(i: int, j: int) -> np.ndarray:
        tile = read_tile(i, j)
        return tile.reshape(tile.shape[0] // r, r, tile.shape[1] // r, r).sum(axis=(1, 3)) / r

    return read, Tiling(tiling.size // r, tiling.tile // r)
