"""Kernel configs -> block functions. One builder per kernel `kind`, in `KERNEL_BUILDERS`.

A block function (`BlockKernel`) evaluates a kernel between two batches of inputs:
`features(x)` computes what a block needs from one batch (for the empirical NTK: Jacobians or
layer inputs and cotangents; for a closed-form kernel it can be the inputs themselves), and
`block(f1, f2)` returns the (n1·r, n2·r) block, r = `outputs` rows per example (sample-major).
The blocked kernel task caches features of a batch for every block that batch takes part in.

To add a kind: define its config in `ntklab/tasks/kernel_config.py` (add it to `KernelConfig`), write
`build(config, setup) -> BlockKernel`, and register it in `KERNEL_BUILDERS` under the kind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class BlockKernel(Protocol):
    outputs: int  # rows per example in a block (m for full output blocks, 1 for scalar kernels)
    batch_size: int  # the largest batch `features` accepts

    def features(self, x: np.ndarray) -> Any:
        """What blocks need from the batch x (at most `batch_size` examples)."""

    def block(self, f1: Any, f2: Any) -> np.ndarray:
        """The (n1·outputs, n2·outputs) kernel block between two featurized batches."""

    def feature_bytes(self) -> int:
        """Memory held by the features of one batch (0 if they are the inputs)."""


@dataclass(frozen=True)
class KernelSetup:
    """What a builder gets besides its config: shapes of the data and where parameters come from.

    `out_dim` is the number of outputs of the network (logits); `params` is the serialized model
    (`ntklab.engine.training.model_to_bytes`) a network kernel is taken at, or None for the
    initialization drawn from `seed`."""

    input_shape: tuple[int, ...]
    out_dim: int
    seed: int
    batch_size: int = 64
    params: bytes | None = None
    memory_bytes: int = 2 << 30


def build_network(model_config: Any, setup: KernelSetup):
    """The network of a model config at initialization (from `setup.seed`), or with the parameters
    in `setup.params`."""
    import equinox as eqx
    import jax

    from ntklab.engine.models import build_model

    model = build_model(model_config, setup.input_shape, setup.out_dim, jax.random.PRNGKey(setup.seed))
    if setup.params is not None:
        model = eqx.tree_deserialise_leaves(io.BytesIO(setup.params), model)
    return model


def _build_empirical(config: Any, setup: KernelSetup) -> BlockKernel:
    import jax
    import jax.numpy as jnp

    from ntklab.engine.entk import EmpiricalNTK, parameter_count, trainable_partition

    model = build_network(config.network(), setup)
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("a float64 kernel needs jax_enable_x64 (wrap the computation in jax.enable_x64(True))")
    dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
    scale = 1.0
    if config.scaling == "1/sqrt(P)":
        scale = 1.0 / math.sqrt(parameter_count(trainable_partition(model)[0]))
    return EmpiricalNTK(model, setup.input_shape, config.implementation, trace=config.trace_outputs,
                        dtype=dtype, scale=scale, batch_size=setup.batch_size, memory_bytes=setup.memory_bytes)


def _build_analytic(config: Any, setup: KernelSetup) -> BlockKernel:
    from ntklab.engine.analytic import AnalyticBlocks, plan_from_config

    plan = plan_from_config(config.model, setup.input_shape)
    return AnalyticBlocks(plan, config.which, config.dtype, setup.batch_size, config.tile)


def _build_closed_form(config: Any, setup: KernelSetup) -> BlockKernel:
    from ntklab.engine.closed_form import ClosedFormBlocks

    return ClosedFormBlocks(config.which, config.degree, config.c, setup.batch_size)


def _build_random_features(config: Any, setup: KernelSetup) -> BlockKernel:
    from ntklab.engine.random_features import RandomFeaturesBlocks

    return RandomFeaturesBlocks(config, setup.batch_size)


KERNEL_BUILDERS: dict[str, Callable[[Any, KernelSetup], BlockKernel]] = {
    "empirical": _build_empirical,
    "analytic": _build_analytic,
    "closed_form": _build_closed_form,
    "random_features": _build_random_features,
}


def build_kernel(config: Any, setup: KernelSetup) -> BlockKernel:
    """The block function of a kernel config (dispatch on `config.kind`)."""
    try:
        builder = KERNEL_BUILDERS[config.kind]
    except KeyError:
        raise ValueError(f"no builder for kernel kind {config.kind!r}") from None
    return builder(config, setup)


def kernel_block(kernel: BlockKernel, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """The kernel between two arrays of any length (x2=None: x1 with itself), batch by batch."""
    same = x2 is None
    x2 = x1 if same else x2
    b = kernel.batch_size
    cols = [kernel.features(x2[s : s + b]) for s in range(0, len(x2), b)]
    rows = []
    for s in range(0, len(x1), b):
        f1 = cols[s // b] if same else kernel.features(x1[s : s + b])
        rows.append(np.concatenate([np.asarray(kernel.block(f1, f2)) for f2 in cols], axis=1))
    return np.concatenate(rows, axis=0)
