"""Ridge regression in parameter space by conjugate gradients, for models linear in their parameters.

For a model f(θ, x) that is affine in θ around θ0 (Ghorbani et al.'s RF and NT models, or the
order-1 expansion f(θ0, x) + J(x)(θ - θ0) of any network), with J the Jacobian at θ0 over the n
training examples (n·m rows), the ridge problem

    minimize over Δ = θ - θ0:   L(Δ) = (1/n) ‖y - f(θ0) - J Δ‖² + λ ‖Δ + c‖²

(c = 0 penalizes the step Δ, c = θ0 penalizes θ itself) has the normal equations

    (JᵀJ/n + λ I) Δ = Jᵀ (y - f(θ0)) / n - λ c,

solved by CG with matrix-free products: J v is a JVP and Jᵀ u a VJP of the network at θ0, over
the data in batches, so neither J nor JᵀJ is ever formed. The objective of an iterate follows from
the CG residual for free (L(Δ) = L(0) - Δᵀ(r + b), r = b - AΔ); the true training objective and
metrics are evaluated every `eval_every` iterations, and the best evaluated iterate is returned
(as Ghorbani et al.'s optimizer does with scipy's CG).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


@dataclass
class LinearModel:
    """Products with the Jacobian J of `apply(params, x)` at `params0`, over a dataset in batches.

    `apply(params, x)` maps a batch to (batch, m) outputs. Padding rows of the last batch are
    masked out of every sum."""

    apply: Callable[[Any, jax.Array], jax.Array]
    params0: Any
    x: np.ndarray
    batch_size: int = 1000
    dtype: Any = jnp.float32
    flat0: jax.Array = field(init=False)
    unravel: Callable[[jax.Array], Any] = field(init=False)

    def __post_init__(self) -> None:
        self.flat0, self.unravel = ravel_pytree(self.params0)
        self.n = len(self.x)
        batches = []
        for start in range(0, self.n, self.batch_size):
            chunk = np.asarray(self.x[start : start + self.batch_size])
            mask = np.ones(len(chunk), bool)
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                mask = np.concatenate([mask, np.zeros(pad, bool)])
            batches.append((jnp.asarray(chunk, self.dtype), jnp.asarray(mask)))
        self.batches = batches
        unravel, apply = self.unravel, self.apply

        @jax.jit
        def offset(flat, x):
            return apply(unravel(flat), x)

        @jax.jit
        def jvp(flat, v, x):
            return jax.jvp(lambda p: apply(unravel(p), x), (flat,), (v,))[1]

        @jax.jit
        def normal(flat, v, x, mask):  # Jᵀ (J v) on one batch
            u = jvp(flat, v, x) * mask[:, None]
            return jax.vjp(lambda p: apply(unravel(p), x), flat)[1](u)[0]

        @jax.jit
        def transpose(flat, u, x, mask):
            return jax.vjp(lambda p: apply(unravel(p), x), flat)[1](u * mask[:, None])[0]

        self._offset, self._jvp, self._normal, self._transpose = offset, jvp, normal, transpose

    def outputs0(self, x_all: np.ndarray | None = None) -> jax.Array:
        """f(θ0) on every example (n, m), or on other inputs."""
        if x_all is None:
            return jnp.concatenate([self._offset(self.flat0, x) for x, _ in self.batches])[: self.n]
        return self._over(x_all, lambda x: self._offset(self.flat0, x))

    def _over(self, x_all: np.ndarray, fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
        outs = []
        for start in range(0, len(x_all), self.batch_size):
            chunk = np.asarray(x_all[start : start + self.batch_size])
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            outs.append(fn(jnp.asarray(chunk, self.dtype))[: self.batch_size - pad])
        return jnp.concatenate(outs)

    def matvec(self, v: jax.Array) -> jax.Array:
        """Jᵀ J v."""
        total = jnp.zeros_like(self.flat0)
        for x, mask in self.batches:
            total = total + self._normal(self.flat0, v, x, mask)
        return total

    def rmatvec(self, u: jax.Array) -> jax.Array:
        """Jᵀ u for u of shape (n, m)."""
        total = jnp.zeros_like(self.flat0)
        for index, (x, mask) in enumerate(self.batches):
            chunk = u[index * self.batch_size : (index + 1) * self.batch_size]
            pad = self.batch_size - chunk.shape[0]
            if pad:
                chunk = jnp.concatenate([chunk, jnp.zeros((pad, chunk.shape[1]), chunk.dtype)])
            total = total + self._transpose(self.flat0, chunk, x, mask)
        return total

    def jvp_all(self, v: jax.Array, x_all: np.ndarray | None = None) -> jax.Array:
        """J v on the model's data (n, m), or on other inputs."""
        if x_all is None:
            return jnp.concatenate([self._jvp(self.flat0, v, x) for x, _ in self.batches])[: self.n]
        return self._over(x_all, lambda x: self._jvp(self.flat0, v, x))


@dataclass
class CGState:
    iteration: int
    delta: jax.Array
    residual: jax.Array
    direction: jax.Array
    residual_sq: float
    best_delta: jax.Array
    best_objective: float
    best_iteration: int


@dataclass
class CGResult:
    delta: jax.Array  # the best evaluated iterate
    iterations: int
    converged: bool
    best_iteration: int
    best_objective: float


