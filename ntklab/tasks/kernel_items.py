"""Block-parallel kernels: a `kernel` run split into work items that any number of workers fill.

The items are the blocks of the kernel store (`train/i/j`, `test_train/i/j`, in the order a
single worker computes them) and, when the features of a batch are worth sharing, the features
of every batch (`features/train/i`, `features/test/i`, first). A block needs the features of
its two batches: a worker takes them from its memory, from the file another worker wrote, or
claims and computes them; so each batch is featurized once in all, not once per worker. For the
empirical NTK of a convolutional network the features (one forward and m backward passes per
example) cost more than the blocks that contract them (LeNet-5, 128 examples: ~1 s against
~0.1 s), and without sharing two workers would each featurize most batches (a half of the block
pairs touches at least 12 of 16 batches), capping the speedup near 1.5x. Features that are the
inputs (analytic, closed-form and random-features kernels) are not items.

A block is computed from the same features by the same compiled function whoever computes it,
and written to its own zarr chunk, so workers with as many CPUs as a single worker write its
store byte for byte (XLA's thread count changes the rounding of float32 sums: local workers that
split two cores write LeNet blocks that differ in the last bits, bench/kernel_blocks.py);
`parallel` is how a kernel is computed, not what, and stays out of the run's identity.
A block found complete in the store (its worker died after writing it, before recording it) is
recorded without being computed again. Random-features kernels split the same way, by blocks
of examples: splitting the feature axis would change the order of the float64 sums.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt

from ntklab.configbase import StrictModel

AUTO_BLOCKS = 512
WAIT_SECONDS = 0.25
FEATURES_DIR = "kernel_features"


class ParallelConfig(StrictModel):
    blocks: bool | None = Field(
        None, description="split the kernel into block work items that every worker helps to compute; "
        f"unset: split a kernel of at least {AUTO_BLOCKS} blocks (about 4,000 training examples at the "
        "default block size), where the cost of splitting (two short transactions per block, each "
        "helper's start) is a small fraction of the blocks' own")
    feature_disk_mb: PositiveInt = Field(
        16384, description="share the features of every batch between the workers through files when "
        "all of them fit in this many MB (else each worker computes the features its blocks need)")


def splits(parallel: ParallelConfig, blocks: int) -> bool:
    return parallel.blocks if parallel.blocks is not None else blocks >= AUTO_BLOCKS


def shares_features(parallel: ParallelConfig, kernel: Any, store: Any) -> bool:
    per_batch = int(kernel.feature_bytes())
    batches = store.train_block_count + store.test_block_count
    return 0 < per_batch * batches <= parallel.feature_disk_mb << 20


def item_names(store: Any, share: bool) -> list[str]:
    names = []
    if share:
        names += [f"features/train/{i}" for i in range(store.train_block_count)]
        names += [f"features/test/{i}" for i in range(store.test_block_count)]
    for part in ("train", "test_train"):
        names += [f"{part}/{i}/{j}" for i, j in store.blocks(part)]
    return names


def complete_items(store: Any, names: list[str], features_dir: Path) -> set[str]:
    """The items whose result is on disk already (a resumed run)."""
    done = {f"{part}/{i}/{j}" for part in ("train", "test_train") for i, j in store.done(part)}
    return {n for n in names if n in done or (n.startswith("features/") and _feature_path(features_dir, n).exists())}


def _feature_path(features_dir: Path, name: str) -> Path:
    return features_dir / (name.replace("/", "-") + ".pkl")


def fill_items(store: Any, kernel: Any, x_rows: Any, x_test: Any, items: Any, *, share: bool, features_dir: Path,
               cache_bytes: int, should_stop, wait: bool, on_item=None):
    """Claim and compute items of `store` until none is left to claim (`wait`: until every item is
    done, whoever computes them). Returns a `FillReport` of this worker's part (`stopped` when
    `should_stop()` said so)."""
    from ntklab.kernelstore import FillReport, compute_block
    from ntklab.store import atomic_write

    report = FillReport()
    capacity = max(2, cache_bytes // max(int(kernel.feature_bytes()), 1))
    cache: dict[tuple[str, int], Any] = {}

    class Stopped(Exception):
        pass

    def featurize(split: str, i: int) -> Any:
        x, n = (x_rows, store.n_train) if split == "train" else (x_test, store.n_test)
        start = time.perf_counter()
        features = kernel.features(x[store.sample_range(i, n)])
        report.feature_evaluations += 1
        report.seconds_features += time.perf_counter() - start
        return features

    def remember(key: tuple[str, int], features: Any) -> Any:
        cache[key] = features
        if len(cache) > capacity:
            cache.pop(next(iter(cache)))
        return features

    def features_of(split: str, i: int) -> Any:
        key = (split, i)
        if key in cache:
            return cache[key]
        if not share:
            return remember(key, featurize(split, i))
        name = f"features/{split}/{i}"
        path = _feature_path(features_dir, name)
        while not path.exists():
            held = items.claim([name])
            if held is not None:
                return remember(key, compute_features(held, split, i))
            if should_stop():
                raise Stopped
            time.sleep(WAIT_SECONDS)  # another worker is computing them
        return remember(key, pickle.loads(path.read_bytes()))

    def compute_features(item: Any, split: str, i: int) -> Any:
        start = time.perf_counter()
        features = featurize(split, i)
        atomic_write(_feature_path(features_dir, item.name), pickle.dumps(features))
        items.finish(item, time.perf_counter() - start)
        return features

    def compute_item_block(item: Any, part: str, i: int, j: int) -> None:
        start = time.perf_counter()
        if not store.is_done(part, i, j):
            f1 = features_of("train" if part == "train" else "test", i)
            f2 = f1 if (part == "train" and i == j) else features_of("train", j)
            compute_block(store, kernel, report, part, i, j, f1, f2)
        else:
            report.skipped += 1
        items.finish(item, time.perf_counter() - start)

    features_dir.mkdir(parents=True, exist_ok=True)
    try:
        while not should_stop():
            item = items.claim()
            if item is None:
                if not wait:
                    return report
                done, total = items.progress()
                if on_item is not None:
                    on_item(done, total)
                if done == total:
                    return report
                time.sleep(WAIT_SECONDS)  # the last items are held by other workers
                continue
            kind, *index = item.name.split("/")
            if kind == "features":
                split, i = index[0], int(index[1])
                if (split, i) in cache or _feature_path(features_dir, item.name).exists():
                    items.finish(item, 0.0)  # its worker wrote them, then died before recording it
                else:
                    remember((split, i), compute_features(item, split, i))
            else:
                compute_item_block(item, kind, int(index[0]), int(index[1]))
            if on_item is not None:
                on_item(*items.progress())
    except Stopped:
        pass
    report.stopped = True
    return report
