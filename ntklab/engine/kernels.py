"""Kernel configs -> block functions (engine/blocks.py). One builder per kernel `kind`, in `KERNEL_BUILDERS`.

To add a kind: define its config in `ntklab/tasks/kernel_config.py` (add it to `KernelConfig`), write
`build(config, setup) -> BlockKernel`, and register it in `KERNEL_BUILDERS` under the kind.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ntklab.engine.blocks import BlockKernel


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
    from ntklab.engine.entk import EmpiricalNTK
    from ntklab.engine.models import parameter_count

    model = build_network(config.network(), setup)
    scale = 1.0
    if config.scaling == "1/sqrt(P)":
        scale = 1.0 / math.sqrt(parameter_count(model))
    return EmpiricalNTK(model, setup.input_shape, config.implementation, trace=config.trace_outputs,
                        dtype=config.dtype, scale=scale, batch_size=setup.batch_size, memory_bytes=setup.memory_bytes)


def _build_analytic(config: Any, setup: KernelSetup) -> BlockKernel:
    from ntklab.engine.analytic import AnalyticBlocks
    from ntklab.engine.presets import plan_of

    return AnalyticBlocks(plan_of(config.model), config.which, config.dtype, setup.batch_size, config.tile)


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
