"""The `kernel` task: a kernel matrix on a dataset, in blocks, into an out-of-core zarr store.

It computes K(train, train) (upper block triangle) and K(test, train) block by block into the
directory artifact `kernel` (ntklab/kernelstore.py). A run killed or stopped part-way resumes
without recomputing any finished block: blocks are marked complete in the store itself. The
network of an empirical kernel is taken at initialization (`seed`) or at the end of an upstream
train run (`kernel.at`).

With `points: train+test` the kernel's rows are the training set followed by the test set
(K over all n_train + n_test points, no separate test block): the transductive setting of
Ortiz-Jiménez et al. 2021, whose eigenfunctions label train and test points alike.

With `parallel: {blocks: true}` (or at least 512 blocks) the blocks are work items that every
worker helps to compute (ntklab/tasks/kernel_items.py; `help` is what a worker that does not
execute the run does); the run's own worker records the kernel once the last block is done.
"""

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from ntklab.configbase import Seed, StrictModel, added_field, non_semantic
from ntklab.data.config import DataConfig
from ntklab.tasks.kernel_config import KernelConfig
from ntklab.tasks.context import RunContext, RunInterrupted
from ntklab.tasks.kernel_items import ParallelConfig
from ntklab.tasks.train import TrainRunConfig

StorageDtype = Literal["float16", "float32", "float64"]
Points = Literal["train", "train+test"]


class KernelRunConfig(StrictModel):
    task: Literal["kernel"]
    seed: Seed = Field(0, description="seeds the network's initialization (kernels at init)")
    data: DataConfig
    kernel: KernelConfig
    test: bool = Field(True, description="also compute K(test, train)")
    points: Points = added_field(
        "train", description="train: K(train, train) (and K(test, train)); train+test: the kernel of the training "
        "set followed by the test set, one matrix over every point (transductive), no test block",
    )
    outputs: PositiveInt | None = added_field(
        None, description="logits of a network at initialization (default: one per class); 1 for the "
        "single-logit binary networks of the eigenfunction tasks",
    )
    storage_dtype: StorageDtype = Field("float32", description="precision of the stored matrix")
    psd_check: bool = Field(False, description="log the extreme eigenvalues of K(train, train) when small enough")
    psd_max_rows: PositiveInt = Field(20_000, description="largest K(train, train) (rows) the PSD check handles")
    block_size: PositiveInt = non_semantic(
        128,
        "examples per block (a block and a zarr chunk hold block_size·m rows). Left out of the run's "
        "identity: it changes the float rounding of a kernel entry by a few ulps at most, not its "
        "value; a resumed run keeps the block size its store was created with",
    )
    cache_mb: PositiveInt = non_semantic(
        2048, "memory for features (Jacobians) of training batches kept across block rows"
    )
    parallel: ParallelConfig = non_semantic(
        ParallelConfig(), "how the blocks are computed: `blocks: true` splits them into work items that "
        "every worker helps with (ntklab/tasks/kernel_items.py); the values are the same either way"
    )

    @model_validator(mode="after")
    def _points_and_outputs(self) -> "KernelRunConfig":
        if self.points == "train+test" and "test" in self.model_fields_set and self.test:
            raise ValueError("points: train+test has no separate test block; leave `test` out")
        if self.outputs is not None and getattr(self.kernel, "at", None) is not None:
            raise ValueError("`outputs` sets the network at initialization; a kernel `at` a train run has its outputs")
        return self

    def upstream_runs(self) -> dict[str, TrainRunConfig]:
        at = getattr(self.kernel, "at", None)
        return {"at": at} if at is not None else {}


