"""Top-k eigenpairs of a symmetric positive semi-definite kernel matrix, four ways, and the
summaries of a spectrum.

- `dense_eigenpairs`: LAPACK's symmetric solver (`scipy.linalg.eigh`, the MRRR driver `evr`),
  only the top k by index when k < n. Time O(n^3) (O(n^2 k) after the tridiagonal reduction),
  memory the matrix plus its workspace.
- `operator_eigenpairs`: implicitly restarted Lanczos (ARPACK's `dsaupd` through
  `scipy.sparse.linalg.eigsh`, which='LA') over any symmetric matrix-vector product: memory the
  Krylov basis (n x ncv, ncv = max(2k + 1, 20)) plus what the product holds. Ortiz-Jiménez et
  al. 2021 call eigsh on the dense matrix; here the product streams the kernel from its store one
  block row at a time (`streamed_matvec`), or never forms it (J(Jᵀv), ntklab/engine/jacobian_products.py).
  Each product reads what it does not keep of the store once, so this is for kernels that do not
  fit in memory: with k << n a few hundred products suffice.
- `nystrom_eigenpairs`: the Nyström approximation from m landmark rows (Williams & Seeger 2001,
  the formula of Ortiz-Jiménez et al.): eigenpairs (λ, U) of K_mm, eigenvalues scaled by n/m,
  eigenvectors extended to every point as sqrt(m/n) [K_mm; K_rest] U Λ⁻¹. With m = n it is exact.
  The extended vectors are close to, not exactly, unit norm; they are kept as the formula gives them.

Eigenvalues are returned in descending order and eigenvectors as rows (k x n), each with its
largest-magnitude entry made positive, so a decomposition has one sign whichever solver made it.

How a kernel relates to a task is not in its spectrum alone: `label_energy` is the share of the
labels' energy in the leading eigenvectors (`label_targets` lays the labels out as the kernel's
rows), the measure of a kernel aligning to the task of Kopitkov & Indelman 2020 ("Neural spectrum
alignment: empirical study") and Baratin et al. 2021 ("Implicit regularization via neural feature
alignment").
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    values: np.ndarray  # (k,), descending
    vectors: np.ndarray  # (k, n), one eigenvector per row

    def __post_init__(self) -> None:
        if self.vectors.shape[0] != self.values.shape[0]:
            raise ValueError(f"{self.values.shape[0]} eigenvalues but {self.vectors.shape[0]} eigenvectors")


def _spectrum(values: np.ndarray, columns: np.ndarray) -> Spectrum:
    """Descending order, vectors as rows, fixed signs."""
    order = np.argsort(values)[::-1]
    vectors = np.ascontiguousarray(columns[:, order].T)
    peaks = vectors[np.arange(len(vectors)), np.argmax(np.abs(vectors), axis=1)]
    vectors *= np.where(peaks < 0, -1.0, 1.0)[:, None].astype(vectors.dtype)
    return Spectrum(np.asarray(values[order]), vectors)


def _check_k(k: int, n: int, most: int) -> None:
    if not 1 <= k <= most:
        raise ValueError(f"k = {k} eigenpairs asked of a {n} x {n} kernel; at most {most}")


def dense_eigenpairs(matrix: np.ndarray, k: int | None = None) -> Spectrum:
    """All (k None) or the top-k eigenpairs of a symmetric matrix held in memory: LAPACK's evr
    on the top k by index, or, for more than half of them, divide and conquer (evd) on all, which
    is then faster than computing a subset."""
    import scipy.linalg

    n = matrix.shape[0]
    k = n if k is None else k
    _check_k(k, n, n)
    if 2 * k > n:
        values, columns = scipy.linalg.eigh(matrix, driver="evd")
        return _spectrum(values[n - k:], columns[:, n - k:])
    values, columns = scipy.linalg.eigh(matrix, subset_by_index=(n - k, n - 1))
    return _spectrum(values, columns)


def operator_eigenpairs(matvec: Callable[[np.ndarray], np.ndarray], n: int, k: int, dtype=np.float64,
                        tol: float = 0.0, seed: int = 0) -> Spectrum:
    """The top-k (largest algebraic) eigenpairs of the symmetric operator v -> matvec(v) on R^n,
    by implicitly restarted Lanczos; tol 0 is machine precision. The start vector is drawn from
    `seed`, so a decomposition is reproducible."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    _check_k(k, n, n - 1)
    operator = LinearOperator((n, n), matvec=lambda v: matvec(np.asarray(v).reshape(-1)), dtype=dtype)
    start = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    values, columns = eigsh(operator, k=k, which="LA", tol=tol, v0=start)
    return _spectrum(values, columns)


