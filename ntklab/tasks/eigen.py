"""The `eigen` task: the top-k eigenpairs of a kernel (ntklab/engine/eigen.py).

The kernel is the upstream `kernel` run (reused by identity; an eigendecomposition is memoized
the same way, so every eigenfunction task of a spec shares one). Its rows are the kernel run's
points: the training set, or (`points: train+test`) the training set followed by the test set,
the transductive setting of Ortiz-Jiménez et al. 2021, where the test points are part of the
kernel whose eigenvectors label them. Methods:

- `dense`: LAPACK on K(train, train) read whole; only the top k by index when k < n;
- `lanczos`: implicitly restarted Lanczos whose products read the zarr store one block row at a
  time, so a kernel larger than memory works. Memory: one block row (block_size·r x n·r), the
  Krylov basis (n·r x max(2k + 1, 20)) and the block rows kept between products (`cache_mb`,
  float64); every product reads the rows it does not keep from the store;
- `nystrom`: m = `landmarks` first points, eigenvalues scaled by n/m, eigenvectors extended as
  sqrt(m/n) [K_mm; K_rest] U Λ⁻¹ (exact at m = n). Memory: the n·r x m·r landmark columns;
- `implicit`: Lanczos over K v = J (Jᵀ v) through the network's VJP and JVP, never forming K
  (ntklab/engine/jacobian_products.py): no kernel run is needed, only the kernel config's network,
  data and seed (and its `at` run when the kernel is taken at trained parameters).

Metrics: `eigenvalue` at step i (i = 0 the largest), and at step 0 `trace` (of the whole kernel),
`trace_fraction`, `effective_rank`, `power_law_exponent`, `seconds`. Artifacts: `eigenvalues`
(k), `eigenvectors` (k x n·r, one per row, sample-major) and `indices` (n x 2: split 0 train /
1 test, index in the split, for each point of the kernel).

With `points: train` and class labels, also `label_energy` at step i: the share of the centred
one-hot training labels' energy in eigenvectors 0..i (ntklab/engine/eigen.py), over the k vectors
the method returns (Nyström's only approximately a share: its vectors are not orthonormal). It is
left out for `points: train+test`, whose eigenvectors span the test points too (the eigenfunction
tasks label the points by them, not by their classes), for regression targets, and for an
`outputs:` count that is neither 1 nor one per class.
"""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ntklab.configbase import Seed, StrictModel, non_semantic
from ntklab.tasks.context import RunContext
from ntklab.tasks.kernel import KernelRunConfig

Method = Literal["dense", "lanczos", "nystrom", "implicit"]


class EigenRunConfig(StrictModel):
    task: Literal["eigen"]
    kernel: KernelRunConfig = Field(description="the kernel (an upstream run, except for `implicit`)")
    method: Method = Field("dense", description="dense (LAPACK), lanczos (streams the kernel store), nystrom, "
                           "implicit (J(Jᵀv) products, the kernel never formed)")
    k: PositiveInt | None = Field(None, description="eigenpairs kept, largest first (default: all, dense only)")
    landmarks: PositiveInt | None = Field(None, description="nystrom: the number m of landmark points (the first m)")
    vectors_dtype: Literal["float32", "float64"] = Field("float32", description="precision of the saved eigenvectors")
    seed: Seed = Field(0, description="the Lanczos start vector")
    batch_size: PositiveInt = non_semantic(256, "implicit: examples per JVP/VJP call")
    cache_mb: NonNegativeInt = non_semantic(
        2048, "lanczos: MB of kernel block rows (float64) kept in memory between products; the rest is read "
        "from the store at every product (0: all of it)")

    @model_validator(mode="after")
    def _method_fields(self) -> "EigenRunConfig":
        if self.method != "dense" and self.k is None:
            raise ValueError(f"method {self.method} needs `k`, the number of eigenpairs")
        if (self.method == "nystrom") != (self.landmarks is not None):
            raise ValueError("`landmarks` is required by, and only allowed with, method: nystrom")
        if self.method == "nystrom" and self.k > self.landmarks:
            raise ValueError(f"k = {self.k} exceeds the {self.landmarks} landmarks")
        if self.method == "implicit":
            kernel = self.kernel.kernel
            if kernel.kind != "empirical":
                raise ValueError(f"method implicit needs an empirical kernel, not {kernel.kind}")
            if kernel.trace_outputs:
                raise ValueError("method implicit works on full output blocks; set trace_outputs: false")
        return self

    def upstream_runs(self) -> dict[str, object]:
        if self.method != "implicit":
            return {"kernel": self.kernel}
        at = self.kernel.kernel.at
        return {"at": at} if at is not None else {}


def point_indices(splits: dict | None, rows: int, points: str):
    """(n x 2) split and index of each kernel point: the training set, then the test set with
    `points: train+test`."""
    import numpy as np

    if points != "train+test" or splits is None:
        return np.stack([np.zeros(rows, np.int64), np.arange(rows)], axis=1)
    n_train, n_test = splits["train"], splits["test"]
    return np.concatenate([np.stack([np.zeros(n_train, np.int64), np.arange(n_train)], axis=1),
                           np.stack([np.ones(n_test, np.int64), np.arange(n_test)], axis=1)])


def open_kernel(ctx: RunContext):
    """The upstream kernel store, complete; a clear error naming the kernel run otherwise."""
    from ntklab.kernelstore import KernelStore

    try:
        store = KernelStore.open(ctx.upstream_artifact_dir("kernel", "kernel"))
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"the eigen run needs the kernel store of its upstream kernel run: {error}") from error
    if not store.is_complete():
        key = str(store.meta.get("identity"))[:12]
        raise ValueError(f"the kernel store of kernel run {key} at {store.path} is incomplete: `ntklab reset {key}` "
                         "and running the spec again recomputes it")
    return store