def ridge_cg(
    model: LinearModel,
    targets: jax.Array,
    ridge: float,
    *,
    penalty_center: jax.Array | None = None,
    max_iters: int = 750,
    tol: float = 1e-4,
    atol: float = 0.0,
    eval_every: int = 30,
    state: CGState | None = None,
    on_iteration: Callable[[int, dict], None] | None = None,
    on_evaluation: Callable[[int, jax.Array], dict] | None = None,
    on_checkpoint: Callable[[CGState], None] | None = None,
    checkpoint_every: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> CGResult | CGState:
    """Solve (JᵀJ/n + λI) Δ = Jᵀ(y - f(θ0))/n - λ c by CG from Δ = 0 (or from `state`).

    `on_iteration(k, {"residual_norm", "objective"})` is called after every iteration k;
    `on_evaluation(k, Δ)` every `eval_every` iterations and at the end, returning metrics that
    must include `objective` (the true training objective), by which the best iterate is kept.
    `on_checkpoint(state)` is called every `checkpoint_every` iterations and when `should_stop()`
    interrupts the run; then the CGState to resume from is returned instead of a CGResult."""
    n = model.n
    y = jnp.asarray(targets, model.dtype)
    r0 = y - model.outputs0()
    center = jnp.zeros_like(model.flat0) if penalty_center is None else jnp.asarray(penalty_center, model.dtype)
    rhs = model.rmatvec(r0) / n - ridge * center
    base = float(jnp.sum(r0**2)) / n + ridge * float(jnp.sum(center**2))  # L(0)

    def apply_a(v):
        return model.matvec(v) / n + ridge * v

    b_norm = float(jnp.linalg.norm(rhs))
    threshold = max(tol * b_norm, atol)
    if state is None:
        zero = jnp.zeros_like(model.flat0)
        state = CGState(0, zero, rhs, rhs, float(jnp.sum(rhs * rhs)), zero, base, 0)
    converged = state.residual_sq**0.5 <= threshold

    def evaluate(k: int, delta: jax.Array) -> None:
        if on_evaluation is None:
            objective = base - float(jnp.dot(delta, state.residual + rhs))
        else:
            objective = float(on_evaluation(k, delta)["objective"])
        if objective < state.best_objective:
            state.best_delta, state.best_objective, state.best_iteration = delta, objective, k

    while state.iteration < max_iters and not converged:
        if should_stop():
            if on_checkpoint is not None:
                on_checkpoint(state)
            return state
        ap = apply_a(state.direction)
        curvature = float(jnp.dot(state.direction, ap))
        if curvature <= 0:
            break
        step = state.residual_sq / curvature
        state.delta = state.delta + step * state.direction
        state.residual = state.residual - step * ap
        residual_sq = float(jnp.dot(state.residual, state.residual))
        state.direction = state.residual + (residual_sq / state.residual_sq) * state.direction
        state.residual_sq = residual_sq
        state.iteration += 1
        converged = residual_sq**0.5 <= threshold
        if on_iteration is not None:
            objective = base - float(jnp.dot(state.delta, state.residual + rhs))
            on_iteration(state.iteration, {"residual_norm": residual_sq**0.5 / max(b_norm, 1e-300),
                                           "objective": objective})
        if state.iteration % eval_every == 0 or converged or state.iteration == max_iters:
            evaluate(state.iteration, state.delta)
        if (on_checkpoint is not None and checkpoint_every and state.iteration % checkpoint_every == 0
                and state.iteration < max_iters and not converged):
            on_checkpoint(state)
    if state.best_iteration != state.iteration:
        evaluate(state.iteration, state.delta)
    return CGResult(state.best_delta, state.iteration, converged, state.best_iteration, state.best_objective)


def state_to_bytes(state: CGState) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, iteration=state.iteration, delta=np.asarray(state.delta), residual=np.asarray(state.residual),
             direction=np.asarray(state.direction), residual_sq=state.residual_sq,
             best_delta=np.asarray(state.best_delta), best_objective=state.best_objective,
             best_iteration=state.best_iteration)
    return buffer.getvalue()


def state_from_bytes(payload: bytes, dtype: Any) -> CGState:
    import io

    data = np.load(io.BytesIO(payload))
    return CGState(int(data["iteration"]), jnp.asarray(data["delta"], dtype), jnp.asarray(data["residual"], dtype),
                   jnp.asarray(data["direction"], dtype), float(data["residual_sq"]),
                   jnp.asarray(data["best_delta"], dtype), float(data["best_objective"]), int(data["best_iteration"]))


def network_apply(model: eqx.Module) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """(apply(params, x), params0) for a model: its trainable parameters and the forward pass."""
    from ntklab.engine.models import partition_parameters

    params, static = partition_parameters(model)
    return (lambda p, x: eqx.combine(p, static)(x)), params


def linearity_defect(apply: Callable, params0: Any, x: jax.Array, key: jax.Array) -> float:
    """‖f(θ0 + v) - f(θ0) - J v‖ / ‖J v‖ for a random direction v: 0 for a model affine in θ."""
    flat, unravel = ravel_pytree(params0)
    v = jax.random.normal(key, flat.shape, flat.dtype) * (1.0 + jnp.abs(flat))
    f0 = apply(params0, x)
    f1 = apply(unravel(flat + v), x)
    jv = jax.jvp(lambda p: apply(unravel(p), x), (flat,), (v,))[1]
    return float(jnp.linalg.norm(f1 - f0 - jv) / jnp.maximum(jnp.linalg.norm(jv), 1e-30))
