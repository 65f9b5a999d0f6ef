"""Dataset sources: each turns a dataset config into train/test arrays, as a pure function of the config.

A source is registered under the `dataset` name of its config. Loaders of file-based datasets
implement the same `DataSource` protocol and reuse the split, subsampling and standardization helpers.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ntklab.data.config import DataConfig, DigitsData, SyntheticData


@dataclass(frozen=True)
class Dataset:
    """Float32 inputs (images NHWC), int32 labels in 0..num_classes-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class DataSource(Protocol):
    def load(self, config) -> Dataset:
        """The dataset the config describes; identical arrays on every call."""


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


def standardize_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift and scale each channel (last axis) to zero mean and unit variance on the training set."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


class DigitsSource:
    """scikit-learn's 8x8 digits, shipped with the package: no download."""

    def load(self, config: DigitsData) -> Dataset:
        digits = load_digits()
        images = (digits.images / 16.0)[..., np.newaxis]
        x_train, x_test, y_train, y_test = train_test_split(
            images,
            digits.target,
            test_size=config.test_fraction,
            stratify=digits.target,
            random_state=config.split_seed,
        )
        if config.n_train is not None:
            keep = stratified_subsample(y_train, config.n_train, config.split_seed)
            x_train, y_train = x_train[keep], y_train[keep]
        if config.n_test is not None:
            keep = stratified_subsample(y_test, config.n_test, config.split_seed)
            x_test, y_test = x_test[keep], y_test[keep]
        if config.standardize:
            x_train, x_test = standardize_channels(x_train, x_test)
        return Dataset(
            x_train=x_train.astype(np.float32),
            y_train=y_train.astype(np.int32),
            x_test=x_test.astype(np.float32),
            y_test=y_test.astype(np.int32),
            num_classes=10,
        )


class SyntheticSource:
    """Gaussian inputs labelled by the argmax of a random linear teacher.

    Draw order from one generator: teacher, training inputs, test inputs, label noise. Label noise
    corrupts training labels only, so test accuracy measures how well the teacher was learned.
    """

    def load(self, config: SyntheticData) -> Dataset:
        rng = np.random.default_rng(config.data_seed)
        teacher = rng.standard_normal((config.dim, config.num_classes))
        x_train = rng.standard_normal((config.n_train, config.dim))
        x_test = rng.standard_normal((config.n_test, config.dim))
        y_train = np.argmax(x_train @ teacher, axis=1)
        y_test = np.argmax(x_test @ teacher, axis=1)
        noisy = rng.permutation(config.n_train)[: round(config.label_noise * config.n_train)]
        y_train[noisy] = rng.integers(0, config.num_classes, size=len(noisy))
        shape = config.image_shape if config.image_shape is not None else (config.dim,)
        return Dataset(
            x_train=x_train.reshape(-1, *shape).astype(np.float32),
            y_train=y_train.astype(np.int32),
            x_test=x_test.reshape(-1, *shape).astype(np.float32),
            y_test=y_test.astype(np.int32),
            num_classes=config.num_classes,
        )


SOURCES: Mapping[str, DataSource] = {"digits": DigitsSource(), "synthetic": SyntheticSource()}


def load_dataset(config: DataConfig) -> Dataset:
    return SOURCES[config.dataset].load(config)
