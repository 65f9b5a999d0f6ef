"""The training state, one optimizer step, evaluation, distance to initialization and serialization.

Everything a run carries from one step to the next lives in `TrainState`, so a run restored from
a serialized state continues exactly as if it had never stopped.
"""

import io
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntklab.engine.losses import PER_EXAMPLE_LOSSES, accuracy, mean_loss
from ntklab.engine.models import named_parameters


class TrainState(eqx.Module):
    """The model and optimizer state, the number of steps taken, and sums over the steps since the
    last evaluation (batch loss, gradient norm, and how many steps they cover)."""

    model: eqx.Module
    opt_state: optax.OptState
    step: jax.Array
    batch_loss_sum: jax.Array
    grad_norm_sum: jax.Array
    summed_steps: jax.Array


def _zero_sums() -> tuple[jax.Array, jax.Array, jax.Array]:
    return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)


def init_train_state(model: eqx.Module, optimizer: optax.GradientTransformation) -> TrainState:
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    return TrainState(model, opt_state, jnp.zeros((), jnp.int32), *_zero_sums())


def reset_running_sums(state: TrainState) -> TrainState:
    loss_sum, grad_norm_sum, summed_steps = _zero_sums()
    return eqx.tree_at(
        lambda s: (s.batch_loss_sum, s.grad_norm_sum, s.summed_steps), state, (loss_sum, grad_norm_sum, summed_steps)
    )


def running_means(state: TrainState) -> dict[str, float]:
    """Mean batch loss and pre-clipping gradient norm over the steps since the last reset."""
    count = int(state.summed_steps)
    return {"batch_loss": float(state.batch_loss_sum) / count, "grad_norm": float(state.grad_norm_sum) / count}


def make_train_step(
    loss_name: str, optimizer: optax.GradientTransformation
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """A jitted step: (state, x_batch, y_batch) -> (next state, batch loss before the update)."""

    def batch_loss(model: eqx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
        return mean_loss(loss_name, model(x), y)

    @eqx.filter_jit
    def train_step(state: TrainState, x: jax.Array, y: jax.Array) -> tuple[TrainState, jax.Array]:
        loss, grads = eqx.filter_value_and_grad(batch_loss)(state.model, x, y)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, eqx.filter(state.model, eqx.is_array))
        next_state = TrainState(
            model=eqx.apply_updates(state.model, updates),
            opt_state=opt_state,
            step=state.step + 1,
            batch_loss_sum=state.batch_loss_sum + loss,
            grad_norm_sum=state.grad_norm_sum + grad_norm,
            summed_steps=state.summed_steps + 1,
        )
        return next_state, loss

    return train_step


@eqx.filter_jit
def _logits(model: eqx.Module, x: jax.Array) -> jax.Array:
    return model(x)


def predict(model: eqx.Module, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of all of `x`, computed in batches; the last batch is zero-padded to avoid a recompile."""
    chunks = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        padding = batch_size - len(batch)
        if padding:
            batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
        chunks.append(np.asarray(_logits(model, batch))[: batch_size - padding])
    return np.concatenate(chunks)


def evaluate(model: eqx.Module, x: np.ndarray, y: np.ndarray, loss_name: str, batch_size: int) -> dict[str, float]:
    """Mean loss and accuracy over all of (x, y)."""
    logits = jnp.asarray(predict(model, x, batch_size))
    labels = jnp.asarray(y)
    losses = PER_EXAMPLE_LOSSES[loss_name](logits, labels)
    return {"loss": float(jnp.mean(losses)), "accuracy": float(accuracy(logits, labels))}


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
