"""Training-time augmentation as a pure function of (seed, step): the same run seed and global step
(which fixes the epoch) give the same augmented batch, in every run and after every resume. So the
network and each of its Taylor expansions see identical noise.

crop_flip (CIFAR-style, Bai et al.): pad each image by 4 pixels of zeros on every side, crop it back
to its size at a uniformly random offset, and flip it horizontally with probability 1/2. On
standardized inputs the zero padding is padding with the channel mean.
"""

from collections.abc import Callable

import numpy as np

_SALT = 0x6175676D  # separates this stream from the batch order's default_rng([seed, epoch])


def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, step, _SALT])


def crop_flip(images: np.ndarray, seed: int, step: int, pad: int = 4) -> np.ndarray:
    """Random crops of the zero-padded images and random horizontal flips of an NHWC batch.

    Offsets (dy, dx) are uniform on {0, ..., 2 pad} (dy = dx = pad is the unshifted image); drawn
    with the flips from a generator seeded by (seed, step) only.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"crop_flip needs NHWC image batches, got shape {list(images.shape)}")
    n, height, width, _ = images.shape
    rng = _rng(seed, step)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(height)  # (n, height)
    cols = dx[:, None] + np.arange(width)  # (n, width)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


AUGMENTATIONS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {"crop_flip": crop_flip}


def augment_batch(images: np.ndarray, kind: str, seed: int, step: int) -> np.ndarray:
    """The training batch of global step `step` (counted from 0) after the augmentation `kind`."""
    if kind == "none":
        return images
    return AUGMENTATIONS[kind](images, seed, step)
