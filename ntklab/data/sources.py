"""Dataset sources: each turns a dataset config into train/test arrays, as a pure function of the config.

A source is registered under the `dataset` name of its config. File-based sources read the
official files from the data root (see files.py), verify them, and apply the same pipeline:

1. read the official arrays (uint8 images, NHWC);
2. dataset specifics: class selection and relabelling (cifar2), coarse labels (cifar100);
3. stratified subsampling of each split (`n_train`, `n_test`, `subsample_seed`);
4. 8-bit to [0, 1]; MNIST family: optional resize to 32x32x3 (ntkgen); RGB: optional grayscale;
5. `normalize`: none, standardize (per channel, training statistics) or per_image (Ghorbani);
6. `noise`: Ghorbani's high-frequency DCT noise (added) or low-frequency DCT noise (replacing);
7. float32 inputs, int32 labels.

`load_dataset(config, cached)` computes derived datasets (noise, file-based, spiked) through the
run context's cache, keyed by the hash of the data config, so a sweep that needs a perturbed
dataset in many runs computes it once. `check_dataset(config)` lists missing or corrupt files
before any run starts.
"""

import functools
import hashlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ntklab.data import files as datafiles
from ntklab.data.config import (
    CIFAR2_VARIANTS,
    FILE_DATASETS,
    CIFAR2Data,
    CIFAR100Data,
    DataConfig,
    DigitsData,
    SpikedData,
    SyntheticData,
)
from ntklab.data.transforms import (
    grayscale,
    normalize_images,
    standardize_channels,
    subsample_splits,
    to_rgb32,
)
from ntklab.identity import canonical_json, semantic_dict

CACHE_NAMESPACE = "datasets"
PIPELINE_VERSION = 1
"""Bumped when a change to this pipeline changes the arrays a config produces: old cache entries
are then ignored rather than reused."""

Cached = Callable[[str, str, Callable[[], bytes]], bytes]


@dataclass(frozen=True)
class Dataset:
    """Float32 inputs (images NHWC), int32 labels in 0..num_classes-1.

    Regression data (num_classes == 0, the spiked-covariates dataset) has float32 targets instead."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test, y_test=self.y_test,
                 num_classes=np.int64(self.num_classes))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Dataset":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       int(arrays["num_classes"]))


class DataSource(Protocol):
    def load(self, config) -> Dataset:
        """The dataset the config describes; identical arrays on every call."""

    def check(self, config) -> list[str]:
        """Problems with the files the config needs (empty when there are none)."""


def _finish(x_train, y_train, x_test, y_test, num_classes: int) -> Dataset:
    return Dataset(
        x_train=np.asarray(x_train, dtype=np.float32),
        y_train=np.asarray(y_train, dtype=np.int32),
        x_test=np.asarray(x_test, dtype=np.float32),
        y_test=np.asarray(y_test, dtype=np.int32),
        num_classes=num_classes,
    )


def apply_noise(noise, x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The data config's DCT perturbation (None: unchanged)."""
    from ntklab.data import perturb

    if noise is None:
        return x_train, x_test
    if noise.kind == "dct_high":
        return (perturb.add_high_frequency_noise(x_train, noise.tau, noise.seed, perturb.TRAIN_STREAM, noise.radius),
                perturb.add_high_frequency_noise(x_test, noise.tau, noise.seed, perturb.TEST_STREAM, noise.radius))
    mean, covariance = perturb.dct_statistics(x_train)
    root = perturb.psd_sqrt(covariance)
    x_train = perturb.replace_low_frequencies(x_train, noise.threshold, mean, root, noise.seed, perturb.TRAIN_STREAM)
    x_test = perturb.replace_low_frequencies(x_test, noise.threshold, mean, root, noise.seed, perturb.TEST_STREAM)
    if noise.standardize_after:
        x_train, x_test = standardize_channels(x_train, x_test)
    return x_train, x_test


