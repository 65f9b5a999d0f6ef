"""The `ridge_cg` task: ridge regression in parameter space by conjugate gradients (Ghorbani et al.).

For a model linear in its trainable parameters (archs `rf` and `nt`), or the order-1 expansion
(linearization) of any network around its initialization (`linearize: true`), it minimizes

    (1/n) Σ_i ‖y_i - f(θ, x_i)‖² + λ ‖θ - c‖²        (c = θ0 with penalize: delta, 0 with theta)

over θ by CG on the normal equations with matrix-free JVP/VJP products (ntklab/engine/cg.py).
Targets are the one-hot labels minus the `centring` offset. Metrics: `residual_norm` and
`objective` at every iteration (step = iteration); every `eval_every` iterations the true
`train_objective`, train/test `mse` and `accuracy`; at the end `best_*` metrics of the best
evaluated iterate, which is also saved (artifact `params`, the parameters θ).
"""

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from ntklab.configbase import Seed, StrictModel, non_semantic
from ntklab.data.config import DataConfig
from ntklab.engine.config import ModelConfig
from ntklab.tasks.context import RunContext, RunInterrupted


class RidgeCGRunConfig(StrictModel):
    task: Literal["ridge_cg"]
    seed: Seed = Field(0, description="seeds the initialization θ0 (the fixed features of rf and nt)")
    data: DataConfig
    model: ModelConfig
    ridge: NonNegativeFloat = Field(description="λ, used as is in the normal equations (Ghorbani's CG path)")
    linearize: bool = Field(
        False, description="solve for the order-1 expansion of the network around θ0 (required unless the "
        "model is linear in its parameters, like rf and nt)"
    )
    penalize: Literal["delta", "theta"] = Field("delta", description="penalize ‖θ - θ0‖² (delta) or ‖θ‖² (theta)")
    centring: Literal["none", "mean", "ghorbani"] = Field("none", description="offset subtracted from one-hot targets")
    max_iters: PositiveInt = 750
    tol: PositiveFloat = Field(1e-4, description="stop when ‖residual‖ <= tol ‖rhs‖ (or atol)")
    atol: NonNegativeFloat = 0.0
    eval_every: PositiveInt = Field(30, description="evaluate the true objective and metrics every k iterations")
    dtype: Literal["float32", "float64"] = "float32"
    batch_size: PositiveInt = non_semantic(1000, "examples per JVP/VJP batch")
    checkpoint_every: PositiveInt = non_semantic(100, "iterations between checkpoints")


def run(config: RidgeCGRunConfig, ctx: RunContext) -> None:
    import contextlib

    x64 = contextlib.nullcontext()
    if config.dtype == "float64":
        import jax

        x64 = jax.enable_x64(True)
    with x64:
        _run(config, ctx)


def _run(config: RidgeCGRunConfig, ctx: RunContext) -> None:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ntklab.data.sources import load_dataset
    from ntklab.engine import cg
    from ntklab.engine.entk import cast_floats
    from ntklab.engine.models import build_model, partition_parameters
    from ntklab.engine.training import model_to_bytes, parameter_summary

    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    dataset = load_dataset(config.data)
    classes = dataset.num_classes
    key = jax.random.PRNGKey(config.seed)
    model0 = cast_floats(build_model(config.model, dataset.input_shape, classes, key), dtype)
    apply, params0 = cg.network_apply(model0)
    if not config.linearize:
        probe = jnp.asarray(dataset.x_train[:64], dtype)
        defect = cg.linearity_defect(apply, params0, probe, jax.random.PRNGKey(1))
        if defect > (1e-3 if dtype == jnp.float32 else 1e-8):
            raise ValueError(f"the {config.model.arch} model is not linear in its parameters (relative defect "
                             f"{defect:.2g}); set linearize: true to solve for its order-1 expansion")
    linear = cg.LinearModel(apply, params0, dataset.x_train, batch_size=config.batch_size, dtype=dtype)
    offset = {"none": 0.0, "mean": 1.0 / classes, "ghorbani": 0.1}[config.centring]
    y_train = jnp.asarray(np.eye(classes)[dataset.y_train] - offset, dtype)
    y_test = jnp.asarray(np.eye(classes)[dataset.y_test] - offset, dtype)
    center = linear.flat0 if config.penalize == "theta" else None
    f0_train = linear.outputs0()
    f0_test = linear.outputs0(dataset.x_test)

    def evaluation(k: int, delta) -> dict:
        train_out = f0_train + linear.jvp_all(delta)
        test_out = f0_test + linear.jvp_all(delta, dataset.x_test)
        penalized = delta if center is None else delta + center
        train_mse = float(jnp.mean(jnp.sum((train_out - y_train) ** 2, axis=1)))
        metrics = {
            "train_objective": train_mse + config.ridge * float(jnp.sum(penalized**2)),
            "train_mse": train_mse,
            "train_accuracy": float(np.mean(np.argmax(np.asarray(train_out), 1) == dataset.y_train)),
            "test_mse": float(jnp.mean(jnp.sum((test_out - y_test) ** 2, axis=1))),
            "test_accuracy": float(np.mean(np.argmax(np.asarray(test_out), 1) == dataset.y_test)),
        }
        ctx.log_metrics(k, metrics)
        return {"objective": metrics["train_objective"], **metrics}

    saved = ctx.load_checkpoint()
    state = cg.state_from_bytes(saved, dtype) if saved else None
    if state is None:
        evaluation(0, jnp.zeros_like(linear.flat0))

    def on_iteration(k: int, values: dict) -> None:
        ctx.log_metrics(k, values)
        ctx.progress(k, config.max_iters)

    result = cg.ridge_cg(
        linear, y_train, config.ridge, penalty_center=center, max_iters=config.max_iters, tol=config.tol,
        atol=config.atol, eval_every=config.eval_every, state=state, on_iteration=on_iteration,
        on_evaluation=evaluation, checkpoint_every=config.checkpoint_every,
        on_checkpoint=lambda s: ctx.save_checkpoint(s.iteration, cg.state_to_bytes(s)),
        should_stop=ctx.should_stop,
    )
    if isinstance(result, cg.CGState):
        raise RunInterrupted(f"stopped after CG iteration {result.iteration}")
    best = evaluation(result.best_iteration, result.delta)
    summary = {f"best_{k}": v for k, v in best.items() if k != "objective"}
    summary.update({"best_iteration": float(result.best_iteration), "iterations": float(result.iterations),
                    "converged": float(result.converged)})
    ctx.log_metrics(result.iterations, summary)
    model = eqx.combine(linear.unravel(linear.flat0 + result.delta), partition_parameters(model0)[1])
    ctx.save_artifact("params", model_to_bytes(model), kind="equinox",
                      metadata={**parameter_summary(model), "linearized_around_init": config.linearize})
