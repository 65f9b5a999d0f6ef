"""Readers of the official file formats: IDX (MNIST family), the CIFAR python pickles, SVHN .mat.

Every reader returns uint8 images NHWC and integer labels, exactly as stored. Pickles are only
ever read from files that matched their official checksum (see files.py), so unpickling them
runs no code an attacker chose.
"""

import gzip
import io
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ntklab.data.files import DataError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, where: str = "IDX data") -> np.ndarray:
    """An IDX array: two zero bytes, a type code, the number of dimensions, big-endian int32
    dimensions, then the values in C order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{where} is not an IDX file (magic number {data[:4].hex() or 'missing'})")
    dtype = np.dtype(IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: the IDX header is truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{where}: {len(data):,} bytes, the header {list(shape)} announces {expected:,}")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else values


def read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzipped (name ending in .gz) or not."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    return parse_idx(data, str(path))


def read_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 28, 28, 1) uint8 and labels (n,) from an IDX image file and label file."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images} holds {list(x.shape)} and {labels} holds {list(y.shape)}: "
                        "expected (n, rows, cols) images and n labels")
    return x[..., np.newaxis], y.astype(np.int64)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        batch = pickle.loads(data, encoding="latin1")
    except Exception as error:  # a damaged pickle can raise nearly anything
        raise DataError(f"cannot unpickle {where}: {error}") from error
    if not isinstance(batch, dict):
        raise DataError(f"{where} does not hold a CIFAR batch dictionary")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_arrays(batches: Sequence[tuple[str, dict]], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for where, batch in batches:
        if "data" not in batch or label_key not in batch:
            raise DataError(f"{where} has no 'data' or '{label_key}' entry")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch[label_key]) != len(data):
            raise DataError(f"{where}: data of shape {list(data.shape)} with {len(batch[label_key])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}


def read_cifar(name: str, paths: Sequence[Path], label_key: str | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of CIFAR-10 or CIFAR-100 from the official python
    archive (one .tar.gz path) or from its unpacked batch files. `label_key` picks CIFAR-100's
    `fine_labels` (default) or `coarse_labels`."""
    folder, train_names, test_names, default_key = CIFAR_LAYOUT[name]
    key = label_key or default_key
    wanted = train_names + test_names
    blobs: dict[str, tuple[str, bytes]] = {}
    if len(paths) == 1 and paths[0].name.endswith((".tar.gz", ".tgz")):
        archive = paths[0]
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in wanted:
                    handle = tar.extractfile(f"{folder}/{member}")
                    if handle is None:
                        raise DataError(f"{archive}: {folder}/{member} is not a file")
                    blobs[member] = (f"{archive}:{folder}/{member}", handle.read())
        except KeyError as error:
            raise DataError(f"{archive} has no member {error}") from error
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(f"cannot read {archive}: {error}") from error
    else:
        by_name = {p.name: p for p in paths}
        for member in wanted:
            if member not in by_name:
                raise DataError(f"no {folder}/{member} among {[str(p) for p in paths]}")
            blobs[member] = (str(by_name[member]), by_name[member].read_bytes())
    train = _cifar_arrays([(w, _unpickle(b, w)) for w, b in (blobs[m] for m in train_names)], key)
    test = _cifar_arrays([(w, _unpickle(b, w)) for w, b in (blobs[m] for m in test_names)], key)
    return train[0], train[1], test[0], test[1]


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits (format 2): X (32, 32, 3, n) uint8 and y (n, 1), where label 10 means
    the digit 0. Returns images (n, 32, 32, 3) and labels 0..9."""
    from scipy.io import loadmat

    try:
        mat = loadmat(io.BytesIO(path.read_bytes()))
    except Exception as error:  # scipy raises several types on damaged files
        raise DataError(f"cannot read {path}: {error}") from error
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} has no X or y variable")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: X of shape {list(x.shape)} with {len(y)} labels, expected (32, 32, 3, n)")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels outside 1..10")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2).astype(np.uint8)), (y.astype(np.int64) % 10)