class DigitsSource:
    """scikit-learn's 8x8 digits, shipped with the package: no download."""

    def load(self, config: DigitsData) -> Dataset:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = (digits.images / 16.0)[..., np.newaxis]
        if config.rgb32:
            images = to_rgb32(np.round(images * 255.0)) / 255.0
        x_train, x_test, y_train, y_test = train_test_split(
            images,
            digits.target,
            test_size=config.test_fraction,
            stratify=digits.target,
            random_state=config.split_seed,
        )
        (x_train, y_train), (x_test, y_test) = subsample_splits(
            (x_train, y_train), (x_test, y_test), config.n_train, config.n_test, config.split_seed
        )
        if config.standardize:
            x_train, x_test = standardize_channels(x_train, x_test)
        x_train, x_test = apply_noise(config.noise, x_train, x_test)
        return _finish(x_train, y_train, x_test, y_test, 10)

    def check(self, config: DigitsData) -> list[str]:
        return []


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
        return _finish(x_train.reshape(-1, *shape), y_train, x_test.reshape(-1, *shape), y_test, config.num_classes)

    def check(self, config: SyntheticData) -> list[str]:
        return []


class SpikedSource:
    """Ghorbani et al.'s spiked covariates with degree-2..4 targets (regression, see spiked.py)."""

    def load(self, config: SpikedData) -> Dataset:
        from ntklab.data.spiked import spiked_dataset

        x_train, y_train, x_test, y_test = spiked_dataset(
            config.n_train, config.n_test, config.d, config.eta, config.kappa, config.degrees,
            config.train_seed, config.test_seed, config.coefficient_seed, config.target_noise,
        )
        return Dataset(x_train, y_train, x_test, y_test, num_classes=0)

    def check(self, config: SpikedData) -> list[str]:
        return []


@functools.lru_cache(maxsize=2)
def _read_official(name: str, paths: tuple, stamps: tuple, label_key: str | None):
    """The official uint8 arrays of a verified dataset (read-only; kept for the next run of the process)."""
    from ntklab.data import formats

    del stamps  # part of the cache key only: a replaced file is read again
    if name in ("mnist", "fashion_mnist", "kmnist"):
        x_train, y_train = formats.read_idx_pair(paths[0][0], paths[1][0])
        x_test, y_test = formats.read_idx_pair(paths[2][0], paths[3][0])
    elif name in ("cifar10", "cifar100"):
        x_train, y_train, x_test, y_test = formats.read_cifar(name, paths[0], label_key)
    elif name == "svhn":
        x_train, y_train = formats.read_svhn(paths[0][0])
        x_test, y_test = formats.read_svhn(paths[1][0])
    else:
        raise KeyError(name)
    arrays = tuple(np.ascontiguousarray(a) for a in (x_train, y_train, x_test, y_test))
    for a in arrays:
        a.flags.writeable = False
    return arrays


def official_arrays(name: str, root: str | None, label_key: str | None = None,
                    registry: Mapping[str, datafiles.DatasetFiles] | None = None):
    """(x_train, y_train, x_test, y_test) as stored in the official files of dataset `name`,
    after verifying them; DataError naming the files, the directory and the fix otherwise."""
    status = datafiles.dataset_status(name, root, registry)
    if not status.ok:
        raise datafiles.DataError("\n".join(status.problems))
    paths = tuple(status.paths(part.part.name)[1] for part in status.parts)
    stamps = tuple((p.stat().st_size, p.stat().st_mtime_ns) for group in paths for p in group)
    return _read_official(status.files.name, paths, stamps, label_key)


