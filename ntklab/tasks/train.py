"""The `train` task: mini-batch training of a network or of its Taylor expansion, with metrics,
checkpoints and resume.

Expansions (Bai et al. 2020). `train.expansion_order` k >= 1 trains the order-k Taylor expansion of
the network around its starting point theta0, with the same optimizer, batches and augmentation as
the network itself. theta0 is the initialization drawn from `seed`, or, with `expansion_point`, the
final parameters of another train run (its `params` artifact), which the runner runs first or reuses.

`expansion_point` is a field of the run config rather than of `train`: it holds a whole
`TrainRunConfig`, which the engine's `TrainConfig` cannot refer to without importing the task layer.
`data` is a dataset config or a dataset derived from an upstream run (`TrainData`,
ntklab/tasks/derived_data.py) and `alignment` holds an eigen run (ntklab/tasks/alignment.py): both
refer to task configs that refer back to this one, so they are named here and resolved by
ntklab/tasks/train_references.py.

With `train.compare_to_full` (default) an expansion also names the network trained from the same
theta0 (the same config at order 0) as its upstream run `full`, and logs at every evaluation step t
how far its test logits are from the network's at the same step (`fn_distance`, `fn_rms_distance`,
`agreement`), read from the network's artifact `test_logits/step_{t}`.
"""

import functools
from collections.abc import Callable
from typing import Literal, Optional

from pydantic import BaseModel, Field, model_validator

from ntklab.configbase import Seed, StrictModel, added_field
from ntklab.data.config import REGRESSION_DATASETS
from ntklab.engine.config import EXPANSION_DEFAULTS, ModelConfig, TrainConfig
from ntklab.tasks.context import RunContext, RunDiverged, RunInterrupted


class TrainRunConfig(StrictModel):
    task: Literal["train"]
    seed: Seed = Field(0, description="seeds the initialization, the batch order and the augmentation")
    data: "TrainData" = Field(description="a dataset, or a dataset derived from an upstream run (ntk_eigenfunction)")
    model: ModelConfig
    train: TrainConfig
    alignment: Optional["AlignmentConfig"] = added_field(
        None, description="kernel alignment metrics: with the eigenvectors of an eigen run after training, and "
        "kernel-target alignment at every evaluation step (ntklab/tasks/alignment.py)",
    )
    expansion_point: Optional["TrainRunConfig"] = Field(
        None,
        description="a train run whose final parameters are the starting and expansion point theta0 instead "
        "of the initialization (its `model` must be this run's); the runner runs it first or reuses it",
    )
    reset_frozen: bool = added_field(
        False, description="with expansion_point: take its trainable parameters but the initialization's frozen "
        "arrays (BatchNorm running statistics), Ortiz-Jiménez et al.'s rule for linearizing a pretrained network",
    )

    @model_validator(mode="after")
    def _regression_loss(self) -> "TrainRunConfig":
        if self.data.dataset in REGRESSION_DATASETS and self.train.loss != "mse":
            raise ValueError(f"the {self.data.dataset} dataset has regression targets: train with loss: mse "
                             f"(not {self.train.loss})")
        return self

    @model_validator(mode="after")
    def _reset_needs_a_point(self) -> "TrainRunConfig":
        if self.reset_frozen and self.expansion_point is None:
            raise ValueError("reset_frozen applies to an expansion_point; there is none")
        return self

    @model_validator(mode="after")
    def _expansion_point_fits(self) -> "TrainRunConfig":
        if self.expansion_point is not None and self.expansion_point.model != self.model:
            raise ValueError(
                "expansion_point.model differs from model: the expansion point's parameters must fit this model"
            )
        return self

    def full_network(self) -> "TrainRunConfig":
        """This run at expansion order 0: the network trained from the same starting point, for the
        whole schedule (without `stop_when`, so every step an expansion evaluates has its logits)."""
        train = self.train.model_copy(update={"expansion_order": 0, "stop_when": None, **EXPANSION_DEFAULTS})
        return self.model_copy(update={"train": train})

    def upstream_runs(self) -> dict[str, BaseModel]:
        """The runs this one needs first: the run it expands around, and the network it compares to."""
        data_hook = _upstream_hook(type(self.data))
        needed: dict[str, BaseModel] = dict(data_hook(self.data)) if data_hook is not None else {}
        if self.alignment is not None:
            needed.update(self.alignment.upstream_runs())
        if self.expansion_point is not None:
            needed["expansion_point"] = self.expansion_point
        if self.train.expansion_order >= 1 and self.train.compare_to_full:
            needed["full"] = self.full_network()
        return needed