def streamed_matvec(block_row: Callable[[int, int], np.ndarray], bounds: list[tuple[int, int]], dtype=np.float64,
                    keep_bytes: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """v -> K v, reading K one block row at a time: `block_row(start, stop)` returns the rows
    start..stop of K (all columns). A block row is kept after its first read while `keep_bytes`
    has room for it, the others are read again at every product: Lanczos takes hundreds of products,
    and reading a 1,797-point kernel from its store at each of them took 74 s of a 75 s
    decomposition that takes 1 s from memory. Memory: one block row plus those kept."""
    kept: dict[int, np.ndarray] = {}
    room = keep_bytes

    def matvec(v: np.ndarray) -> np.ndarray:
        nonlocal room
        out = np.empty(len(v), dtype)
        for index, (start, stop) in enumerate(bounds):
            rows = kept.get(index)
            if rows is None:
                rows = block_row(start, stop)
                if rows.nbytes <= room:
                    kept[index] = rows
                    room -= rows.nbytes
            out[start:stop] = rows @ v
        return out

    return matvec


def nystrom_eigenpairs(landmarks: np.ndarray, rest: np.ndarray, k: int) -> Spectrum:
    """Nyström eigenpairs from K_mm (`landmarks`, m x m) and K_rest ((n - m) x m, the other rows
    against the landmarks): top-k of K_mm, eigenvalues x n/m, vectors sqrt(m/n) [K_mm; K_rest] U Λ⁻¹."""
    m = landmarks.shape[0]
    n = m + rest.shape[0]
    _check_k(k, m, m)
    small = dense_eigenpairs(landmarks, k)
    if np.any(small.values <= 0):
        raise ValueError(f"K_mm has {int(np.sum(small.values <= 0))} non-positive eigenvalues among its top {k}: "
                         "ask for fewer eigenpairs or more landmarks")
    basis = small.vectors.T / small.values  # U Λ⁻¹, (m, k)
    extended = np.concatenate([landmarks @ basis, rest @ basis]) * np.sqrt(m / n)
    return _spectrum(small.values * (n / m), extended)


def spectrum_metrics(values: np.ndarray, trace: float | None = None) -> dict[str, float]:
    """Summaries of the top eigenvalues: `trace` (of the whole kernel, when given), the
    `effective_rank` exp(H(p)) with p = λ / Σλ over the eigenvalues given (Roy & Vetterli 2007),
    the share of the trace they hold (`trace_fraction`), and the exponent α of the least-squares
    fit log λ_i = c - α log i over i = 1..k (`power_law_exponent`, positive for a decay)."""
    values = np.asarray(values, np.float64)
    positive = values[values > 0]
    metrics: dict[str, float] = {}
    if trace is not None:
        metrics["trace"] = float(trace)
        metrics["trace_fraction"] = float(positive.sum() / trace) if trace > 0 else float("nan")
    if len(positive):
        p = positive / positive.sum()
        metrics["effective_rank"] = float(np.exp(-np.sum(p * np.log(p))))
    if len(positive) >= 2:
        index = np.log(np.arange(1, len(positive) + 1))
        slope = np.polyfit(index, np.log(positive), 1)[0]
        metrics["power_law_exponent"] = float(-slope)
    return metrics


def label_targets(labels: np.ndarray, num_classes: int, outputs: int) -> np.ndarray:
    """Integer labels as targets over a kernel's rows, (rows, columns): one-hot, each class column
    centred over the examples. Centring on the labels' own mean (not 1/num_classes) takes out the
    whole constant direction: the top eigenvector of a kernel at initialization is close to constant
    per output, and uncentred one-hot labels would put about 1/num_classes of their energy there,
    alignment with no class structure in it.

    With `outputs` = num_classes (full output blocks) the rows are sample-major, as the kernel store
    lays them out (row = example·outputs + output): one column of n·outputs. With one output (a
    traced or scalar kernel, or a single logit) the kernel is shared by the classes, as kernel ridge
    regression shares it: n rows, one column per class. For two classes the two columns are
    opposite, so the energy is that of the single logit's centred 0/1 target."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label targets need integer class labels, not {labels.dtype} regression targets")
    if outputs not in (1, num_classes):
        raise ValueError(f"a kernel with {outputs} outputs per example has no rows for the labels of "
                         f"{num_classes} classes (it needs 1 or {num_classes})")
    one_hot = np.eye(num_classes)[labels]
    centred = one_hot - one_hot.mean(axis=0)
    return centred.reshape(-1, 1) if outputs > 1 else centred


def label_energy(vectors: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """E[k] = Σ_{j <= k} ‖v_jᵀ Y‖² / ‖Y‖²_F for eigenvectors v_j (rows of `vectors`, largest
    eigenvalue first) and targets Y over the kernel's rows ((rows,) or (rows, columns)): the share of
    the targets' energy in the top k + 1 eigenvectors. Gradient descent on the squared loss fits the
    targets' component along v_j at a rate λ_j, so a kernel whose top eigenvectors hold the labels
    learns them fastest; a larger E after training than at initialization is the kernel aligning to
    the task. Cumulative and non-decreasing; 1 at the last of a complete orthonormal basis, below 1
    for the top k of one (Nyström's extended vectors are not orthonormal, so theirs only approximates
    a share)."""
    y = np.asarray(targets, np.float64).reshape(vectors.shape[1], -1)
    projections = np.asarray(vectors, np.float64) @ y
    return np.cumsum(np.sum(projections**2, axis=1)) / np.sum(y**2)
