"""KRR over a ridge sweep: every λ against a direct solve, leave-one-out against brute force,
and the krr task on a stored kernel."""

import io

import jax
import numpy as np
import pytest
from fakectx import FakeContext

from ntklab.engine.krr import choose_solver, solve_ridge_sweep
from ntklab.tasks.registry import RUN_CONFIG, run_function

RIDGES = np.array([1e-4, 1e-2, 0.3, 10.0])


def problem(rows_per_example, n_examples=12, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    n = n_examples * rows_per_example
    features = rng.standard_normal((n + 5, 30))
    k = features @ features.T / 30
    y = rng.standard_normal((n, outputs if rows_per_example == 1 else 1))
    return k[:n, :n], k[n:, :n], y


def brute_force_loo(k, y, ridge, r):
    n = k.shape[0]
    residuals = np.zeros_like(y)
    for i in range(n // r):
        out = np.arange(i * r, (i + 1) * r)
        keep = np.setdiff1d(np.arange(n), out)
        alpha = np.linalg.solve(k[np.ix_(keep, keep)] + ridge * np.eye(len(keep)), y[keep])
        residuals[out] = y[out] - k[np.ix_(out, keep)] @ alpha
    return residuals


@pytest.mark.parametrize("solver", ["eigh", "cholesky"])
@pytest.mark.parametrize("rows_per_example", [1, 3])
def test_every_ridge_matches_a_direct_solve_and_loo_matches_brute_force(solver, rows_per_example):
    k, k_test, y = problem(rows_per_example)
    solution = solve_ridge_sweep(k, y, RIDGES, k_test=k_test, rows_per_example=rows_per_example, solver=solver)
    assert solution.solver == solver
    n = k.shape[0]
    for index, ridge in enumerate(RIDGES):
        alpha = np.linalg.solve(k + ridge * np.eye(n), y)
        scale = np.max(np.abs(alpha))
        assert np.max(np.abs(solution.alpha[index] - alpha)) / scale < 1e-8
        np.testing.assert_allclose(solution.train_predictions[index], k @ alpha, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(solution.test_predictions[index], k_test @ alpha, rtol=1e-8, atol=1e-10)
        loo = brute_force_loo(k, y, ridge, rows_per_example)
        np.testing.assert_allclose(solution.loo_residuals[index], loo, rtol=1e-7, atol=1e-9)
        hat = k @ np.linalg.inv(k + ridge * np.eye(n))
        gcv = np.sum(((np.eye(n) - hat) @ y) ** 2) / (n // rows_per_example) / (1 - np.trace(hat) / n) ** 2
        assert solution.gcv[index] == pytest.approx(gcv, rel=1e-8)


def test_auto_uses_one_eigendecomposition_for_long_sweeps():
    assert choose_solver(50) == "eigh"
    assert choose_solver(2) == "cholesky"
    k, _, y = problem(1)
    assert solve_ridge_sweep(k, y, np.logspace(-3, 1, 30)).solver == "eigh"


def test_the_krr_task_on_a_stored_empirical_ntk(tmp_path):
    kernel = {
        "task": "kernel",
        "data": {"dataset": "synthetic", "n_train": 40, "n_test": 20, "dim": 16, "image_shape": [4, 4, 1],
                 "num_classes": 3},
        "kernel": {"kind": "empirical", "model": {"arch": "mlp", "depth": 1, "width": 32, "b_std": 0.1},
                   "dtype": "float64"},
        "block_size": 16,
        "storage_dtype": "float64",
    }
    kernel_config = RUN_CONFIG.validate_python(kernel)
    upstream = FakeContext(tmp_path, run_key="kernel")
    run_function("kernel")(kernel_config, upstream)
    config = RUN_CONFIG.validate_python({"task": "krr", "kernel": kernel, "ridge": {"logspace": [-4, 1, 6]},
                                         "centring": "ghorbani", "save_all_predictions": True})
    assert config.upstream_runs() == {"kernel": kernel_config}
    ctx = FakeContext(tmp_path, run_key="krr", upstream_dirs={("kernel", "kernel"): tmp_path / "kernel" / "kernel"})
    run_function("krr")(config, ctx)
    np.testing.assert_allclose(ctx.series("ridge"), np.logspace(-4, 1, 6))
    loo = ctx.series("loo_mse")
    assert len(loo) == 6 and len(ctx.series("test_accuracy")) == 6 and len(ctx.series("gcv")) == 6
    best = int(np.argmin(loo))
    assert ctx.metrics[("best_index", best)] == best
    assert ctx.metrics[("best_ridge", best)] == pytest.approx(np.logspace(-4, 1, 6)[best])
    assert ctx.metrics[("best_test_accuracy", best)] == ctx.series("test_accuracy")[best]
    # the saved predictions are the best ridge's, reproduced by a direct solve on the full-block NTK
    from ntklab.kernelstore import KernelStore

    store = KernelStore.open(tmp_path / "kernel" / "kernel")
    k, k_test = store.read_train(), store.read_test()
    y = (np.eye(3)[store.labels("train")] - 0.1).reshape(-1, 1)
    alpha = np.linalg.solve(k + np.logspace(-4, 1, 6)[best] * np.eye(len(k)), y)
    expected = (k_test @ alpha).reshape(-1, 3) + 0.1
    saved = np.load(io.BytesIO(ctx.artifacts["test_predictions"][0]))
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5)
    assert np.load(io.BytesIO(ctx.artifacts["test_predictions_all"][0])).shape == (6, 20, 3)
    assert jax.numpy.zeros(1).dtype == np.float32, "the float64 kernel run did not leave x64 switched on"


def test_the_krr_task_regresses_spiked_targets(tmp_path):
    """Regression targets travel through the kernel store as floats; KRR with the two-layer NTK
    reports the risk and R² of a direct solve, and no accuracy."""
    data = {"dataset": "spiked", "d": 32, "n_train": 60, "n_test": 30, "degrees": [2], "target_noise": 0.1}
    kernel = {"task": "kernel", "data": data, "kernel": {"kind": "closed_form", "which": "ntk2"}, "block_size": 16,
              "storage_dtype": "float64"}
    kernel_config = RUN_CONFIG.validate_python(kernel)
    run_function("kernel")(kernel_config, FakeContext(tmp_path, run_key="kernel"))
    config = RUN_CONFIG.validate_python({"task": "krr", "kernel": kernel, "ridge": [1e-3, 1.0, 100.0],
                                         "centring": "mean"})
    ctx = FakeContext(tmp_path, run_key="krr", upstream_dirs={("kernel", "kernel"): tmp_path / "kernel" / "kernel"})
    run_function("krr")(config, ctx)
    from ntklab.data.sources import load_dataset
    from ntklab.kernelstore import KernelStore

    dataset = load_dataset(kernel_config.data)
    store = KernelStore.open(tmp_path / "kernel" / "kernel")
    np.testing.assert_array_equal(store.labels("train"), dataset.y_train)
    k, k_test = store.read_train(), store.read_test()
    mean = dataset.y_train.astype(np.float64).mean()
    for index, ridge in enumerate([1e-3, 1.0, 100.0]):
        alpha = np.linalg.solve(k + ridge * np.eye(len(k)), dataset.y_train - mean)
        risk = np.mean((k_test @ alpha + mean - dataset.y_test) ** 2)
        assert ctx.series("test_mse")[index] == pytest.approx(risk, rel=1e-5)
        assert ctx.series("test_r2")[index] == pytest.approx(1 - risk / np.var(dataset.y_test), rel=1e-5)
    assert not [name for name, _ in ctx.metrics if "accuracy" in name]
