"""The blocked, out-of-core kernel: disk equals memory, and a killed run resumes without
recomputing a finished block."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from fakectx import FakeContext, fast_compile

from ntklab.engine.config import MLPModel
from ntklab.engine.entk import EmpiricalNTK
from ntklab.engine.models import build_model
from ntklab.kernelstore import KernelStore, KernelStoreMismatch, fill
from ntklab.tasks.context import RunInterrupted
from ntklab.tasks.registry import RUN_CONFIG, run_function

SHAPE = (4, 4, 1)


@pytest.fixture(autouse=True)
def _fast_compile(monkeypatch):
    fast_compile(monkeypatch)
N_TRAIN, N_TEST, BLOCK = 11, 6, 4  # 3 train block rows (last one partial), 2 test block rows


def kernel(trace=False, batch=BLOCK):
    config = MLPModel(arch="mlp", depth=1, width=16, b_std=0.1, parameterization="ntk")
    model = build_model(config, SHAPE, 3, jax.random.PRNGKey(0))
    return EmpiricalNTK(model, SHAPE, "structured", trace=trace, batch_size=batch)


def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N_TRAIN, *SHAPE)).astype(np.float32),
            rng.standard_normal((N_TEST, *SHAPE)).astype(np.float32))


def new_store(path, k, dtype="float32"):
    return KernelStore.create(path, n_train=N_TRAIN, n_test=N_TEST, outputs=k.outputs, block_size=BLOCK,
                              storage_dtype=dtype, identity="test", metadata={"scaling": "none"},
                              y_train=np.arange(N_TRAIN) % 3, y_test=np.arange(N_TEST) % 3)


@pytest.mark.parametrize("trace", [False, True])
def test_blocked_kernel_on_disk_equals_the_kernel_in_memory(tmp_path, trace):
    k = kernel(trace)
    x_train, x_test = data()
    in_memory = k(x_train)
    in_memory_test = k(x_test, x_train)
    store = new_store(tmp_path / "k", k)
    report = fill(store, k, x_train, x_test)
    assert len(report.computed) == 6 + 6 and report.skipped == 0
    # every batch featurized once: 3 train batches (cached) + 2 test batches
    assert report.feature_evaluations == 3 + 2
    stored = KernelStore.open(tmp_path / "k")
    assert stored.is_complete()
    np.testing.assert_allclose(stored.read_train(), in_memory, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(stored.read_test(), in_memory_test, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(stored.train_block(2, 0), in_memory[8 * k.outputs :, : 4 * k.outputs], rtol=2e-6)
    lower = stored._group["train"][8 * k.outputs :, : 4 * k.outputs]
    assert not np.any(lower), "only the upper block triangle is stored"
    np.testing.assert_array_equal(stored.labels("train"), np.arange(N_TRAIN) % 3)


def test_without_memory_for_features_column_batches_are_recomputed(tmp_path):
    k = kernel()
    x_train, x_test = data()
    report = fill(new_store(tmp_path / "k", k), k, x_train, x_test, cache_bytes=0)
    # row i featurizes batch i and every column j > i again; test rows need all 3 columns again
    assert report.feature_evaluations == (1 + 2) + (1 + 1) + 1 + 2 * (1 + 3)


def test_float16_storage_overflow_is_refused(tmp_path):
    store = new_store(tmp_path / "k", kernel(), dtype="float16")
    with pytest.raises(OverflowError, match="1/sqrt"):
        store.write_block("train", 0, 0, np.full((12, 12), 1e6))


def test_a_store_of_another_kernel_is_not_resumed(tmp_path):
    new_store(tmp_path / "k", kernel())
    with pytest.raises(KernelStoreMismatch):
        KernelStore.create(tmp_path / "k", n_train=N_TRAIN, n_test=N_TEST, outputs=3, block_size=BLOCK,
                           storage_dtype="float32", identity="another", metadata={})


KILLED = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_store import kernel, data, new_store
from ntklab.kernelstore import fill
k = kernel()
x_train, x_test = data()
store = new_store({path!r}, k)
written = []
def after(part, i, j):
    written.append((part, i, j))
    if len(written) == {kill_after}:
        os._exit(9)  # killed: no cleanup, no exception handling
fill(store, k, x_train, x_test, on_block=after)
"""


def test_a_killed_fill_resumes_and_recomputes_no_finished_block(tmp_path):
    path = tmp_path / "k"
    script = KILLED.format(tests=str(Path(__file__).parent), path=str(path), kill_after=5)
    killed = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stderr
    k = kernel()
    x_train, x_test = data()
    store = KernelStore.open(path, mode="r+")
    finished = store.done("train") | {("t",) + b for b in store.done("test_train")}
    assert len(finished) == 5
    report = fill(store, k, x_train, x_test)
    assert report.skipped == 5
    assert len(report.computed) == 12 - 5
    recomputed = {(i, j) for part, i, j in report.computed if part == "train"}
    assert not recomputed & {(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)}, "the 5 blocks written first were not redone"
    np.testing.assert_allclose(store.read_train(), k(x_train), rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(store.read_test(), k(x_test, x_train), rtol=2e-6, atol=1e-6)


def kernel_run(**overrides):
    config = {
        "task": "kernel",
        "data": {"dataset": "synthetic", "n_train": 20, "n_test": 7, "dim": 16, "image_shape": [4, 4, 1],
                 "num_classes": 3},
        "kernel": {"kind": "empirical", "model": {"arch": "mlp", "depth": 1, "width": 16, "b_std": 0.1},
                   "scaling": "1/sqrt(P)"},
        "block_size": 8,
        "storage_dtype": "float16",
        "psd_check": True,
    }
    config.update(overrides)
    return RUN_CONFIG.validate_python(config)


def test_the_kernel_task_stops_between_blocks_and_resumes(tmp_path):
    config = kernel_run()
    stopped = FakeContext(tmp_path, run_key="k", stop_after=3)
    with pytest.raises(RunInterrupted):
        run_function("kernel")(config, stopped)
    assert stopped.checkpoint_step == 3 and not stopped.recorded_dirs
    resumed = FakeContext(tmp_path, run_key="k")
    run_function("kernel")(config, resumed)
    metrics = {name: value for (name, _), value in resumed.metrics.items()}
    assert metrics["blocks"] == 6 + 3  # 3x3 upper triangle, 1x3 test
    assert metrics["blocks_reused"] == 3 and metrics["blocks_computed"] == 6
    assert metrics["min_eigenvalue"] > -1e-3 * metrics["max_eigenvalue"]
    recorded = resumed.recorded_dirs["kernel"]
    assert recorded["kind"] == "zarr-kernel" and recorded["storage_dtype"] == "float16"
    assert recorded["parameter_count"] == 16 * 16 + 16 + 16 * 3 + 3
    assert recorded["scale"] == pytest.approx(1 / np.sqrt(recorded["parameter_count"]))
    assert len(recorded["data_sha256"]["x_train"]) == 64 and recorded["layout"] == "sample_major"
    json.dumps(recorded)
    # the stored kernel equals the in-memory one up to float16 rounding
    from ntklab.data.sources import load_dataset

    dataset = load_dataset(config.data)
    model = build_model(config.kernel.model, dataset.input_shape, 3, jax.random.PRNGKey(0))
    direct = EmpiricalNTK(model, dataset.input_shape, "jacobian", batch_size=20, scale=recorded["scale"])
    stored = KernelStore.open(tmp_path / "k" / "kernel")
    np.testing.assert_allclose(stored.read_train(), direct(dataset.x_train), rtol=2e-3, atol=2e-3)
