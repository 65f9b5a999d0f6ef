"""The training state, one optimizer step, evaluation, distance to initialization and serialization.

Everything a run carries from one step to the next lives in `TrainState`, so a run restored from
a serialized state continues exactly as if it had never stopped.

Training and evaluation take a forward pass (`ntklab.engine.taylor`): the network itself
(`Network()`, the default) or its Taylor expansion around a point. The optimizer updates the
model's trainable parameters only; frozen arrays change only through the forward pass in training
mode (BatchNorm running statistics, at expansion order 0).
"""

import io
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntklab.engine.layers import has_gradient_scales, scale_gradients
from ntklab.engine.losses import PER_EXAMPLE_LOSSES, accuracy, mean_loss, predictions, regression_metrics
from ntklab.engine.models import named_parameters, parameters, partition_parameters
from ntklab.engine.taylor import Network


class TrainState(eqx.Module):
    """The model and optimizer state, the number of steps taken, and sums over the steps since the
    last evaluation (batch loss, gradient norm, how many steps they cover, and on class labels the
    training examples classified correctly out of those seen)."""

    model: eqx.Module
    opt_state: optax.OptState
    step: jax.Array
    batch_loss_sum: jax.Array
    grad_norm_sum: jax.Array
    summed_steps: jax.Array
    correct_sum: jax.Array
    seen_sum: jax.Array