def kernel_points(config: KernelRunConfig, dataset):
    """(x_rows, y_rows, x_test, y_test, indices): the kernel's rows and its test points. With
    `points: train+test` the rows are x_train then x_test and there is no test part. `indices`
    lists each row's (split, index in split), split 0 = train, 1 = test."""
    import numpy as np

    n_train, n_test = len(dataset.x_train), len(dataset.x_test)
    train_rows = np.stack([np.zeros(n_train, np.int64), np.arange(n_train)], axis=1)
    if config.points == "train+test":
        test_rows = np.stack([np.ones(n_test, np.int64), np.arange(n_test)], axis=1)
        return (np.concatenate([dataset.x_train, dataset.x_test]), np.concatenate([dataset.y_train, dataset.y_test]),
                dataset.x_test[:0], dataset.y_test[:0], np.concatenate([train_rows, test_rows]))
    if not config.test:
        return dataset.x_train, dataset.y_train, dataset.x_test[:0], dataset.y_test[:0], train_rows
    return dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, train_rows


def kernel_setup_for(config: KernelRunConfig, dataset, params: bytes | None, batch_size: int):
    """The `KernelSetup` of a kernel run: shapes from the dataset, the network's output count from
    the loss of the train run it is taken at (one output per class at initialization)."""
    from ntklab.engine.kernels import KernelSetup
    from ntklab.engine.losses import output_dim

    at = getattr(config.kernel, "at", None)
    if at is not None:
        out_dim = output_dim(at.train.loss, dataset.num_classes)
    else:
        out_dim = config.outputs or dataset.num_classes
    return KernelSetup(
        input_shape=tuple(dataset.input_shape),
        out_dim=out_dim,
        seed=config.seed,
        batch_size=batch_size,
        params=params,
        memory_bytes=config.cache_mb << 20,
    )


def _precision(config: KernelRunConfig):
    import contextlib

    import jax

    precision = getattr(config.kernel, "dtype", "float32")
    return precision, (jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext())


def _inputs(config: KernelRunConfig, ctx: RunContext, directory):
    """(dataset, params, kernel points, block size, block function): what every worker filling
    the store at `directory` builds alike."""
    from ntklab.data.sources import load_dataset
    from ntklab.engine.kernels import build_kernel
    from ntklab.kernelstore import stored_block_size

    dataset = load_dataset(config.data)
    params = ctx.upstream_artifact("at", "params") if "at" in config.upstream_runs() else None
    points = kernel_points(config, dataset)
    block_size = stored_block_size(directory) or config.block_size  # a resumed store keeps its own
    kernel = build_kernel(config.kernel, kernel_setup_for(config, dataset, params, block_size))
    return dataset, params, points, block_size, kernel


def splits(config: KernelRunConfig) -> bool:
    """Whether the run splits into work items whatever its size (`parallel: {blocks: true}`)."""
    return config.parallel.blocks is True


def help(config: KernelRunConfig, ctx: RunContext, items) -> None:
    """Compute blocks of a kernel run that another worker executes: build the block function (as
    that worker does at the same time), wait for the items (registered once the store exists),
    then claim them."""
    from ntklab.kernelstore import KernelStore
    from ntklab.tasks.kernel_items import FEATURES_DIR, fill_items, shares_features

    _, x64 = _precision(config)
    with x64:
        directory = ctx.artifact_dir("kernel")
        _, _, (x_rows, _, x_test, _, _), block_size, kernel = _inputs(config, ctx, directory)
        if not items.wait_registered(ctx.should_stop):
            return
        store = KernelStore.open(directory, mode="r+")
        if store.block_size != block_size:  # a resumed store keeps the block size it was created with
            kernel = _inputs(config, ctx, directory)[4]
        fill_items(store, kernel, x_rows, x_test, items, share=shares_features(config.parallel, kernel, store),
                   features_dir=ctx.artifact_dir(FEATURES_DIR), cache_bytes=config.cache_mb << 20,
                   should_stop=ctx.should_stop, wait=False)


