"""The `train` task: mini-batch training of a network, with metrics, checkpoints and resume."""

from typing import Literal

from pydantic import Field

from ntklab.configbase import StrictModel
from ntklab.data.config import DataConfig
from ntklab.engine.config import ModelConfig, TrainConfig
from ntklab.tasks.context import RunContext, RunDiverged, RunInterrupted


class TrainRunConfig(StrictModel):
    task: Literal["train"]
    seed: int = Field(0, description="seeds the initialization and the batch order")
    data: DataConfig
    model: ModelConfig
    train: TrainConfig


def run(config: TrainRunConfig, ctx: RunContext) -> None:
    """Train from the initialization drawn from `config.seed`, or from the run's checkpoint.

    Metrics are logged at step 0 (fresh runs only), every `eval_every_steps` steps and at the last
    step. The state after step t depends only on the config and t, so an interrupted and resumed
    run ends with the same parameters and metrics as an uninterrupted one.
    """
    # Imported here, not at module level: the CLI validates specs without importing JAX.
    import io

    import jax
    import numpy as np

    from ntklab.data.batches import batch_indices, steps_per_epoch
    from ntklab.data.sources import load_dataset
    from ntklab.engine.losses import output_dim
    from ntklab.engine.models import build_model
    from ntklab.engine.optim import make_optimizer, make_schedule
    from ntklab.engine.training import (
        distance_to_init,
        evaluate,
        init_train_state,
        make_train_step,
        model_to_bytes,
        parameter_summary,
        predict,
        reset_running_sums,
        running_means,
        state_from_bytes,
        state_to_bytes,
    )

    train = config.train
    dataset = load_dataset(config.data)
    n_train = len(dataset.y_train)
    model0 = build_model(
        config.model,
        dataset.input_shape,
        output_dim(train.loss, dataset.num_classes),
        jax.random.PRNGKey(config.seed),
    )
    per_epoch = steps_per_epoch(n_train, train.batch_size, train.drop_last)
    total_steps = train.epochs * per_epoch
    optimizer = make_optimizer(train, per_epoch, total_steps)
    schedule = make_schedule(train, per_epoch, total_steps)
    train_step = make_train_step(train.loss, optimizer)

    state = init_train_state(model0, optimizer)
    checkpoint = ctx.load_checkpoint()
    if checkpoint is not None:
        state = state_from_bytes(checkpoint, state)

    x_train = jax.device_put(dataset.x_train)
    y_train = jax.device_put(dataset.y_train)
    x_train_eval = dataset.x_train[: train.eval_train_samples]
    y_train_eval = dataset.y_train[: train.eval_train_samples]

    def evaluation_metrics(state, t: int) -> dict[str, float]:
        on_train = evaluate(state.model, x_train_eval, y_train_eval, train.loss, train.batch_size)
        on_test = evaluate(state.model, dataset.x_test, dataset.y_test, train.loss, train.batch_size)
        metrics = {
            "train_loss": on_train["loss"],
            "train_accuracy": on_train["accuracy"],
            "test_loss": on_test["loss"],
            "test_accuracy": on_test["accuracy"],
            "lr": float(schedule(max(t - 1, 0))),
            "epoch": t / per_epoch,
        }
        if t > 0:
            metrics.update(running_means(state))
        metrics.update(distance_to_init(state.model, model0))
        return metrics

    start = int(state.step)
    if checkpoint is None:
        ctx.log_metrics(0, evaluation_metrics(state, 0))
    ctx.progress(start, total_steps)
    for s in range(start, total_steps):
        t = s + 1
        indices = batch_indices(config.seed, s, n_train, train.batch_size, train.drop_last)
        state, loss = train_step(state, x_train[indices], y_train[indices])
        batch_loss = float(loss)
        if not np.isfinite(batch_loss):
            ctx.log_metrics(t, {"batch_loss": batch_loss, "epoch": t / per_epoch})
            raise RunDiverged(t, f"the batch loss became {batch_loss} at step {t}")
        if t % train.eval_every_steps == 0 or t == total_steps:
            ctx.log_metrics(t, evaluation_metrics(state, t))
            state = reset_running_sums(state)
        ctx.progress(t, total_steps)
        stopping = t < total_steps and ctx.should_stop()
        if t < total_steps and (t % train.checkpoint_every_steps == 0 or stopping):
            ctx.save_checkpoint(t, state_to_bytes(state))
        if stopping:
            raise RunInterrupted(f"stopped after step {t} of {total_steps}")

    ctx.save_artifact("params", model_to_bytes(state.model), kind="equinox", metadata=parameter_summary(state.model))
    test_logits = predict(state.model, dataset.x_test, train.batch_size).astype(np.float32)
    logits_file = io.BytesIO()
    np.save(logits_file, test_logits)
    ctx.save_artifact(
        "test_logits",
        logits_file.getvalue(),
        kind="npy",
        metadata={"shape": list(test_logits.shape), "dtype": str(test_logits.dtype)},
    )
