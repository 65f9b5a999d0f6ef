"""Deterministic transforms of image arrays (NHWC) and labels, as the seed codebases apply them.

- per-channel standardization with training statistics (gortizji, ntkgen, Bai et al.);
- per-image centring and scaling to Euclidean norm sqrt(d) (Ghorbani et al.);
- grayscale as skimage's `rgb2gray` (Ghorbani's CIFAR2);
- MNIST-family images to 32x32x3 (ntkgen);
- stratified subsampling by seed;
- one-hot (or single 0/1) regression targets with the seeds' centring options.
"""

from typing import Literal

import numpy as np

SKIMAGE_GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)
"""skimage.color.rgb2gray: Y = 0.2125 R + 0.7154 G + 0.0721 B (the Rec. 709 luma weights)."""


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of `n` samples whose class shares follow those of `labels`.

    Each class gets floor(n * share) samples and the remaining ones go to the classes with the
    largest remainders (ties to the lower class), so the result is deterministic given the seed.
    """
    available = len(labels)
    if n > available:
        raise ValueError(f"cannot subsample {n} samples from a split of {available}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / available
    quotas = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - quotas), kind="stable")
    quotas[by_remainder[: n - quotas.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:quota] for c, quota in zip(classes, quotas)]
    return np.sort(np.concatenate(chosen))


def subsample_splits(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                     n_train: int | None, n_test: int | None, seed: int):
    """Stratified subsamples (stratified_subsample) of the train and test splits, each (x, y); a
    split whose size is None is kept whole."""

    def keep(split, n):
        if n is None:
            return split
        chosen = stratified_subsample(split[1], n, seed)
        return split[0][chosen], split[1][chosen]

    return keep(train, n_train), keep(test, n_test)


def standardize_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale each channel (last axis) to zero mean and unit variance on the training set."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def centre_images(flat: np.ndarray) -> np.ndarray:
    """Rows (one flattened image each) minus their mean; a row that was constant up to rounding
    becomes exactly zero rather than amplified rounding noise."""
    centred = flat - flat.mean(axis=1, keepdims=True)
    scale = np.abs(flat).max(axis=1, keepdims=True)
    constant = np.abs(centred).max(axis=1, keepdims=True) <= 1e-12 * scale
    return np.where(constant, 0.0, centred)


def normalize_images(x: np.ndarray) -> np.ndarray:
    """Centre each image on its own mean pixel and scale it to Euclidean norm sqrt(d), d the number
    of values per image. A constant image becomes zero."""
    flat = centre_images(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    scale = np.divide(np.sqrt(flat.shape[1]), norms, out=np.zeros_like(norms), where=norms > 0)
    return (flat * scale).reshape(x.shape)


def grayscale(x: np.ndarray) -> np.ndarray:
    """RGB images (..., 3) to one channel (..., 1) with skimage's `rgb2gray` weights."""
    if x.shape[-1] != 3:
        raise ValueError(f"grayscale needs RGB images, these have {x.shape[-1]} channels")
    return (np.asarray(x, dtype=np.float64) @ np.asarray(SKIMAGE_GRAY_WEIGHTS))[..., np.newaxis]


def _linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Rows of interpolation weights of linear resampling with half-pixel centres and clamped edges
    (PIL's bilinear filter when enlarging)."""
    centres = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """8-bit grey images (n, h, w, 1) to (n, 32, 32, 3) uint8 as ntkgen feeds MNIST-family data to
    CIFAR networks: bilinear resize to 32x32 (PIL, rounded to 8 bits), grey channel repeated 3 times."""
    if x.shape[-1] != 1:
        raise ValueError(f"to_rgb32 needs one-channel images, these have {x.shape[-1]}")
    rows = _linear_resize_matrix(x.shape[1], 32)
    cols = _linear_resize_matrix(x.shape[2], 32)
    resized = np.einsum("oh,nhw,pw->nop", rows, np.asarray(x[..., 0], dtype=np.float64), cols)
    grey = np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., np.newaxis], 3, axis=-1)


Centring = Literal["none", "uniform"] | float


def targets(labels: np.ndarray, num_classes: int, encoding: Literal["one_hot", "binary"] = "one_hot",
            centre: Centring = "none") -> np.ndarray:
    """Float32 regression targets from integer labels.

    one_hot: (n, num_classes) rows of 0/1; binary: (n, 1) holding the 0/1 label (two classes).
    centre: "none"; "uniform" subtracts 1/num_classes (Ghorbani's KRR subtracts 0.1 from ten-class
    one-hot targets and 0.5 from CIFAR2's 0/1 labels); a number subtracts that constant.
    """
    labels = np.asarray(labels)
    if encoding == "binary":
        if num_classes != 2:
            raise ValueError(f"binary targets need two classes, not {num_classes}")
        values = labels[:, np.newaxis].astype(np.float64)
    else:
        values = np.eye(num_classes)[labels]
    shift = 1.0 / num_classes if centre == "uniform" else 0.0 if centre == "none" else float(centre)
    return (values - shift).astype(np.float32)