def run(config: KernelRunConfig, ctx: RunContext) -> None:
    import hashlib
    import shutil
    import time

    import numpy as np

    from ntklab.kernelstore import KernelStore, fill
    from ntklab.tasks.kernel_items import FEATURES_DIR, complete_items, fill_items, item_names, shares_features, splits

    precision, x64 = _precision(config)
    with x64:
        directory = ctx.artifact_dir("kernel")
        dataset, params, (x_rows, y_rows, x_test, y_test, _), block_size, kernel = _inputs(config, ctx, directory)
        metadata = {
            "kernel": config.kernel.model_dump(mode="json"),
            "seed": config.seed,
            "data": config.data.model_dump(mode="json"),
            "data_sha256": {
                "x_train": hashlib.sha256(np.ascontiguousarray(x_rows).tobytes()).hexdigest(),
                "x_test": hashlib.sha256(np.ascontiguousarray(x_test).tobytes()).hexdigest(),
            },
            "indices": {"train": [0, len(x_rows)], "test": [0, len(x_test)]},
            "points": config.points,
            "splits": {"train": len(dataset.x_train), "test": len(dataset.x_test)},
            "model_sha256": hashlib.sha256(params).hexdigest() if params is not None else None,
            "compute_dtype": precision,
        }
        if hasattr(kernel, "parameters"):
            metadata["parameter_count"] = int(kernel.parameters)
            metadata["implementation"] = getattr(kernel, "chosen", None)
            metadata["scale"] = float(getattr(kernel, "scale", 1.0))
        store = KernelStore.create(
            directory,
            n_train=len(x_rows),
            n_test=len(x_test),
            outputs=kernel.outputs,
            block_size=block_size,
            storage_dtype=config.storage_dtype,
            identity=ctx.run_key,
            metadata=metadata,
            y_train=y_rows,
            y_test=y_test,
        )
        total = len(store.blocks("train")) + len(store.blocks("test_train"))
        finished = [len(store.done("train")) + len(store.done("test_train"))]
        ctx.progress(finished[0], total)
        workers = 1
        start = time.perf_counter()
        if splits(config.parallel, total):
            share = shares_features(config.parallel, kernel, store)
            features_dir = ctx.artifact_dir(FEATURES_DIR)
            names = item_names(store, share)
            with ctx.work_items(names, complete_items(store, names, features_dir)) as items:
                report = fill_items(store, kernel, x_rows, x_test, items, share=share, features_dir=features_dir,
                                    cache_bytes=config.cache_mb << 20, should_stop=ctx.should_stop, wait=True,
                                    on_item=ctx.progress)
                workers = items.workers()
            finished[0] = len(store.done("train")) + len(store.done("test_train"))
            if not report.stopped:
                shutil.rmtree(features_dir, ignore_errors=True)
        else:

            def advanced(part: str, i: int, j: int) -> None:
                finished[0] += 1
                ctx.progress(finished[0], total)

            report = fill(store, kernel, x_rows, x_test, cache_bytes=config.cache_mb << 20,
                          should_stop=ctx.should_stop, on_block=advanced)
        seconds = time.perf_counter() - start
        if report.stopped:
            ctx.save_checkpoint(finished[0], b"")  # the blocks on disk are the real checkpoint
            raise RunInterrupted(f"stopped after {finished[0]} of {total} blocks")

        metrics = {
            "blocks": float(total),
            "blocks_computed": float(len(report.computed)),
            "blocks_reused": float(report.skipped),
            "feature_evaluations": float(report.feature_evaluations),
            "seconds": seconds,
            "seconds_features": report.seconds_features,
            "seconds_blocks": report.seconds_blocks,
            "seconds_writing": report.seconds_writing,
            "kernel_mb": store.nbytes() / 2**20,
            "workers": float(workers),
        }
        if config.psd_check:
            rows = store.n_train * store.outputs
            if rows <= config.psd_max_rows:
                eigenvalues = np.linalg.eigvalsh(store.read_train(np.float64))
                metrics.update({
                    "min_eigenvalue": float(eigenvalues[0]),
                    "max_eigenvalue": float(eigenvalues[-1]),
                    "min_eigenvalue_relative": float(eigenvalues[0] / max(abs(eigenvalues[-1]), 1e-300)),
                })
        ctx.log_metrics(0, metrics)
        ctx.record_artifact_dir("kernel", kind="zarr-kernel", metadata=store.describe())
