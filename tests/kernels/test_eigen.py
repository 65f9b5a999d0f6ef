"""The eigen task: dense, lanczos (streaming the store block by block), nystrom at m = n and
implicit (J(Jᵀv), no kernel formed) against numpy's eigh of the explicit kernel, in float64."""

import io
from collections import Counter

import jax
import numpy as np
import pytest
from fakectx import FakeContext, fast_compile

from ntklab.engine.entk import reference_ntk
from ntklab.engine.kernels import KernelSetup, build_network
from ntklab.kernelstore import KernelStore
from ntklab.tasks.registry import RUN_CONFIG, run_function

K = 6
KERNEL = {
    "task": "kernel",
    "seed": 3,
    "data": {"dataset": "synthetic", "n_train": 30, "n_test": 14, "dim": 16, "image_shape": [4, 4, 1]},
    "kernel": {"kind": "empirical", "model": {"arch": "mlp", "depth": 1, "width": 24, "b_std": 0.1},
               "dtype": "float64"},
    "points": "train+test",
    "outputs": 1,
    "block_size": 16,
    "storage_dtype": "float64",
}


@pytest.fixture(scope="module")
def stored_kernel(tmp_path_factory):
    root = tmp_path_factory.mktemp("eigen")
    run_function("kernel")(RUN_CONFIG.validate_python(KERNEL), FakeContext(root, run_key="kernel"))
    return root, KernelStore.open(root / "kernel" / "kernel").read_train()


def eigen(root, method, **fields):
    config = RUN_CONFIG.validate_python({"task": "eigen", "kernel": KERNEL, "method": method,
                                         "vectors_dtype": "float64", **fields})
    ctx = FakeContext(root, run_key=f"eigen-{method}", upstream_dirs={("kernel", "kernel"): root / "kernel" / "kernel"})
    run_function("eigen")(config, ctx)
    values = np.load(io.BytesIO(ctx.artifacts["eigenvalues"][0]))
    vectors = np.load(io.BytesIO(ctx.artifacts["eigenvectors"][0]))
    return ctx, values, vectors


def assert_top_eigenpairs(values, vectors, kernel, k):
    reference_values, reference_vectors = np.linalg.eigh(kernel)
    top_values, top_vectors = reference_values[::-1][:k], reference_vectors[:, ::-1][:, :k].T
    np.testing.assert_allclose(values[:k], top_values, rtol=1e-8)
    for got, expected in zip(vectors[:k], top_vectors):
        assert min(np.max(np.abs(got - expected)), np.max(np.abs(got + expected))) < 1e-6


@pytest.mark.parametrize("method, fields", [("dense", {}), ("dense", {"k": K}), ("lanczos", {"k": K}),
                                            ("nystrom", {"k": K, "landmarks": 44})])
def test_stored_methods_match_numpy_eigh(stored_kernel, method, fields):
    root, kernel = stored_kernel
    assert kernel.shape == (44, 44)  # train + test points, one output
    ctx, values, vectors = eigen(root, method, **fields)
    k = fields.get("k", 44)
    assert values.shape == (k,) and vectors.shape == (k, 44)
    assert_top_eigenpairs(values, vectors, kernel, k)
    assert ctx.series("eigenvalue") == pytest.approx(list(values), rel=1e-12)
    assert ctx.metrics[("trace", 0)] == pytest.approx(np.trace(kernel), rel=1e-10)
    assert not ctx.series("label_energy")  # the test points' eigenvectors: no class labels for them
    indices = np.load(io.BytesIO(ctx.artifacts["indices"][0]))
    np.testing.assert_array_equal(indices[:, 0], [0] * 30 + [1] * 14)
    np.testing.assert_array_equal(indices[:, 1], list(range(30)) + list(range(14)))


