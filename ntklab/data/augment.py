"""Training-time augmentation as a pure function of (seed, step): the same run seed and global step
(which fixes the epoch) give the same augmented batch, in every run and after every resume. So the
network and each of its Taylor expansions see identical noise.

crop_flip (CIFAR-style, Bai et al.): pad each image by 4 pixels of zeros on every side, crop it back
to its size at a uniformly random offset, and flip it horizontally with probability 1/2. On
standardized inputs the zero padding is padding with the channel mean.

rotate_crop (ntkgen's MNIST-family recipe): rotate each image about its centre by an angle
uniform in [-20°, 20°] (nearest neighbour, zeros outside, as torchvision's RandomRotation), then
pad by 4 and crop back at a uniformly random offset; no flip (digits have a handedness).
"""

from collections.abc import Callable

import numpy as np

_SALT = 0x6175676D  # separates this stream from the batch order's default_rng([seed, epoch])


def _rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**64, step, _SALT])


def _batch(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} needs NHWC image batches, got shape {list(images.shape)}")
    return images


def _offsets(rng: np.random.Generator, n: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop offsets (dy, dx) uniform on {0, ..., 2 pad}; dy = dx = pad is the unshifted image."""
    return rng.integers(0, 2 * pad + 1, size=n), rng.integers(0, 2 * pad + 1, size=n)


def _crop(images: np.ndarray, dy: np.ndarray, dx: np.ndarray, pad: int, flip: np.ndarray | None = None) -> np.ndarray:
    """Crops of the zero-padded images at offsets (dy, dx), mirrored where `flip` is True."""
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(height)  # (n, height)
    cols = dx[:, None] + np.arange(width)  # (n, width)
    if flip is not None:
        cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def crop_flip(images: np.ndarray, seed: int, step: int, pad: int = 4) -> np.ndarray:
    """Random crops of the zero-padded images and random horizontal flips of an NHWC batch, drawn
    from a generator seeded by (seed, step) only."""
    images = _batch(images, "crop_flip")
    rng = _rng(seed, step)
    dy, dx = _offsets(rng, len(images), pad)
    return _crop(images, dy, dx, pad, flip=rng.random(len(images)) < 0.5)


def rotate(images: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Each NHWC image rotated counter-clockwise about its centre by its angle, nearest neighbour,
    zeros where the rotated image has no source pixel."""
    images = _batch(images, "rotate")
    n, height, width, _ = images.shape
    theta = np.deg2rad(np.asarray(degrees, np.float64))[:, None, None]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    y, x = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")
    # the source of output pixel (y, x): the point rotated back by theta, on a grid whose rows grow
    # downwards (so counter-clockwise on screen is clockwise in (y, x))
    source_y = np.rint(np.cos(theta) * y + np.sin(theta) * x + cy).astype(np.int64)
    source_x = np.rint(np.cos(theta) * x - np.sin(theta) * y + cx).astype(np.int64)
    inside = (source_y >= 0) & (source_y < height) & (source_x >= 0) & (source_x < width)
    picked = images[np.arange(n)[:, None, None], np.clip(source_y, 0, height - 1), np.clip(source_x, 0, width - 1)]
    return np.where(inside[..., None], picked, 0).astype(images.dtype)


def rotate_crop(images: np.ndarray, seed: int, step: int, max_degrees: float = 20.0, pad: int = 4) -> np.ndarray:
    """Random rotations in [-max_degrees, max_degrees], then random crops of the zero-padded images."""
    images = _batch(images, "rotate_crop")
    rng = _rng(seed, step)
    rotated = rotate(images, rng.uniform(-max_degrees, max_degrees, size=len(images)))
    return _crop(rotated, *_offsets(rng, len(images), pad), pad)


AUGMENTATIONS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "crop_flip": crop_flip,
    "rotate_crop": rotate_crop,
}


def augment_batch(images: np.ndarray, kind: str, seed: int, step: int) -> np.ndarray:
    """The training batch of global step `step` (counted from 0) after the augmentation `kind`."""
    if kind == "none":
        return images
    return AUGMENTATIONS[kind](images, seed, step)
