"""Products with the Jacobian J of a network's logits over a dataset, never forming J or the
empirical NTK K = J Jᵀ.

J is the (n·m) x P Jacobian of the logits f(θ, x_i) (m outputs per example, rows sample-major)
with respect to the trainable parameters θ (P of them). Through the model's VJP and JVP:

- `transpose_apply(V)` = Jᵀ V for V of shape (n·m, b): one reverse pass per data batch, vmapped
  over the b columns, summed into b parameter vectors (a pytree with a leading axis b);
- `apply(U)` = J U for b parameter vectors: one forward-mode pass per data batch, vmapped;
- `kernel_apply(V)` = K V = J (Jᵀ V): both, so K V costs about three forward passes per column
  over the data and memory b·P plus one data batch's activations, never n².

This makes the spectrum of a 60,000-point LeNet or ResNet-18 kernel possible on one machine
(`ntklab/engine/eigen.py`, `operator_eigenpairs`), and the alignment of a trained network's kernel
with given vectors (ntklab/engine/alignment.py). Data batches are padded to `batch_size` and
vectors to `vector_batch`, so each product compiles once.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _leading_zeros(tree: Any, b: int) -> Any:
    return jax.tree_util.tree_map(lambda leaf: jnp.zeros((b, *leaf.shape), leaf.dtype), tree)


# Compiled once per forward pass, model structure and shapes: the forward pass (an equinox module,
# e.g. ntklab.engine.taylor.Network or a TaylorExpansion) and the parameters are arguments, so an
# operator at new parameters (a later evaluation step) reuses the compiled products.


def _logits(forward, params, rest, xb):
    return forward(eqx.combine(params, rest), xb)


@eqx.filter_jit
def _vjp_batch(forward, params, rest, xb, cotangents):  # cotangents (b, B, m) -> b parameter vectors
    _, pullback = jax.vjp(lambda p: _logits(forward, p, rest, xb), params)
    return jax.vmap(lambda c: pullback(c)[0])(cotangents)


@eqx.filter_jit
def _jvp_batch(forward, params, rest, xb, tangents):  # b parameter vectors -> (b, B, m)
    return jax.vmap(lambda t: jax.jvp(lambda p: _logits(forward, p, rest, xb), (params,), (t,))[1])(tangents)


@eqx.filter_jit
def _gradient_norms(forward, params, rest, xb):  # Σ_o ‖∇_θ f_o(x)‖² for each x of the batch
    def one(x):
        jac = jax.jacrev(lambda p: _logits(forward, p, rest, x[None])[0])(params)
        return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(jac))

    return jax.vmap(one)(xb)


@eqx.filter_jit
def _accumulate(total, part):
    return jax.tree_util.tree_map(jnp.add, total, part)


class JacobianOperator:
    """The Jacobian of `forward(model, x)` with respect to the trainable parameters of `model`
    (`partition`: model -> (parameters, rest)), at `model`, over the inputs `x`. `forward` is an
    equinox module (a forward pass of ntklab/engine/taylor.py)."""

    def __init__(self, forward: eqx.Module, model: Any, x: np.ndarray,
                 partition: Callable[[Any], tuple[Any, Any]], batch_size: int = 256, vector_batch: int = 32):
        self.forward = forward
        self.params, self.rest = partition(model)
        self.x = np.asarray(x)
        self.n = len(self.x)
        self.batch_size = min(batch_size, max(self.n, 1))
        self.vector_batch = vector_batch
        leaves = jax.tree_util.tree_leaves(self.params)
        self.dtype = np.dtype(jnp.result_type(*leaves).name) if leaves else np.dtype(np.float32)
        self.parameters = int(sum(np.prod(leaf.shape) for leaf in leaves))
        probe = jax.eval_shape(lambda p, xb: _logits(forward, p, self.rest, xb), self.params,
                               jax.ShapeDtypeStruct((1, *self.x.shape[1:]), self.dtype))
        self.outputs = int(probe.shape[-1])

    def _vjp(self, xb, cotangents):
        return _vjp_batch(self.forward, self.params, self.rest, xb, cotangents)

    def _jvp(self, xb, tangents):
        return _jvp_batch(self.forward, self.params, self.rest, xb, tangents)

    @property
    def rows(self) -> int:
        return self.n * self.outputs

    def _batches(self):
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            xb = np.zeros((self.batch_size, *self.x.shape[1:]), self.dtype)
            xb[: stop - start] = self.x[start:stop]
            yield start, stop, jnp.asarray(xb)

    def _vector_chunks(self, b: int):
        for start in range(0, b, self.vector_batch):
            yield start, min(start + self.vector_batch, b)

    def transpose_apply(self, vectors: np.ndarray) -> Any:
        """Jᵀ V for V (n·m, b): b parameter vectors (a pytree of the parameters with leading axis b)."""
        vectors = np.asarray(vectors, self.dtype).reshape(self.n, self.outputs, -1)
        b = vectors.shape[-1]
        parts = []
        for c0, c1 in self._vector_chunks(b):
            chunk = np.zeros((self.vector_batch, self.n, self.outputs), self.dtype)
            chunk[: c1 - c0] = np.moveaxis(vectors[:, :, c0:c1], -1, 0)
            total = _leading_zeros(self.params, self.vector_batch)
            for start, stop, xb in self._batches():
                cotangents = np.zeros((self.vector_batch, self.batch_size, self.outputs), self.dtype)
                cotangents[:, : stop - start] = chunk[:, start:stop]
                total = _accumulate(total, self._vjp(xb, jnp.asarray(cotangents)))
            parts.append(jax.tree_util.tree_map(lambda leaf, k=c1 - c0: leaf[:k], total))
        return jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves), *parts)

    def apply(self, tangents: Any) -> np.ndarray:
        """J U for b parameter vectors U (a pytree with leading axis b): an (n·m, b) array."""
        b = jax.tree_util.tree_leaves(tangents)[0].shape[0]
        out = np.empty((self.n, self.outputs, b), self.dtype)
        for c0, c1 in self._vector_chunks(b):
            chunk = jax.tree_util.tree_map(
                lambda leaf: jnp.zeros((self.vector_batch, *leaf.shape[1:]), leaf.dtype).at[: c1 - c0].set(leaf[c0:c1]),
                tangents,
            )
            for start, stop, xb in self._batches():
                values = np.asarray(self._jvp(xb, chunk))  # (vector_batch, B, m)
                out[start:stop, :, c0:c1] = np.moveaxis(values[: c1 - c0, : stop - start], 0, -1)
        return out.reshape(self.rows, b)

    def kernel_apply(self, vectors: np.ndarray) -> np.ndarray:
        """K V = J (Jᵀ V) for V (n·m, b)."""
        return self.apply(self.transpose_apply(vectors))

    def kernel_trace(self) -> float:
        """tr K = Σ_i Σ_o ‖∇_θ f_o(x_i)‖²: per-example gradients, `vector_batch` examples at a time."""
        total = 0.0
        for start in range(0, self.n, self.vector_batch):
            stop = min(start + self.vector_batch, self.n)
            xb = np.zeros((self.vector_batch, *self.x.shape[1:]), self.dtype)
            xb[: stop - start] = self.x[start:stop]
            norms = _gradient_norms(self.forward, self.params, self.rest, jnp.asarray(xb))
            total += float(np.sum(np.asarray(norms)[: stop - start]))
        return total


def squared_norms(vectors: Any) -> jax.Array:
    """‖u_j‖² for each of the b parameter vectors of a pytree with leading axis b."""
    leaves = jax.tree_util.tree_leaves(vectors)
    return sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in leaves)