@pytest.mark.parametrize("cache_mb", [0, 1])
def test_lanczos_reads_the_store_block_by_block(stored_kernel, monkeypatch, cache_mb):
    """With no memory to keep block rows in, every product reads the store again; with room for the
    whole kernel (44 x 44 float64 fits in 1 MB), each block row is read once."""
    root, kernel = stored_kernel
    reads = []
    original = KernelStore.train_block

    def recording(self, i, j, dtype=np.float64):
        block = original(self, i, j, dtype)
        reads.append(((i, j), block.shape))
        return block

    def whole(self, dtype=np.float64):
        raise AssertionError("lanczos read the whole kernel at once")

    monkeypatch.setattr(KernelStore, "train_block", recording)
    monkeypatch.setattr(KernelStore, "read_train", whole)
    _, values, vectors = eigen(root, "lanczos", k=K, cache_mb=cache_mb)
    assert_top_eigenpairs(values, vectors, kernel, K)
    assert reads and all(rows <= 16 and cols <= 16 for _, (rows, cols) in reads)
    # a block is read by its row and, transposed, by its column's row, and a diagonal one for the trace
    most = max(Counter(block for block, _ in reads).values())
    assert most > 10 if cache_mb == 0 else most <= 2, most


def test_nystrom_scales_and_extends_like_the_formula(stored_kernel):
    root, kernel = stored_kernel
    _, values, vectors = eigen(root, "nystrom", k=3, landmarks=20)
    lam, u = np.linalg.eigh(kernel[:20, :20])
    lam, u = lam[::-1][:3], u[:, ::-1][:, :3]
    np.testing.assert_allclose(values, lam * 44 / 20, rtol=1e-10)
    extended = np.sqrt(20 / 44) * kernel[:, :20] @ u / lam
    for got, expected in zip(vectors, extended.T):
        assert min(np.max(np.abs(got - expected)), np.max(np.abs(got + expected))) < 1e-8


def test_implicit_matches_eigh_of_the_brute_force_ntk(tmp_path, monkeypatch):
    fast_compile(monkeypatch)
    config = RUN_CONFIG.validate_python({"task": "eigen", "kernel": KERNEL, "method": "implicit", "k": K,
                                         "vectors_dtype": "float64", "batch_size": 16})
    assert config.upstream_runs() == {}  # the kernel is never formed: no kernel run
    ctx = FakeContext(tmp_path, run_key="implicit")
    run_function("eigen")(config, ctx)
    values = np.load(io.BytesIO(ctx.artifacts["eigenvalues"][0]))
    vectors = np.load(io.BytesIO(ctx.artifacts["eigenvectors"][0]))
    from ntklab.data.sources import load_dataset

    kernel_config = RUN_CONFIG.validate_python(KERNEL)
    data = load_dataset(kernel_config.data)
    x = np.concatenate([data.x_train, data.x_test]).astype(np.float64)
    with jax.enable_x64(True):
        from ntklab.engine.entk import cast_floats

        network = cast_floats(build_network(kernel_config.kernel.network(), KernelSetup((4, 4, 1), 1, seed=3)),
                              jax.numpy.float64)
        kernel = reference_ntk(network, x, x)
    assert_top_eigenpairs(values, vectors, kernel, K)
    assert ctx.metrics[("trace", 0)] == pytest.approx(np.trace(kernel), rel=1e-10)


def test_eigen_on_an_incomplete_kernel_names_the_kernel_run(stored_kernel, tmp_path):
    import shutil

    root, _ = stored_kernel
    broken = tmp_path / "kernel"
    shutil.copytree(root / "kernel" / "kernel", broken)
    next((broken / "done" / "train").iterdir()).unlink()
    config = RUN_CONFIG.validate_python({"task": "eigen", "kernel": KERNEL, "k": K})
    ctx = FakeContext(tmp_path, run_key="eigen", upstream_dirs={("kernel", "kernel"): broken})
    with pytest.raises(ValueError, match="kernel run kernel .* is incomplete"):
        run_function("eigen")(config, ctx)


@pytest.mark.parametrize("fields, message", [
    ({"method": "lanczos"}, "needs `k`"),
    ({"method": "nystrom", "k": 4}, "landmarks"),
    ({"method": "dense", "landmarks": 4}, "landmarks"),
    ({"method": "nystrom", "k": 9, "landmarks": 4}, "exceeds"),
])
def test_bad_method_fields_are_rejected(fields, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        RUN_CONFIG.validate_python({"task": "eigen", "kernel": KERNEL, **fields})