def _stored_spectrum(config: EigenRunConfig, store):
    """(spectrum, trace) from a complete kernel store."""
    import numpy as np

    from ntklab.engine import eigen

    r, b = store.outputs, store.block_size * store.outputs
    rows = store.n_train * r
    nb = store.train_block_count
    trace = float(sum(np.trace(store.train_block(i, i)) for i in range(nb)))
    if config.method == "dense":
        return eigen.dense_eigenpairs(store.read_train(np.float64), config.k), trace
    if config.method == "lanczos":
        def block_row(start: int, stop: int) -> np.ndarray:
            i = start // b
            return np.concatenate([store.train_block(i, j) for j in range(nb)], axis=1)

        bounds = [(i * b, min((i + 1) * b, rows)) for i in range(nb)]
        matvec = eigen.streamed_matvec(block_row, bounds, keep_bytes=config.cache_mb << 20)
        return eigen.operator_eigenpairs(matvec, rows, config.k, seed=config.seed), trace
    m = config.landmarks * r
    if m > rows:
        raise ValueError(f"{config.landmarks} landmarks exceed the kernel's {store.n_train} points")
    columns = np.concatenate(
        [np.concatenate([store.train_block(i, j) for j in range(-(-m // b))], axis=1)[:, :m] for i in range(nb)]
    )
    return eigen.nystrom_eigenpairs(columns[:m], columns[m:], config.k), trace


def _implicit_spectrum(config: EigenRunConfig, ctx: RunContext, dataset):
    """(spectrum, trace, splits) from the network's J(Jᵀv) products on the kernel's `dataset`."""
    import math

    import jax.numpy as jnp

    from ntklab.engine import eigen
    from ntklab.engine.entk import cast_floats
    from ntklab.engine.jacobian_products import JacobianOperator
    from ntklab.engine.kernels import build_network
    from ntklab.engine.models import partition_parameters
    from ntklab.engine.taylor import Network
    from ntklab.tasks.kernel import kernel_points, kernel_setup_for

    kernel = config.kernel
    x_rows = kernel_points(kernel, dataset)[0]
    params = ctx.upstream_artifact("at", "params") if kernel.kernel.at is not None else None
    network = build_network(kernel.kernel.network(), kernel_setup_for(kernel, dataset, params, config.batch_size))
    dtype = jnp.float64 if kernel.kernel.dtype == "float64" else jnp.float32
    operator = JacobianOperator(Network(), cast_floats(network, dtype), x_rows, partition_parameters,
                                batch_size=config.batch_size, vector_batch=1)
    scale = 1.0 / math.sqrt(operator.parameters) if kernel.kernel.scaling == "1/sqrt(P)" else 1.0
    spectrum = eigen.operator_eigenpairs(lambda v: scale * operator.kernel_apply(v[:, None])[:, 0], operator.rows,
                                         config.k, dtype=operator.dtype, seed=config.seed)
    splits = {"train": len(dataset.x_train), "test": len(dataset.x_test)}
    return spectrum, scale * operator.kernel_trace(), splits


def _label_energy(config: EigenRunConfig, dataset, vectors):
    """`label_energy` of the kernel's training points (see the module docstring), or None where
    their labels do not give its rows targets."""
    from ntklab.engine.eigen import label_energy, label_targets

    if config.kernel.points != "train" or dataset.num_classes == 0:
        return None
    outputs = vectors.shape[1] // len(dataset.y_train)
    if outputs not in (1, dataset.num_classes):
        return None
    return label_energy(vectors, label_targets(dataset.y_train, dataset.num_classes, outputs))


def run(config: EigenRunConfig, ctx: RunContext) -> None:
    import contextlib
    import io
    import time

    import jax
    import numpy as np

    from ntklab.data.sources import load_dataset
    from ntklab.engine.eigen import spectrum_metrics

    # the implicit spectrum's network and the training labels' energy read the data; a stored one alone does not
    needs_data = config.method == "implicit" or config.kernel.points == "train"
    dataset = load_dataset(config.kernel.data, ctx.cached) if needs_data else None
    start = time.perf_counter()
    if config.method == "implicit":
        x64 = jax.enable_x64(True) if config.kernel.kernel.dtype == "float64" else contextlib.nullcontext()
        with x64:
            spectrum, trace, splits = _implicit_spectrum(config, ctx, dataset)
    else:
        store = open_kernel(ctx)
        spectrum, trace = _stored_spectrum(config, store)
        splits = store.meta.get("splits")
    seconds = time.perf_counter() - start
    points = (store.n_train if config.method != "implicit" else sum(splits.values()) if
              config.kernel.points == "train+test" else splits["train"])
    indices = point_indices(splits, points, config.kernel.points)

    energy = _label_energy(config, dataset, spectrum.vectors)
    for i, value in enumerate(spectrum.values):
        metrics = {"eigenvalue": float(value)}
        if energy is not None:
            metrics["label_energy"] = float(energy[i])
        ctx.log_metrics(i, metrics)
    ctx.log_metrics(0, {**spectrum_metrics(spectrum.values, trace), "seconds": seconds})

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    meta = {"method": config.method, "points": config.kernel.points, "splits": splits}
    ctx.save_artifact("eigenvalues", npy(spectrum.values.astype(np.float64)), kind="npy",
                      metadata={**meta, "shape": [len(spectrum.values)]})
    vectors = spectrum.vectors.astype(config.vectors_dtype)
    ctx.save_artifact("eigenvectors", npy(vectors), kind="npy", metadata={**meta, "shape": list(vectors.shape)})
    ctx.save_artifact("indices", npy(indices), kind="npy", metadata={**meta, "shape": list(indices.shape)})