def _zero_sums() -> tuple[jax.Array, ...]:
    """Zeros for the running sums, in TrainState's order from `batch_loss_sum` on."""
    return (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def init_train_state(model: eqx.Module, optimizer: optax.GradientTransformation) -> TrainState:
    opt_state = optimizer.init(parameters(model))
    return TrainState(model, opt_state, jnp.zeros((), jnp.int32), *_zero_sums())


def reset_running_sums(state: TrainState) -> TrainState:
    return eqx.tree_at(
        lambda s: (s.batch_loss_sum, s.grad_norm_sum, s.summed_steps, s.correct_sum, s.seen_sum), state, _zero_sums()
    )


def running_means(state: TrainState) -> dict[str, float]:
    """Over the steps since the last reset: the mean batch loss, the mean pre-clipping gradient
    norm and, on class labels, `running_accuracy`, the accuracy of the training batches (with their
    augmentation, in training mode, before each update): ntkgen's stopping criterion."""
    count = int(state.summed_steps)
    means = {"batch_loss": float(state.batch_loss_sum) / count, "grad_norm": float(state.grad_norm_sum) / count}
    if int(state.seen_sum):
        means["running_accuracy"] = int(state.correct_sum) / int(state.seen_sum)
    return means


def make_train_step(
    loss_name: str, optimizer: optax.GradientTransformation, forward: eqx.Module | None = None
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """A jitted step: (state, x_batch, y_batch) -> (next state, batch loss before the update).

    `forward` (default: the network itself) maps (model, x) to logits; it is an argument of the
    jitted function, so the arrays it holds (an expansion point) are not baked into the program.
    Layers with gradient multipliers (mean-field) scale the gradient before the optimizer sees it;
    `grad_norm` is the norm of that gradient, before clipping.
    """
    forward = Network() if forward is None else forward

    def batch_loss(params, rest, forward, x: jax.Array, y: jax.Array):
        logits, updated = forward.train(eqx.combine(params, rest), x)
        return mean_loss(loss_name, logits, y), (updated, logits)

    @eqx.filter_jit
    def step(forward, state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        params, rest = partition_parameters(state.model)
        (loss, (updated, logits)), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, rest, forward, x, y)
        labelled = jnp.issubdtype(y.dtype, jnp.integer)  # class labels, not regression targets
        correct = jnp.sum(predictions(logits) == y, dtype=jnp.int32) if labelled else jnp.zeros((), jnp.int32)
        if has_gradient_scales(state.model):
            grads = scale_gradients(params, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        model = eqx.combine(eqx.apply_updates(params, updates), partition_parameters(updated)[1])
        next_state = TrainState(
            model=model,
            opt_state=opt_state,
            step=state.step + 1,
            batch_loss_sum=state.batch_loss_sum + loss,
            grad_norm_sum=state.grad_norm_sum + grad_norm,
            summed_steps=state.summed_steps + 1,
            correct_sum=state.correct_sum + correct,
            seen_sum=state.seen_sum + (len(y) if labelled else 0),
        )
        return next_state, loss

    def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        return step(forward, state, x, y)

    return train_step


@jax.jit
def take_rows(x: jax.Array, y: jax.Array, indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """The rows `indices` of device arrays, as one compiled gather: indexing them eagerly costs
    ~1 ms of dispatch a step on CPU, more than a whole step of a small network."""
    return x[indices], y[indices]


@eqx.filter_jit
def _logits(forward, model: eqx.Module, x: jax.Array) -> jax.Array:
    return forward(model, x)


def predict(model: eqx.Module, x: np.ndarray, batch_size: int, forward: eqx.Module | None = None) -> np.ndarray:
    """Logits of all of `x` (evaluation mode), computed in batches; the last batch is zero-padded to
    avoid a recompile."""
    forward = Network() if forward is None else forward
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        padding = batch_size - len(batch)
        if padding:
            batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
        chunks.append(np.asarray(_logits(forward, model, batch))[: batch_size - padding])
    return np.concatenate(chunks)


def logits_metrics(logits: np.ndarray, y: np.ndarray, loss_name: str) -> dict[str, float]:
    """Mean loss and accuracy of logits against labels; against regression targets (floats),
    mean loss, risk (`mse`) and `r2` instead of accuracy."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(y)
    losses = PER_EXAMPLE_LOSSES[loss_name](logits, labels)
    if jnp.issubdtype(labels.dtype, jnp.floating):
        return {"loss": float(jnp.mean(losses)), **{k: float(v) for k, v in regression_metrics(logits, labels).items()}}
    return {"loss": float(jnp.mean(losses)), "accuracy": float(accuracy(logits, labels))}


def evaluate(
    model: eqx.Module,
    x: np.ndarray,
    y: np.ndarray,
    loss_name: str,
    batch_size: int,
    forward: eqx.Module | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy (risk and R² on regression targets) over all of (x, y)."""
    return logits_metrics(predict(model, x, batch_size, forward), y, loss_name)


def function_distance(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How far `logits` are from `reference` logits of the same inputs: the relative Frobenius
    distance ‖f − f_ref‖ / ‖f_ref‖ (`fn_distance`), the root mean square of the entries of f − f_ref
    (`fn_rms_distance`) and the share of inputs with the same predicted class (`agreement`)."""
    if logits.shape != reference.shape:
        raise ValueError(f"logits of shape {list(logits.shape)} cannot be compared with {list(reference.shape)}")
    diff = np.asarray(logits, np.float64) - np.asarray(reference, np.float64)
    reference_norm = float(np.linalg.norm(np.asarray(reference, np.float64)))
    distance = float(np.linalg.norm(diff))
    same = np.asarray(predictions(jnp.asarray(logits))) == np.asarray(predictions(jnp.asarray(reference)))
    return {
        "fn_distance": distance / reference_norm if reference_norm > 0 else float("nan"),
        "fn_rms_distance": float(np.sqrt(np.mean(diff**2))),
        "agreement": float(np.mean(same)),
    }


def distance_to_init(model: eqx.Module, model0: eqx.Module) -> dict[str, float]:
    """‖θ − θ₀‖ and ‖θ − θ₀‖ / ‖θ₀‖ in total (`dist_init`, `dist_init_rel`) and per parameter
    (`dist_init/<path>`, `dist_init_rel/<path>`). The relative distance of a parameter initialized
    to zero is undefined and left out."""
    current = named_parameters(model)
    initial = named_parameters(model0)
    metrics: dict[str, float] = {}
    total_sq_distance = 0.0
    total_sq_norm = 0.0
    for name, theta in current.items():
        theta0 = np.asarray(initial[name], np.float64)
        sq_distance = float(np.sum((np.asarray(theta, np.float64) - theta0) ** 2))
        sq_norm = float(np.sum(theta0**2))
        total_sq_distance += sq_distance
        total_sq_norm += sq_norm
        metrics[f"dist_init/{name}"] = sq_distance**0.5
        if sq_norm > 0:
            metrics[f"dist_init_rel/{name}"] = (sq_distance / sq_norm) ** 0.5
    metrics["dist_init"] = total_sq_distance**0.5
    if total_sq_norm > 0:
        metrics["dist_init_rel"] = (total_sq_distance / total_sq_norm) ** 0.5
    return metrics


def _tree_to_bytes(tree) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    return buffer.getvalue()


def state_to_bytes(state: TrainState) -> bytes:
    return _tree_to_bytes(state)


def state_from_bytes(payload: bytes, like_state: TrainState) -> TrainState:
    """The state serialized in `payload`; `like_state` supplies the structure (same config)."""
    return eqx.tree_deserialise_leaves(io.BytesIO(payload), like_state)


def model_to_bytes(model: eqx.Module) -> bytes:
    return _tree_to_bytes(model)


def parameter_summary(model: eqx.Module) -> dict:
    """Parameter count and per-parameter shape and dtype, for artifact metadata."""
    parameters = named_parameters(model)
    return {
        "parameter_count": sum(int(p.size) for p in parameters.values()),
        "leaves": {name: {"shape": list(p.shape), "dtype": str(p.dtype)} for name, p in parameters.items()},
    }
