"""The mini-batch order: a pure function of (seed, epoch, step), so a resumed run sees the same batches."""

import functools

import numpy as np


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    steps = n // batch_size if drop_last else -(-n // batch_size)
    if steps == 0:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training samples and drop_last is set")
    return steps


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training samples in one epoch (read-only: it is shared through the cache).

    Negative seeds are taken modulo 2**64, as numpy seeds must be non-negative.
    """
    permutation = np.random.default_rng([seed % 2**64, epoch]).permutation(n)
    permutation.flags.writeable = False
    return permutation


def batch_indices(seed: int, step: int, n: int, batch_size: int, drop_last: bool) -> np.ndarray:
    """Indices of the training samples in the batch of global step `step` (counted from 0)."""
    epoch, position = divmod(step, steps_per_epoch(n, batch_size, drop_last))
    start = position * batch_size
    return epoch_permutation(seed, epoch, n)[start : start + batch_size]
