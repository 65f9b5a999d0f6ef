"""Ridge regression in parameter space by CG against the closed-form ridge solution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakectx import FakeContext
from jax.flatten_util import ravel_pytree

from ntklab.engine import cg
from ntklab.engine.config import MLPModel, RandomFeaturesModel
from ntklab.engine.entk import cast_floats
from ntklab.engine.models import build_model
from ntklab.tasks.context import RunInterrupted
from ntklab.tasks.registry import RUN_CONFIG, run_function

SHAPE = (3, 3, 1)


def closed_form(apply, params0, x, y, ridge, center=None):
    flat0, unravel = ravel_pytree(params0)
    jac = jax.jacrev(lambda p: apply(unravel(p), x).reshape(-1))(flat0)  # (n m, P)
    n = x.shape[0]
    residual = (y - apply(params0, x)).reshape(-1)
    rhs = jac.T @ residual / n - (0 if center is None else ridge * center)
    return np.linalg.solve(np.asarray(jac.T @ jac / n + ridge * jnp.eye(len(flat0))), np.asarray(rhs))


@pytest.mark.parametrize("arch", ["rf", "linearized_mlp"])
@pytest.mark.parametrize("penalize", ["delta", "theta"])
def test_cg_matches_the_closed_form_ridge_solution(arch, penalize):
    with jax.enable_x64(True):
        if arch == "rf":
            config = RandomFeaturesModel(arch="rf", width=12)
        else:
            config = MLPModel(arch="mlp", depth=1, width=6, b_std=0.1)
        model = cast_floats(build_model(config, SHAPE, 2, jax.random.PRNGKey(0)), jnp.float64)
        apply, params0 = cg.network_apply(model)
        if arch == "rf":  # RF starts at zero; move away so that "theta" and "delta" differ
            params0 = jax.tree_util.tree_map(lambda p: p + 0.3, params0)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((10, *SHAPE)))
        y = jnp.asarray(rng.standard_normal((10, 2)))
        linear = cg.LinearModel(apply, params0, np.asarray(x), batch_size=4, dtype=jnp.float64)
        center = linear.flat0 if penalize == "theta" else None
        evaluations = []

        def objective(delta):
            out = apply(params0, x) + linear.jvp_all(delta)
            theta = delta if center is None else delta + center
            return float(jnp.sum((y - out) ** 2) / 10 + 0.05 * jnp.sum(theta**2))

        result = cg.ridge_cg(linear, y, 0.05, penalty_center=center, max_iters=200, tol=1e-13, eval_every=5,
                             on_evaluation=lambda k, d: evaluations.append(k) or {"objective": objective(d)})

        expected = closed_form(apply, params0, x, y, 0.05, center)
        assert result.converged and result.iterations <= len(expected) + 1
        np.testing.assert_allclose(np.asarray(result.delta), expected, rtol=1e-8, atol=1e-10)
        assert evaluations and evaluations[-1] == result.iterations
        if arch == "rf":
            assert cg.linearity_defect(apply, params0, x, jax.random.PRNGKey(2)) < 1e-12


def test_the_ridge_cg_task_checkpoints_resumes_and_refuses_nonlinear_models(tmp_path):
    base = {
        "task": "ridge_cg",
        "data": {"dataset": "synthetic", "n_train": 30, "n_test": 10, "dim": 9, "image_shape": [3, 3, 1],
                 "num_classes": 3},
        "model": {"arch": "rf", "width": 20},
        "ridge": 1e-3,
        "max_iters": 40,
        "tol": 1e-10,
        "eval_every": 5,
        "checkpoint_every": 4,
        "dtype": "float64",
    }
    config = RUN_CONFIG.validate_python(base)
    stopped = FakeContext(tmp_path, stop_after=6)
    with pytest.raises(RunInterrupted):
        run_function("ridge_cg")(config, stopped)
    assert stopped.checkpoint_step is not None
    resumed = FakeContext(tmp_path)
    resumed.checkpoint = stopped.checkpoint
    run_function("ridge_cg")(config, resumed)
    fresh = FakeContext(tmp_path)
    run_function("ridge_cg")(config, fresh)
    for name in ("best_train_objective", "best_test_accuracy", "iterations"):
        assert [v for (n, _), v in resumed.metrics.items() if n == name] == \
               [v for (n, _), v in fresh.metrics.items() if n == name]
    assert "params" in fresh.artifacts and fresh.series("residual_norm")[-1] < 1e-6

    mlp = RUN_CONFIG.validate_python({**base, "model": {"arch": "mlp", "depth": 1, "width": 8}})
    with pytest.raises(ValueError, match="linearize"):
        run_function("ridge_cg")(mlp, FakeContext(tmp_path))
    linearized = RUN_CONFIG.validate_python({**base, "model": {"arch": "mlp", "depth": 1, "width": 8},
                                             "linearize": True})
    ctx = FakeContext(tmp_path)
    run_function("ridge_cg")(linearized, ctx)
    assert ctx.series("train_mse")[-1] < ctx.series("train_mse")[0]