class FileImageSource:
    """MNIST, Fashion-MNIST, KMNIST, CIFAR-10, CIFAR-100, SVHN and CIFAR2 from their official files."""

    def __init__(self, name: str):
        self.name = name

    def check(self, config) -> list[str]:
        return datafiles.dataset_status(self.name, config.root).problems

    def load(self, config) -> Dataset:
        label_key = None
        if isinstance(config, CIFAR100Data):
            label_key = f"{config.labels}_labels"
        x_train, y_train, x_test, y_test = official_arrays(self.name, config.root, label_key)
        num_classes = {"cifar100": 100 if label_key != "coarse_labels" else 20}.get(self.name, 10)
        if isinstance(config, CIFAR2Data):
            negative, positive, _, _ = CIFAR2_VARIANTS[config.variant]
            (x_train, y_train), (x_test, y_test) = (
                _two_classes(x, y, negative, positive) for x, y in ((x_train, y_train), (x_test, y_test))
            )
            num_classes = 2
        (x_train, y_train), (x_test, y_test) = subsample_splits(
            (x_train, y_train), (x_test, y_test), config.n_train, config.n_test, config.subsample_seed
        )
        if getattr(config, "rgb32", False):
            x_train, x_test = to_rgb32(x_train), to_rgb32(x_test)
        x_train, x_test = x_train / 255.0, x_test / 255.0
        if getattr(config, "grayscale", False):
            x_train, x_test = grayscale(x_train), grayscale(x_test)
        if config.normalize == "standardize":
            x_train, x_test = standardize_channels(x_train, x_test)
        elif config.normalize == "per_image":
            x_train, x_test = normalize_images(x_train), normalize_images(x_test)
        x_train, x_test = apply_noise(config.noise, x_train, x_test)
        return _finish(x_train, y_train, x_test, y_test, num_classes)


def _two_classes(x: np.ndarray, y: np.ndarray, negative, positive) -> tuple[np.ndarray, np.ndarray]:
    """The samples of the listed classes, in file order, labelled 0 (negative) or 1 (positive)."""
    keep = np.isin(y, negative + positive)
    return x[keep], np.isin(y[keep], positive).astype(np.int64)


SOURCES: Mapping[str, DataSource] = {
    "digits": DigitsSource(),
    "synthetic": SyntheticSource(),
    "spiked": SpikedSource(),
    "mnist": FileImageSource("mnist"),
    "fashion_mnist": FileImageSource("fashion_mnist"),
    "kmnist": FileImageSource("kmnist"),
    "cifar10": FileImageSource("cifar10"),
    "cifar100": FileImageSource("cifar100"),
    "svhn": FileImageSource("svhn"),
    "cifar2": FileImageSource("cifar2"),
}


def dataset_key(config: DataConfig) -> str:
    """The cache key of the arrays `config` produces: a hash of its semantic fields, without the
    data root and the training-time augmentation, which do not change them."""
    fields = {k: v for k, v in semantic_dict(config).items() if k != "augment"}
    payload = f"ntklab-dataset/v{PIPELINE_VERSION}\n{canonical_json(fields)}"
    return hashlib.sha256(payload.encode()).hexdigest()


def is_derived(config: DataConfig) -> bool:
    """Worth caching: perturbed, file-based or generated at scale. Plain digits and the teacher
    dataset take milliseconds and are computed in place."""
    return getattr(config, "noise", None) is not None or isinstance(config, (SpikedData, *FILE_DATASETS))


def load_dataset(config: DataConfig, cached: Cached | None = None) -> Dataset:
    """The arrays `config` describes. With `cached` (the run context's `ctx.cached`), a derived
    dataset is computed once, stored as .npz bytes under its `dataset_key`, and read back by every
    later run that needs it."""
    source = SOURCES[config.dataset]
    if cached is None or not is_derived(config):
        return source.load(config)
    return Dataset.from_bytes(cached(CACHE_NAMESPACE, dataset_key(config), lambda: source.load(config).to_bytes()))


def check_dataset(config: DataConfig) -> list[str]:
    """Problems with the files `config` needs: each names the file, the directory looked in and
    how to get it (`ntklab data fetch NAME`). Empty when the files are present and verified."""
    return SOURCES[config.dataset].check(config)
