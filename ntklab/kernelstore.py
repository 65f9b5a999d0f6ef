"""An out-of-core kernel matrix: a zarr group holding K(train, train) as its upper block triangle
and K(test, train) in full, one zarr chunk per computed block, with a completion mark per block.

Layout of the directory (zarr format 3):

    zarr.json                    group attributes: `ntklab_kernel` (metadata, see `KernelStore.create`)
    train/                       (N·r, N·r) array, chunks (B·r, B·r); only chunks (i, j) with i <= j
                                 are written, the others read back as 0 (use `read_train`, which
                                 mirrors the upper triangle)
    test_train/                  (T·r, N·r) array, chunks (B·r, B·r); every chunk
    y_train/, y_test/            the labels (int32; float32 regression targets), so a reader needs no dataset
    done/train/<i>.<j>           empty marker files: block (i, j) is complete
    done/test_train/<i>.<j>

r is the number of rows per example (the number of outputs for full output blocks, 1 for a
traced or scalar kernel); rows are sample-major (row = example·r + output). A block's data is
written (atomically: zarr's local store writes a temporary file and renames it), and only then
its marker is created, so a run killed at any point resumes without recomputing any finished
block and without trusting a half-written one. The block size is fixed when the store is created.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "ntklab-kernel/1"
PARTS = ("train", "test_train")
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def _is_store(path: Path) -> bool:
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("ntklab_kernel", {}).get("format") == FORMAT


def stored_block_size(path: Path) -> int | None:
    """The block size of the kernel store at `path`, or None when there is none (yet)."""
    if not _is_store(path):
        return None
    return json.loads((Path(path) / "zarr.json").read_text())["attributes"]["ntklab_kernel"]["block_size"]


class KernelStoreMismatch(ValueError):
    """An existing store was created for a different kernel than the one being resumed."""


class KernelStore:
    def __init__(self, path: Path, group: Any):
        self.path = Path(path)
        self._group = group
        self.meta: dict = dict(group.attrs["ntklab_kernel"])
        self.n_train: int = self.meta["n_train"]
        self.n_test: int = self.meta["n_test"]
        self.outputs: int = self.meta["outputs"]
        self.block_size: int = self.meta["block_size"]

    # -- creation ----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, n_train: int, n_test: int, outputs: int, block_size: int, storage_dtype: str,
               identity: str, metadata: dict, y_train: np.ndarray | None = None,
               y_test: np.ndarray | None = None) -> KernelStore:
        """Create the store, or open the existing one at `path` to resume it.

        `identity` names what is computed (e.g. the run's config hash); an existing store with
        another identity raises KernelStoreMismatch. On resume, the stored block size wins."""
        import zarr

        path = Path(path)
        if (path / "zarr.json").exists() and not _is_store(path):
            shutil.rmtree(path)  # killed while being created: nothing was computed yet
        if (path / "zarr.json").exists():
            store = cls.open(path, mode="r+")
            if store.meta.get("identity") != identity:
                raise KernelStoreMismatch(
                    f"{path} holds the kernel {store.meta.get('identity')!r}, not {identity!r}")
            return store
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "identity": identity,
            "n_train": int(n_train),
            "n_test": int(n_test),
            "outputs": int(outputs),
            "block_size": int(block_size),
            "storage_dtype": storage_dtype,
            "layout": "sample_major" if outputs > 1 else "scalar",
            "triangle": "upper",
            **metadata,
        }
        group = zarr.open_group(str(path), mode="w")
        dtype = STORAGE_DTYPES[storage_dtype]
        chunk = block_size * outputs
        rows = n_train * outputs
        group.create_array("train", shape=(rows, rows), chunks=(chunk, chunk), dtype=dtype, fill_value=0,
                           compressors=None)
        group.create_array("test_train", shape=(n_test * outputs, rows), chunks=(chunk, chunk), dtype=dtype,
                           fill_value=0, compressors=None)
        for name, labels in (("y_train", y_train), ("y_test", y_test)):
            if labels is not None:
                regression = np.issubdtype(np.asarray(labels).dtype, np.floating)
                group.create_array(name, data=np.asarray(labels, np.float32 if regression else np.int32))
        for part in PARTS:
            (path / "done" / part).mkdir(parents=True, exist_ok=True)
        group.attrs["ntklab_kernel"] = meta  # last: a store without it is not a store
        return cls(path, group)

    @classmethod
    def open(cls, path: Path, mode: str = "r") -> KernelStore:
        import zarr

        group = zarr.open_group(str(path), mode=mode)
        if group.attrs.get("ntklab_kernel", {}).get("format") != FORMAT:
            raise ValueError(f"{path} is not an ntklab kernel store ({FORMAT})")
        return cls(Path(path), group)

    # -- blocks ------------------------------------------------------------------------------

    @property
    def train_block_count(self) -> int:
        return -(-self.n_train // self.block_size)

    @property
    def test_block_count(self) -> int:
        return -(-self.n_test // self.block_size)

    def blocks(self, part: str) -> list[tuple[int, int]]:
        """Every block of a part, row by row: the upper triangle (i <= j) of train, all of test_train."""
        nb = self.train_block_count
        if part == "train":
            return [(i, j) for i in range(nb) for j in range(i, nb)]
        return [(i, j) for i in range(self.test_block_count) for j in range(nb)]

    def _marker(self, part: str, i: int, j: int) -> Path:
        return self.path / "done" / part / f"{i}.{j}"

    def is_done(self, part: str, i: int, j: int) -> bool:
        return self._marker(part, i, j).exists()

    def done(self, part: str) -> set[tuple[int, int]]:
        found = set()
        for entry in os.scandir(self.path / "done" / part):
            i, j = entry.name.split(".")
            found.add((int(i), int(j)))
        return found

    def is_complete(self) -> bool:
        return all(len(self.done(part)) == len(self.blocks(part)) for part in PARTS)

    def sample_range(self, i: int, n: int) -> slice:
        return slice(i * self.block_size, min((i + 1) * self.block_size, n))

    def _rows(self, i: int, n: int) -> slice:
        s = self.sample_range(i, n)
        return slice(s.start * self.outputs, s.stop * self.outputs)

    def write_block(self, part: str, i: int, j: int, block: np.ndarray) -> None:
        """Write block (i, j) of `part`, then mark it complete."""
        n_rows = self.n_train if part == "train" else self.n_test
        rows, cols = self._rows(i, n_rows), self._rows(j, self.n_train)
        expected = (rows.stop - rows.start, cols.stop - cols.start)
        if block.shape != expected:
            raise ValueError(f"block ({i}, {j}) of {part} has shape {block.shape}, expected {expected}")
        dtype = self._group[part].dtype
        if dtype == np.float16:
            peak = float(np.max(np.abs(block))) if block.size else 0.0
            if not np.isfinite(peak) or peak > float(np.finfo(np.float16).max):
                raise OverflowError(f"a kernel value of {peak:.3g} does not fit float16 storage; "
                                    "use scaling: 1/sqrt(P) or a wider storage_dtype")
        self._group[part][rows, cols] = np.asarray(block, dtype)
        self._marker(part, i, j).touch()

    # -- reading -----------------------------------------------------------------------------

    def train_block(self, i: int, j: int, dtype: Any = np.float64) -> np.ndarray:
        """Block (i, j) of K(train, train) for any i, j (a block below the diagonal is the
        transpose of the stored one)."""
        if i > j:
            return self.train_block(j, i, dtype).T
        rows, cols = self._rows(i, self.n_train), self._rows(j, self.n_train)
        return np.asarray(self._group["train"][rows, cols], dtype)

    def read_train(self, dtype: Any = np.float64) -> np.ndarray:
        """K(train, train) in full, symmetrized from its upper block triangle."""
        k = np.asarray(self._group["train"][...], dtype)
        nb, b = self.train_block_count, self.block_size * self.outputs
        for i in range(nb):
            for j in range(i + 1, nb):
                k[j * b : (j + 1) * b, i * b : (i + 1) * b] = k[i * b : (i + 1) * b, j * b : (j + 1) * b].T
        return k

    def read_test(self, dtype: Any = np.float64) -> np.ndarray:
        """K(test, train)."""
        return np.asarray(self._group["test_train"][...], dtype)

    def labels(self, part: str) -> np.ndarray | None:
        name = f"y_{part}"
        return np.asarray(self._group[name][...]) if name in self._group else None

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    def describe(self) -> dict:
        """Metadata for the artifact record (JSON-safe)."""
        return json.loads(json.dumps({**self.meta, "bytes": self.nbytes()}))


class FillReport:
    """What one call of `fill` did: blocks computed and skipped, feature evaluations, seconds."""

    def __init__(self) -> None:
        self.computed: list[tuple[str, int, int]] = []
        self.skipped = 0
        self.feature_evaluations = 0
        self.cached_batches = 0
        self.seconds_features = 0.0
        self.seconds_blocks = 0.0
        self.seconds_writing = 0.0
        self.stopped = False


def fill(store: KernelStore, kernel: Any, x_train: np.ndarray, x_test: np.ndarray | None, *,
         cache_bytes: int = 2 << 30, should_stop=lambda: False, on_block=None) -> FillReport:
    """Compute every block of `store` that is not marked complete, with `kernel` (a
    `ntklab.engine.blocks.BlockKernel` whose batch size is at least the store's block size).

    The features of the training batches with the highest block indices are kept in memory, as
    many as `cache_bytes` allows (block column j is needed by block rows 0..j, so the last columns
    are used most); the others are recomputed when needed. With enough memory every batch is
    featurized once. Stops between two blocks when `should_stop()` says so (report.stopped).
    `on_block(part, i, j)` is called after each block is written."""
    import sys

    report = FillReport()
    nb = store.train_block_count
    per_batch = max(int(kernel.feature_bytes()), 1)
    capacity = min(nb, cache_bytes // per_batch)
    report.cached_batches = int(capacity)
    cache: dict[int, Any] = {}

    def batch(x: np.ndarray, i: int, n: int) -> np.ndarray:
        return x[store.sample_range(i, n)]

    def featurize(x: np.ndarray) -> Any:
        start = time.perf_counter()
        features = kernel.features(x)
        jax = sys.modules.get("jax")
        if jax is not None:  # JAX dispatches asynchronously: wait, so the time is attributed here
            jax.block_until_ready(getattr(features, "data", features))
        report.feature_evaluations += 1
        report.seconds_features += time.perf_counter() - start
        return features

    def train_features(j: int) -> Any:
        if j in cache:
            return cache[j]
        features = featurize(batch(x_train, j, store.n_train))
        if j >= nb - capacity:
            cache[j] = features
        return features

    parts = [("train", x_train, store.n_train)]
    if store.n_test:
        parts.append(("test_train", x_test, store.n_test))
    for part, x_rows, n_rows in parts:
        done = store.done(part)
        rows: dict[int, list[int]] = {}
        for i, j in store.blocks(part):
            if (i, j) in done:
                report.skipped += 1
            else:
                rows.setdefault(i, []).append(j)
        for i, columns in rows.items():
            if should_stop():
                report.stopped = True
                return report
            f1 = train_features(i) if part == "train" else featurize(batch(x_rows, i, n_rows))
            for j in columns:
                if should_stop():
                    report.stopped = True
                    return report
                f2 = f1 if (part == "train" and i == j) else train_features(j)
                compute_block(store, kernel, report, part, i, j, f1, f2)
                if on_block is not None:
                    on_block(part, i, j)
    return report


def compute_block(store: KernelStore, kernel: Any, report: FillReport, part: str, i: int, j: int,
                  f1: Any, f2: Any) -> None:
    """Contract the features `f1` and `f2` of batches i and j into block (i, j) of `part`, write
    it, and account for it in `report`."""
    start = time.perf_counter()
    block = np.asarray(kernel.block(f1, f2))
    middle = time.perf_counter()
    store.write_block(part, i, j, block)
    report.seconds_blocks += middle - start
    report.seconds_writing += time.perf_counter() - middle
    report.computed.append((part, i, j))
