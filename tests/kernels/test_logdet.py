"""Log-determinants of tiled matrices (ntklab/engine/logdet.py) against numpy's slogdet, and the
`kernel_analysis` task on a kernel store read block by block."""

import json
import sqlite3
import tracemalloc

import numpy as np
import pytest
import scipy.linalg
from conftest import ntklab
from fakectx import FakeContext

from ntklab.engine.logdet import (
    NotPositiveDefinite,
    Tiling,
    block_diagonal_logdet,
    cholesky_logdet,
    pseudo_tiles,
    slq_logdet,
    tiled_matmul,
)
from ntklab.kernelstore import KernelStore
from ntklab.tasks import kernel_analysis
from ntklab.tasks.context import RunInterrupted


def spd(n: int, seed: int = 0, floor: float = 0.1) -> np.ndarray:
    """A random symmetric positive definite matrix with a spread-out spectrum."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(floor, 10.0, n)) @ q.T


def rbf_kernel(n: int, seed: int = 0) -> np.ndarray:
    """A well-conditioned positive definite kernel matrix, cheap to build at sizes where QR is not."""
    x = np.random.default_rng(seed).normal(size=(n, 3))
    squared = np.sum(x**2, axis=1)
    return np.exp(-(squared[:, None] + squared[None, :] - 2 * x @ x.T) / 6.0) + 0.5 * np.eye(n)


def reader(matrix: np.ndarray, tiling: Tiling, reads: list | None = None):
    def read(i, j):
        if reads is not None:
            reads.append((i, j))
        return matrix[tiling.rows(i), tiling.rows(j)].copy()

    return read


def test_tiled_cholesky_equals_slogdet_and_the_dense_factor():
    a = spd(37)
    tiling = Tiling(37, 8)  # four full tiles and one of 5 rows
    factor = np.zeros_like(a)
    value = cholesky_logdet(reader(a, tiling), tiling, factor)
    sign, expected = np.linalg.slogdet(a)
    assert sign == 1 and value == pytest.approx(expected, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(np.tril(factor), np.linalg.cholesky(a), atol=1e-12)


def test_tiled_cholesky_resumes_from_a_column():
    a = spd(30, seed=1)
    tiling = Tiling(30, 7)
    factor = np.zeros_like(a)
    seen = []

    def stop_after_two(j, logdet):
        seen.append((j, logdet))
        if j == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cholesky_logdet(reader(a, tiling), tiling, factor, on_column=stop_after_two)
    resumed_reads = []
    value = cholesky_logdet(reader(a, tiling, resumed_reads), tiling, factor, start=2, logdet_before=seen[-1][1])
    assert value == pytest.approx(np.linalg.slogdet(a)[1], rel=1e-12)
    assert min(j for _, j in resumed_reads) == 2  # the finished columns of A were not read again


def test_not_positive_definite_names_the_tile_and_a_ridge_fixes_it():
    rng = np.random.default_rng(2)
    low_rank = rng.normal(size=(20, 5))
    a = low_rank @ low_rank.T  # rank 5 of 20: singular
    tiling = Tiling(20, 6)
    with pytest.raises(NotPositiveDefinite, match="diagonal tile 0|diagonal tile 1"):
        cholesky_logdet(reader(a, tiling), tiling, np.zeros_like(a))
    value = cholesky_logdet(reader(a, tiling), tiling, np.zeros_like(a), ridge=0.5)
    assert value == pytest.approx(np.linalg.slogdet(a + 0.5 * np.eye(20))[1], rel=1e-12)


def test_tiled_matmul_reads_the_upper_triangle_once():
    a = spd(23, seed=3)
    tiling = Tiling(23, 5)
    reads = []
    v = np.random.default_rng(0).normal(size=(23, 4))
    np.testing.assert_allclose(tiled_matmul(reader(a, tiling, reads), tiling, v), a @ v, atol=1e-12)
    assert sorted(reads) == [(i, j) for i in range(tiling.count) for j in range(i, tiling.count)]


def test_slq_with_a_full_krylov_space_is_the_exact_hutchinson_estimate():
    n, probes, seed = 12, 5, 7
    a = spd(n, seed=4)
    estimate = slq_logdet(lambda v: a @ v, n, probes=probes, steps=n, seed=seed)
    z = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, probes))
    log_a = scipy.linalg.logm(a).real
    hutchinson = np.einsum("np,nm,mp->p", z, log_a, z)
    assert estimate.logdet == pytest.approx(hutchinson.mean(), rel=1e-8)
    assert estimate.stderr == pytest.approx(hutchinson.std(ddof=1) / np.sqrt(probes), rel=1e-6)


def test_slq_estimate_is_close_on_a_larger_matrix():
    a = spd(300, seed=5)
    estimate = slq_logdet(lambda v: a @ v, 300, probes=40, steps=25, seed=0, ridge=0.3)
    expected = np.linalg.slogdet(a + 0.3 * np.eye(300))[1]
    assert abs(estimate.logdet - expected) < max(4 * estimate.stderr, 0.02 * abs(expected))


def test_block_diagonal_and_pseudo_ntk_against_their_definitions():
    r, n = 3, 11
    a = spd(r * n, seed=6)
    tiling = Tiling(r * n, 4 * r)
    blocks = [a[s * r:(s + 1) * r, s * r:(s + 1) * r] for s in range(n)]
    expected = sum(np.linalg.slogdet(b + 0.1 * np.eye(r))[1] for b in blocks)
    assert block_diagonal_logdet(reader(a, tiling), tiling, r, ridge=0.1) == pytest.approx(expected, rel=1e-12)
    read, pseudo_tiling = pseudo_tiles(reader(a, tiling), tiling, r)
    pseudo = a.reshape(n, r, n, r).sum(axis=(1, 3)) / r
    assert pseudo_tiling == Tiling(n, 4)
    value = cholesky_logdet(read, pseudo_tiling, np.zeros((n, n)))
    assert value == pytest.approx(np.linalg.slogdet(pseudo)[1], rel=1e-12)


def write_store(path, matrix: np.ndarray, outputs: int, block_size: int) -> KernelStore:
    n = len(matrix) // outputs
    store = KernelStore.create(path, n_train=n, n_test=0, outputs=outputs, block_size=block_size,
                               storage_dtype="float64", identity="k", metadata={},
                               y_train=np.zeros(n, np.int32), y_test=np.zeros(0, np.int32))
    rows = block_size * outputs
    for i, j in store.blocks("train"):
        store.write_block("train", i, j, matrix[i * rows:(i + 1) * rows, j * rows:(j + 1) * rows])
    return store


def analysis_config(**fields):
    kernel = {"task": "kernel", "data": {"dataset": "digits"}, "kernel": {"kind": "analytic", "which": "ntk",
                                                                            "model": {"arch": "mlp", "depth": 1}}}
    return kernel_analysis.KernelAnalysisRunConfig.model_validate({"task": "kernel_analysis", "kernel": kernel,
                                                                    **fields})


def test_task_reads_the_store_in_blocks_within_a_memory_cap(tmp_path):
    r, n, block = 2, 1000, 50
    a = rbf_kernel(r * n, seed=7)
    store = write_store(tmp_path / "kernel", a, r, block)
    ctx = FakeContext(tmp_path / "runs", upstream_dirs={("kernel", "kernel"): store.path})
    config = analysis_config(analyses=["logdet", "block_diagonal", "pseudo_ntk"])
    del a
    tracemalloc.start()
    kernel_analysis.run(config, ctx)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kernel_bytes = (r * n) ** 2 * 8
    assert peak < kernel_bytes / 8, (peak, kernel_bytes)  # a few blocks of 100 x 100, not the 2000 x 2000 kernel
    full = store.read_train()
    assert ctx.metrics[("logdet", 0)] == pytest.approx(np.linalg.slogdet(full)[1], rel=1e-10)
    assert ctx.metrics[("logdet_per_row", 0)] == pytest.approx(ctx.metrics[("logdet", 0)] / (r * n))
    pseudo = full.reshape(n, r, n, r).sum(axis=(1, 3)) / r
    assert ctx.metrics[("logdet_pseudo_ntk", 0)] == pytest.approx(np.linalg.slogdet(pseudo)[1], rel=1e-10)
    blocks = full.reshape(n, r, n, r)[np.arange(n), :, np.arange(n), :]
    assert ctx.metrics[("logdet_block_diagonal", 0)] == pytest.approx(np.linalg.slogdet(blocks)[1].sum(), rel=1e-10)
    assert not (tmp_path / "runs" / "run0" / "factor_logdet").exists()  # the factor file is removed


def test_task_stopped_mid_factorization_resumes_to_the_same_value(tmp_path):
    a = spd(60, seed=8)
    store = write_store(tmp_path / "kernel", a, 1, 10)
    ctx = FakeContext(tmp_path / "runs", upstream_dirs={("kernel", "kernel"): store.path}, stop_after=0)
    config = analysis_config(analyses=["logdet", "slq"], slq={"probes": 6, "steps": 15, "seed": 3}, ridge=0.2)
    with pytest.raises(RunInterrupted, match="after block column 1 of 6"):
        kernel_analysis.run(config, ctx)
    state = json.loads(ctx.checkpoint)
    assert state["cholesky"]["next"] == 1 and not state["done"]
    ctx.stop_after = None
    kernel_analysis.run(config, ctx)
    assert ctx.metrics[("logdet", 0)] == pytest.approx(np.linalg.slogdet(a + 0.2 * np.eye(60))[1], rel=1e-12)
    dense = slq_logdet(lambda v: a @ v, 60, probes=6, steps=15, seed=3, ridge=0.2)
    assert ctx.metrics[("logdet_slq", 0)] == pytest.approx(dense.logdet, rel=1e-10)
    assert ctx.metrics[("logdet_slq_stderr", 0)] == pytest.approx(dense.stderr, rel=1e-8)


def test_incomplete_kernel_store_is_refused(tmp_path):
    n = 20
    store = KernelStore.create(tmp_path / "kernel", n_train=n, n_test=0, outputs=1, block_size=10,
                               storage_dtype="float64", identity="k", metadata={})
    store.write_block("train", 0, 0, spd(10))
    ctx = FakeContext(tmp_path / "runs", upstream_dirs={("kernel", "kernel"): store.path})
    with pytest.raises(ValueError, match="incomplete"):
        kernel_analysis.run(analysis_config(), ctx)


SPEC = """\
name: logdet
groups:
  analysis:
    task: kernel_analysis
    ridge: 0.01
    analyses: [logdet, block_diagonal, pseudo_ntk]
    kernel:
      task: kernel
      data: {dataset: synthetic, n_train: 40, n_test: 8, dim: 16, image_shape: [4, 4, 1], num_classes: 3}
      kernel: {kind: empirical, model: {arch: mlp, depth: 1, width: 8}}
      storage_dtype: float64
      block_size: 16
      test: false
"""


def test_kernel_analysis_of_an_empirical_ntk_through_the_cli(home):
    (home / "logdet.yaml").write_text(SPEC)
    ntklab("run", "logdet.yaml", home=home, check=True)
    db = sqlite3.connect(home / "ntklab.db")
    (path,) = db.execute("select a.path from artifacts a join runs r on r.id = a.run_id "
                         "where r.group_name = 'analysis.kernel' and a.name = 'kernel'").fetchone()
    full = KernelStore.open(home / path).read_train()
    metrics = dict(db.execute("select m.name, m.value from metrics m join runs r on r.id = m.run_id "
                              "where r.group_name = 'analysis'"))
    rows = len(full)
    assert rows == 40 * 3 and metrics["rows"] == rows
    assert metrics["logdet"] == pytest.approx(np.linalg.slogdet(full + 0.01 * np.eye(rows))[1], rel=1e-9)
    pseudo = full.reshape(40, 3, 40, 3).sum(axis=(1, 3)) / 3
    assert metrics["logdet_pseudo_ntk"] == pytest.approx(np.linalg.slogdet(pseudo + 0.01 * np.eye(40))[1], rel=1e-9)
