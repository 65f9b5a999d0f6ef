"""Ghorbani et al. 2020's input perturbations in the 2-D orthonormal DCT-II domain.

Images are NHWC; the DCT runs over the two spatial axes of each channel with norm='ortho' (a DCT
along the rows, then along the columns, as the seed code does), so it is an orthogonal map.

- High-frequency noise, added: centre each image, draw Gaussian noise on the DCT coefficients
  within a quarter disc around the highest-frequency corner, scale it to tau times the norm of the
  image's DCT, add, invert, and rescale the result to norm sqrt(d). At tau = 0 this is centring
  and normalization.
- Low-frequency noise, replacing: fit the mean and covariance of the training images' DCT
  coefficients, draw xi = S^(1/2) z + mu per image (test images use the training statistics) and
  replace the top-left t x t block of each channel's coefficients with xi's block.

Noise is drawn from numpy generators seeded by (seed, split), so a dataset is a pure function of
its config; train and test draw from independent streams.
"""

import numpy as np
from scipy import fft

from ntklab.data.transforms import centre_images

GHORBANI_TAU_GRID = tuple(float(t) for t in np.linspace(0.0, 3.0, 15))
"""The paper's 15 high-frequency noise levels (FMNIST and CIFAR2)."""
FMNIST_LOW_FREQUENCY_THRESHOLDS = tuple(range(1, 28, 2))
"""Thresholds t of the low-frequency noise on grayscale FMNIST: 1, 3, ..., 27."""
CIFAR10_LOW_FREQUENCY_THRESHOLDS = (0, 4, 8, 12, 14, 17, 19, 20, 22, 24, 25, 27, 28, 29, 30)
"""Thresholds t of the low-frequency noise on RGB CIFAR-10 (the CNTK experiments used the first ten)."""

CHUNK = 4096
TRAIN_STREAM, TEST_STREAM = 0, 1


def dct2(x: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DCT-II over the spatial axes (1, 2) of NHWC images."""
    return fft.dctn(np.asarray(x, dtype=np.float64), type=2, norm="ortho", axes=(1, 2))


def idct2(c: np.ndarray) -> np.ndarray:
    return fft.idctn(c, type=2, norm="ortho", axes=(1, 2))


def high_frequency_mask(height: int, width: int, radius: float | None = None) -> np.ndarray:
    """1 where a coefficient lies within `radius` of the highest-frequency corner (h-1, w-1), else 0.

    The default radius min(h, w) - 1 keeps 600 of 784 coefficients on 28x28 images, 782 of 1024 on
    32x32 and 45 of 64 on 8x8."""
    r = min(height, width) - 1 if radius is None else radius
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    distance = np.hypot(rows - (height - 1), cols - (width - 1))
    return (distance <= r).astype(np.float64)


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, stream])


def add_high_frequency_noise(x: np.ndarray, tau: float, seed: int, stream: int,
                             radius: float | None = None) -> np.ndarray:
    """Each image of `x` (NHWC) centred, with masked DCT noise of norm tau * ||DCT(image)|| added,
    rescaled to Euclidean norm sqrt(d). Float64, same shape."""
    n, height, width, channels = x.shape
    d = height * width * channels
    mask = high_frequency_mask(height, width, radius)[:, :, np.newaxis]
    rng = _generator(seed, stream)
    out = np.empty((n, height, width, channels))
    for start in range(0, n, CHUNK):
        block = np.asarray(x[start : start + CHUNK], dtype=np.float64)
        block = centre_images(block.reshape(len(block), -1)).reshape(block.shape)
        coefficients = dct2(block)
        noise = rng.standard_normal(block.shape) * mask
        signal_norm = np.sqrt(np.sum(coefficients**2, axis=(1, 2, 3), keepdims=True))
        noise_norm = np.sqrt(np.sum(noise**2, axis=(1, 2, 3), keepdims=True))
        noise *= tau * np.divide(signal_norm, noise_norm, out=np.zeros_like(noise_norm), where=noise_norm > 0)
        noisy = idct2(coefficients + noise)
        norms = np.sqrt(np.sum(noisy**2, axis=(1, 2, 3), keepdims=True))
        out[start : start + CHUNK] = noisy * np.divide(np.sqrt(d), norms, out=np.zeros_like(norms), where=norms > 0)
    return out


def dct_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of the training images' DCT coefficients, flattened in
    (row, column, channel) order."""
    flat = dct2(x_train).reshape(len(x_train), -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    covariance = centred.T @ centred / max(len(flat) - 1, 1)
    return mean, covariance


def psd_sqrt(covariance: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix, by `eigh` (negative rounding noise clipped)."""
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def replace_low_frequencies(x: np.ndarray, threshold: int, mean: np.ndarray, root: np.ndarray,
                            seed: int, stream: int) -> np.ndarray:
    """Each image of `x` (NHWC) with the top-left threshold x threshold block of its DCT (every
    channel) replaced by the block of xi = root @ z + mean, z ~ N(0, I_d). Float64, same shape."""
    n, height, width, channels = x.shape
    if threshold > min(height, width):
        raise ValueError(f"low-frequency threshold {threshold} exceeds the {height}x{width} image")
    x = np.asarray(x, dtype=np.float64)
    if threshold == 0:
        return x.copy()
    block = np.zeros((height, width, channels), dtype=bool)
    block[:threshold, :threshold, :] = True
    rows = np.flatnonzero(block.reshape(-1))
    block_root, block_mean = root[rows], mean[rows]
    d = height * width * channels
    rng = _generator(seed, stream)
    out = np.empty_like(x)
    for start in range(0, n, CHUNK):
        coefficients = dct2(x[start : start + CHUNK]).reshape(-1, d)
        z = rng.standard_normal((len(coefficients), d))
        coefficients[:, rows] = z @ block_root.T + block_mean
        out[start : start + CHUNK] = idct2(coefficients.reshape(-1, height, width, channels))
    return out
