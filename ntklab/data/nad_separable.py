"""Linearly separable datasets along one neural anisotropy direction (Ortiz-Jiménez et al. 2021).

With u a unit direction (NAD ℓ, reshaped to the input shape): noise w ~ sigma·N(0, I) with its
u-component removed, labels y = ±1 with probability 1/2 each, and x = (epsilon/2)·y·u + w. The
classes are separated by a margin epsilon along u and nothing else tells them apart. Training
and test sets are the first n_train and the next n_test samples of one draw from `seed`
(numpy's PCG64: the labels, then the noise).
"""

import numpy as np


def nad_separable(direction: np.ndarray, shape: tuple[int, ...], n_train: int, n_test: int, epsilon: float,
                  sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 inputs of `shape`, int32 labels in {0, 1}."""
    u = np.asarray(direction, np.float64).reshape(-1)
    u = u / np.linalg.norm(u)
    n = n_train + n_test
    rng = np.random.default_rng(seed)
    signs = 2 * rng.integers(0, 2, size=n) - 1
    noise = sigma * rng.standard_normal((n, u.size))
    noise -= np.outer(noise @ u, u)
    x = (epsilon / 2) * signs[:, None] * u[None, :] + noise
    x = x.reshape(n, *shape).astype(np.float32)
    labels = ((signs + 1) // 2).astype(np.int32)
    return x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]
