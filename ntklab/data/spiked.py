"""Ghorbani et al. 2020's synthetic spiked-covariates data.

x ~ N(0, I_d), then its first d0 = floor(d^eta) coordinates are rescaled to norm
r = d^((eta + kappa) / 2) and the other d - d0 to norm sqrt(d). The target is

    f(x) = sum_k g_k(x) / rms_k,   g_k(x) = sum_i beta_{k,i} prod_{j<k} x_{i+j},

a sum of products of k consecutive coordinates inside the first d0 (i = 0..d0-k), beta ~ Exp(1),
over the degrees k (2, 3, 4 in the paper), with rms_k the training-set RMS of g_k, reused for the
test targets, so each degree contributes unit RMS on the training set. No linear term. Optional
Gaussian target noise (std `noise`) is drawn from streams of its own, seeded by (seed, 1).
The paper: d = 1024, eta = 2/5 (d0 = 16), kappa in linspace(0, 1, 10, endpoint=False),
n = 2^20 training points (seed 145), 10,000 test points (seed 2), coefficients seed 14.
"""

from collections.abc import Sequence

import numpy as np

from ntklab.data.config import spike_dimension

CHUNK = 65536
GHORBANI_KAPPA_GRID = tuple(float(k) for k in np.linspace(0.0, 1.0, 10, endpoint=False))


def spiked_inputs(n: int, d: int, eta: float, kappa: float, seed: int) -> np.ndarray:
    """n inputs (float32, n x d), drawn in fixed-size chunks from one generator."""
    d0 = spike_dimension(d, eta)
    if not 1 <= d0 < d:
        raise ValueError(f"d^eta = {d**eta:.3g} leaves no spiked or no bulk coordinates for d = {d}")
    radius = d ** ((eta + kappa) / 2)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, CHUNK):
        x = rng.standard_normal((min(CHUNK, n - start), d))
        x[:, :d0] *= radius / np.linalg.norm(x[:, :d0], axis=1, keepdims=True)
        x[:, d0:] *= np.sqrt(d) / np.linalg.norm(x[:, d0:], axis=1, keepdims=True)
        out[start : start + len(x)] = x
    return out


def spiked_coefficients(d0: int, degrees: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """beta_k ~ Exp(1), d0 - k + 1 of them per degree, drawn in the order of `degrees`."""
    rng = np.random.default_rng(seed)
    return {k: rng.exponential(1.0, size=d0 - k + 1) for k in degrees}


def degree_components(x: np.ndarray, d0: int, coefficients: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """g_k(x) for every degree k (float64, one value per row of x)."""
    spikes = np.asarray(x[:, :d0], dtype=np.float64)
    components = {}
    for k, beta in coefficients.items():
        products = np.ones((len(x), d0 - k + 1))
        for j in range(k):
            products *= spikes[:, j : j + d0 - k + 1]
        components[k] = products @ beta
    return components


def spiked_dataset(n_train: int, n_test: int, d: int, eta: float, kappa: float, degrees: Sequence[int],
                   train_seed: int, test_seed: int, coefficient_seed: int, noise: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), float32; targets normalized per degree by training RMS."""
    d0 = spike_dimension(d, eta)
    if max(degrees) > d0:
        raise ValueError(f"degree {max(degrees)} needs at least that many spiked coordinates, d0 = {d0}")
    coefficients = spiked_coefficients(d0, degrees, coefficient_seed)
    x_train = spiked_inputs(n_train, d, eta, kappa, train_seed)
    x_test = spiked_inputs(n_test, d, eta, kappa, test_seed)
    train_parts = degree_components(x_train, d0, coefficients)
    test_parts = degree_components(x_test, d0, coefficients)
    rms = {k: np.sqrt(np.mean(g**2)) for k, g in train_parts.items()}
    y_train = sum(train_parts[k] / rms[k] for k in degrees)
    y_test = sum(test_parts[k] / rms[k] for k in degrees)
    if noise > 0:
        y_train = y_train + noise * np.random.default_rng([train_seed, 1]).standard_normal(n_train)
        y_test = y_test + noise * np.random.default_rng([test_seed, 1]).standard_normal(n_test)
    return x_train, np.asarray(y_train, np.float32), x_test, np.asarray(y_test, np.float32)
