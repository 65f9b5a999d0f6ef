"""Gram matrices of very wide random-features models, accumulated over chunks of features.

Features phi_i(x) = act(<w_i, x>) with w_i ~ N(0, I / d) (d: the flattened input size), so that
<w_i, x> has variance |x|^2 / d, the input covariance convention of engine/analytic.py. The Gram

    K(x, z) = (1 / N) sum_{i < N} phi_i(x) phi_i(z)  [+ 1 with the intercept]

tends to the analytic NNGP of one hidden layer (`limit_kernel`) as N grows, with an error of order
N^(-1/2). With `normalize=False` the sum is not divided by N (Ghorbani et al.'s RF_Kernel_Gen,
which starts from the all-ones intercept matrix and adds Z Z^T chunk by chunk).

Reproducibility: feature i belongs to block i // BLOCK and is drawn from the key
fold_in(PRNGKey(seed), block), so the features do not depend on N or on the chunk size, and the
first N features of a wider model are those of the narrower one. Blocks are added to the Gram in
order, one at a time, whatever the chunking: the chunk size changes the work per compiled call
(and how often `on_chunk` can checkpoint), never the result. The Gram accumulates in float64.
"""

import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erf

BLOCK = 1024
FeatureActivation = Literal["relu", "erf"]


def _features(x, w, activation: str):
    pre = x @ w
    return jax.nn.relu(pre) if activation == "relu" else erf(pre)


@functools.partial(jax.jit, static_argnames=("blocks", "activation", "same", "dtype"))
def _chunk(gram, x1, x2, key, first_block, n_features, blocks: int, activation: str, same: bool, dtype: str):
    """Add blocks first_block .. first_block + blocks - 1 to the Gram (features >= n_features masked)."""
    d = x1.shape[1]

    def add(i, g):
        block = first_block + i
        w = jax.random.normal(jax.random.fold_in(key, block), (d, BLOCK), jnp.float32).astype(dtype) / np.sqrt(d)
        live = (block * BLOCK + jnp.arange(BLOCK)) < n_features
        f1 = jnp.where(live, _features(x1, w, activation), 0.0)
        f2 = f1 if same else jnp.where(live, _features(x2, w, activation), 0.0)
        return g + (f1 @ f2.T).astype(jnp.float64)

    return lax.fori_loop(0, blocks, add, gram)


def random_features_gram(
    x1: np.ndarray,
    x2: np.ndarray | None = None,
    *,
    features: int,
    activation: FeatureActivation = "relu",
    intercept: bool = False,
    normalize: bool = True,
    seed: int = 0,
    chunk: int = 16 * BLOCK,
    dtype: Literal["float32", "float64"] = "float32",
    state: tuple[int, np.ndarray] | None = None,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray | None:
    """The (n1, n2) float64 Gram of `features` random features between the rows of x1 and x2.

    `chunk` features (rounded up to whole blocks of BLOCK) are drawn and added per compiled call.
    To resume, pass `state` = (blocks done, unnormalized partial sum) as given to `on_chunk`
    after each chunk. `should_stop` is polled between chunks; when it says True, returns None.
    """
    if activation not in ("relu", "erf"):
        raise ValueError(f"random features support relu and erf, got {activation!r}")
    if features < 1:
        raise ValueError("features must be positive")
    same = x2 is None
    x1 = np.asarray(x1).reshape(len(x1), -1)
    x2 = x1 if same else np.asarray(x2).reshape(len(x2), -1)
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 have different input sizes: {x1.shape[1]} and {x2.shape[1]}")
    total_blocks = -(-features // BLOCK)
    per_call = max(1, -(-chunk // BLOCK))
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(seed)
        xa = jnp.asarray(x1, dtype)
        xb = xa if same else jnp.asarray(x2, dtype)
        done, gram = (0, jnp.zeros((len(x1), len(x2)), jnp.float64)) if state is None else state
        gram = jnp.asarray(gram, jnp.float64)
        while done < total_blocks:
            if should_stop is not None and should_stop():
                return None
            blocks = min(per_call, total_blocks - done)
            gram = _chunk(gram, xa, xb, key, done, features, blocks, activation, same, dtype)
            done += blocks
            if on_chunk is not None:
                on_chunk(done, np.asarray(gram))
        out = np.asarray(gram)
    if normalize:
        out = out / features
    if intercept:
        out = out + 1.0
    return out


def limit_kernel(
    x1: np.ndarray, x2: np.ndarray | None = None, activation: FeatureActivation = "relu", intercept: bool = False
) -> np.ndarray:
    """The N -> infinity limit of the normalized Gram: E_w[act(<w, x>) act(<w, z>)] (+ 1), float64."""
    from ntklab.engine.analytic import analytic_kernel
    from ntklab.engine.plan import Activation, Dense, Flatten, Plan

    x1 = np.asarray(x1).reshape(len(x1), -1)
    x2 = None if x2 is None else np.asarray(x2).reshape(len(x2), -1)
    plan = Plan((Flatten(), Dense(1), Activation(activation)), 1)
    k = analytic_kernel(plan, x1, x2, which="nngp", dtype="float64")
    return k + 1.0 if intercept else k


class RandomFeaturesBlocks:
    """A random-features Gram as a block function for the `kernel` task (engine/kernels.py). The
    features are a pure function of (seed, feature index), so blocks computed apart agree."""

    outputs = 1

    def __init__(self, config, batch_size: int):
        self.config, self.batch_size = config, batch_size

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def block(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        c = self.config
        same = f1 is f2 or (f1.shape == f2.shape and np.array_equal(f1, f2))
        return random_features_gram(
            f1, None if same else f2, features=c.features, activation=c.activation, intercept=c.intercept,
            normalize=c.normalize, seed=c.seed, chunk=c.chunk, dtype=c.dtype,
        )  # fmt: skip

    def feature_bytes(self) -> int:
        return 0
