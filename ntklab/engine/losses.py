"""Losses by name on (logits (n, out_dim), integer labels (n,)), and accuracy; the squared loss
and its risk on regression targets.

A single output (out_dim 1) encodes a binary problem: its target is the label itself, 0 or 1,
and a positive logit predicts class 1. Regression data (num_classes 0, float targets (n,)) has a
single output too, whose target is the value itself: trained with `mse`, scored by the test risk
(mean squared error) and R², not by accuracy.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax


def output_dim(loss: str, num_classes: int) -> int:
    """One output for regression targets (num_classes 0) and for binary cross-entropy on two
    classes, one per class otherwise."""
    return 1 if num_classes == 0 or (loss == "bce" and num_classes == 2) else num_classes


def targets(labels: jax.Array, out_dim: int) -> jax.Array:
    """Float targets per output: the 0/1 label (or the regression target) for a single output,
    one-hot vectors otherwise."""
    if out_dim == 1:
        return labels[:, None].astype(jnp.float32)
    return jax.nn.one_hot(labels, out_dim, dtype=jnp.float32)


def mse_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum((logits - targets(labels, logits.shape[-1])) ** 2, axis=-1)


def cross_entropy_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def bce_per_example(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Sigmoid binary cross-entropy summed over the outputs."""
    return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets(labels, logits.shape[-1])), axis=-1)


PER_EXAMPLE_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "mse": mse_per_example,
    "cross_entropy": cross_entropy_per_example,
    "bce": bce_per_example,
}


def mean_loss(name: str, logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(PER_EXAMPLE_LOSSES[name](logits, labels))


def predictions(logits: jax.Array) -> jax.Array:
    if logits.shape[-1] == 1:
        return (logits[:, 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(predictions(logits) == labels)


def regression_metrics(outputs: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """The risk (mean squared error) of single outputs (n, 1) against targets (n,), and R² =
    1 - risk / variance of the targets (0 for predicting their mean, 1 for a perfect fit)."""
    errors = outputs[:, 0] - y
    risk = jnp.mean(errors**2)
    return {"mse": risk, "r2": 1.0 - risk / jnp.var(y)}