@functools.cache
def _upstream_hook(data_class: type) -> Callable | None:
    """A data class's `upstream_runs`: looked up once per class, as a model's missing attribute costs
    ~2 us to find missing and planning asks once a run."""
    return getattr(data_class, "upstream_runs", None)


def check_inputs(config: TrainRunConfig) -> list[str]:
    """Missing or corrupt dataset files (the expansion point's are checked as a run of its own)."""
    try:
        from ntklab.data.sources import check_dataset
    except ImportError:  # a data layer without file-based datasets
        return []
    source = config.data.source() if hasattr(config.data, "source") else config.data
    return list(check_dataset(source)) if source is not None else []


def load_run_dataset(data, ctx: RunContext):
    """The arrays of a run's `data`: a derived dataset builds them from its upstream run."""
    from ntklab.data.sources import load_dataset

    derived = getattr(data, "load", None)
    if derived is not None:
        return derived(ctx)
    cached = getattr(ctx, "cached", None)
    return load_dataset(data, cached) if cached is not None else load_dataset(data)


def logits_artifact_name(step: int) -> str:
    return f"test_logits/step_{step}"


def run(config: TrainRunConfig, ctx: RunContext) -> None:
    """Train from theta0 (the initialization drawn from `config.seed`, or the expansion point), or
    from the run's checkpoint.

    Metrics: train/test `loss` and `accuracy`; on regression targets (the spiked dataset, loss
    mse) train/test `loss`, `mse` (the risk, mean squared error) and `r2` instead of accuracy.

    Metrics are logged at step 0 (fresh runs only), every `eval_every_steps` steps and at the last
    step (the first evaluation step that meets `train.stop_when` is the last: it logs
    `stopped_at_step`, and the `params` artifact's metadata says why), and the test logits of each
    of these steps are saved as `test_logits/step_{t}`. The state after step t depends only on the
    config and t, so an interrupted and resumed run ends with the same parameters and metrics as an
    uninterrupted one.
    """
    # Imported here, not at module level: the CLI validates specs without importing JAX.
    import io

    import jax
    import numpy as np

    from ntklab.data.augment import augment_batch
    from ntklab.data.batches import batch_indices, steps_per_epoch
    from ntklab.engine import training
    from ntklab.engine.losses import output_dim
    from ntklab.engine.models import build_model
    from ntklab.engine.optim import make_optimizer, make_schedule
    from ntklab.engine.taylor import make_forward

    train = config.train
    dataset = load_run_dataset(config.data, ctx)
    n_train = len(dataset.y_train)
    out_dim = output_dim(train.loss, dataset.num_classes)
    model0 = build_model(config.model, dataset.input_shape, out_dim, jax.random.PRNGKey(config.seed))
    if config.expansion_point is not None:
        model0 = _expansion_point(config, ctx, model0, out_dim, dataset.num_classes)
    forward = make_forward(model0, train.expansion_order, train.linearize_offset)
    compare = train.expansion_order >= 1 and train.compare_to_full
    alignment = config.alignment.monitor(ctx, dataset) if config.alignment is not None else None

    per_epoch = steps_per_epoch(n_train, train.batch_size, train.drop_last)
    total_steps = train.epochs * per_epoch
    optimizer = make_optimizer(train, per_epoch, total_steps)
    schedule = make_schedule(train, per_epoch, total_steps)
    train_step = training.make_train_step(train.loss, optimizer, forward)

    state = training.init_train_state(model0, optimizer)
    checkpoint = ctx.load_checkpoint()
    if checkpoint is not None:
        state = training.state_from_bytes(checkpoint, state)

    augment = getattr(config.data, "augment", "none")
    x_train = jax.device_put(dataset.x_train) if augment == "none" else None
    y_train = jax.device_put(dataset.y_train)
    x_train_eval = dataset.x_train[: train.eval_train_samples]
    y_train_eval = dataset.y_train[: train.eval_train_samples]

    def training_batch(s: int):
        indices = batch_indices(config.seed, s, n_train, train.batch_size, train.drop_last)
        if x_train is not None:
            return training.take_rows(x_train, y_train, indices)
        return augment_batch(dataset.x_train[indices], augment, config.seed, s), y_train[indices]

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    def evaluation_metrics(state, t: int) -> dict[str, float]:
        test_logits = training.predict(state.model, dataset.x_test, train.batch_size, forward).astype(np.float32)
        ctx.save_artifact(
            logits_artifact_name(t),
            npy(test_logits),
            kind="npy",
            metadata={"shape": list(test_logits.shape), "dtype": "float32", "step": t},
        )
        on_test = training.logits_metrics(test_logits, dataset.y_test, train.loss)
        on_train = training.evaluate(state.model, x_train_eval, y_train_eval, train.loss, train.batch_size, forward)
        metrics = {
            **{f"train_{name}": value for name, value in on_train.items()},
            **{f"test_{name}": value for name, value in on_test.items()},
            "lr": float(schedule(max(t - 1, 0))),
            "epoch": t / per_epoch,
        }
        if compare:
            reference = np.load(io.BytesIO(ctx.upstream_artifact("full", logits_artifact_name(t))))
            metrics.update(training.function_distance(test_logits, reference))
        if t > 0:
            metrics.update(training.running_means(state))
        metrics.update(training.distance_to_init(state.model, model0))
        if alignment is not None:
            metrics.update(alignment.at_evaluation(state.model, forward, t))
        return metrics

    start = int(state.step)
    stopped = None
    if checkpoint is None:
        initial = evaluation_metrics(state, 0)
        running = RUNNING_METRICS if np.issubdtype(dataset.y_train.dtype, np.integer) else RUNNING_METRICS[:2]
        _stop_reason(train.stop_when, {**initial, **dict.fromkeys(running, 0.0)}, 0)  # checks the name
        ctx.log_metrics(0, initial)
    ctx.progress(start, total_steps)
    for s in range(start, total_steps):
        t = s + 1
        state, loss = train_step(state, *training_batch(s))
        batch_loss = float(loss)
        if not np.isfinite(batch_loss):
            ctx.log_metrics(t, {"batch_loss": batch_loss, "epoch": t / per_epoch})
            raise RunDiverged(t, f"the batch loss became {batch_loss} at step {t}")
        if t % train.eval_every_steps == 0 or t == total_steps:
            metrics = evaluation_metrics(state, t)
            stopped = _stop_reason(train.stop_when, metrics, t)
            if stopped:
                metrics["stopped_at_step"] = float(t)
            ctx.log_metrics(t, metrics)
            state = training.reset_running_sums(state)
            if stopped:
                ctx.progress(t, t)
                break
        ctx.progress(t, total_steps)
        stopping = t < total_steps and ctx.should_stop()
        if t < total_steps and (t % train.checkpoint_every_steps == 0 or stopping):
            ctx.save_checkpoint(t, training.state_to_bytes(state))
        if stopping:
            raise RunInterrupted(f"stopped after step {t} of {total_steps}")

    if alignment is not None:
        alignment.at_end(state.model, forward)
    ctx.save_artifact(
        "params",
        training.model_to_bytes(state.model),
        kind="equinox",
        metadata={**training.parameter_summary(state.model), **({"stopped": stopped} if stopped else {})},
    )
    test_logits = training.predict(state.model, dataset.x_test, train.batch_size, forward).astype(np.float32)
    ctx.save_artifact(
        "test_logits",
        npy(test_logits),
        kind="npy",
        metadata={"shape": list(test_logits.shape), "dtype": str(test_logits.dtype)},
    )


# Logged at evaluation steps after step 0 (training.running_means); running_accuracy on class labels only.
RUNNING_METRICS = ("batch_loss", "grad_norm", "running_accuracy")


def _stop_reason(stop_when, metrics: dict[str, float], t: int) -> str | None:
    """Why training stops at evaluation step t (`train.stop_when`), or None. Step 0 only checks that
    the metric is one the run logs."""
    if stop_when is None:
        return None
    if stop_when.metric not in metrics:
        names = ", ".join(sorted(name for name in metrics if "/" not in name))
        raise ValueError(f"train.stop_when.metric {stop_when.metric!r} is not a metric of this run; "
                         f"its evaluation metrics: {names}")
    reason = stop_when.reason(metrics[stop_when.metric]) if t > 0 else None
    return f"{reason} at step {t}" if reason else None


def _expansion_point(config: TrainRunConfig, ctx: RunContext, like, out_dim: int, num_classes: int):
    """The final parameters of the upstream run `expansion_point`, in a model shaped like `like`."""
    import io

    import equinox as eqx

    from ntklab.engine.losses import output_dim

    upstream = config.expansion_point
    if output_dim(upstream.train.loss, num_classes) != out_dim:
        raise ValueError(
            f"the expansion point was trained with loss {upstream.train.loss}, whose output size differs "
            f"from this run's ({config.train.loss}, {out_dim} outputs)"
        )
    payload = ctx.upstream_artifact("expansion_point", "params")
    try:
        trained = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as error:  # equinox reports shape mismatches with assorted exception types
        raise ValueError(
            f"the parameters of the expansion point do not fit this run's model (trained on "
            f"{upstream.data.dataset}, used on {config.data.dataset}): {error}"
        ) from error
    if not config.reset_frozen:
        return trained
    from ntklab.engine.models import partition_parameters

    return eqx.combine(partition_parameters(trained)[0], partition_parameters(like)[1])
