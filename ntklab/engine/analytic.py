"""Infinite-width NNGP and NTK of a plan (engine/plan.py): the public entry points.

The kernel of a model config is that of its plan (engine/presets.py), the plan its Equinox model
is built from, so the kernel is the infinite-width limit of exactly that model (in its
parameterization: the standard parameterization's NTK grows with the hidden widths, so it is the
NTK of the finite model at the widths of the config, to leading order; the NNGP of every
parameterization is the same). The recursions are in engine/kernel_stages.py, the walk of the
plan in engine/kernel_walk.py, the activations' maps in engine/kernel_maps.py.

Kernels are computed on pairs of input batches, tile by tile (one compiled tile shape; for x2 =
None only the upper triangle of tiles, mirrored, so the kernel is exactly symmetric).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.config import ComputeDtype
from ntklab.engine.kernel_walk import cross, per_pair_bytes, self_variances, validate
from ntklab.engine.plan import Plan
from ntklab.engine.presets import plan_of

Which = Literal["nngp", "ntk"]


def default_tile(plan: Plan, x_shape: tuple[int, ...], dtype: ComputeDtype) -> int:
    """The tile side: for pixel-pair tensors, about 2 MB per tensor, so that a layer's passes stay in
    cache (measured on the CNTK: tiles 4x larger run 2-10x slower per entry); for vectors, large
    tiles (one matrix product per layer)."""
    per_pair = per_pair_bytes(plan, tuple(x_shape), np.dtype(dtype).itemsize)
    if per_pair is None:
        return 2048
    side = int(math.sqrt((2 << 20) / per_pair))
    # A pair axis shorter than a vector register makes the innermost loops short: below 4, one pair
    # per tile (the pixel axes innermost) is faster (16x16 CNTK: 2x).
    return 1 if side < 4 else min(side, 2048)


def analytic_kernels(
    plan: Plan, x1: np.ndarray, x2: np.ndarray | None = None, dtype: ComputeDtype = "float64", tile: int | None = None,
) -> dict[Which, np.ndarray]:
    """Both the NNGP and the NTK of `plan` between x1 (n1, ...) and x2 (n2, ...), x2 = x1 when None,
    in one pass: (n1, n2) arrays by name. Inputs are (n, d) vectors or (n, height, width, channels)
    images; `tile` x `tile` pairs are computed at once (default: from a memory budget)."""
    nngp, ntk = _kernels(plan, x1, x2, True, dtype, tile)
    return {"nngp": nngp, "ntk": ntk}


def analytic_kernel(
    plan: Plan, x1: np.ndarray, x2: np.ndarray | None = None, which: Which = "ntk", dtype: ComputeDtype = "float64",
    tile: int | None = None,
) -> np.ndarray:
    """The NNGP or the NTK of `plan` (see `analytic_kernels`); the NNGP alone skips the NTK recursion."""
    if which not in ("nngp", "ntk"):
        raise ValueError(f"which must be nngp or ntk, got {which!r}")
    nngp, ntk = _kernels(plan, x1, x2, which == "ntk", dtype, tile)
    return ntk if which == "ntk" else nngp


def kernel_from_config(
    config, x1: np.ndarray, x2: np.ndarray | None = None, which: Which = "ntk", dtype: ComputeDtype = "float64",
    tile: int | None = None,
) -> np.ndarray:
    """`analytic_kernel` of the plan of a model config (engine/config.py)."""
    return analytic_kernel(plan_of(config), x1, x2, which, dtype, tile)


def _kernels(plan: Plan, x1, x2, with_ntk: bool, dtype: ComputeDtype, tile: int | None):
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    symmetric = x2 is None
    x1 = np.asarray(x1)
    x2 = x1 if symmetric else np.asarray(x2)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 have different input shapes: {x1.shape[1:]} and {x2.shape[1:]}")
    validate(plan, x1.shape[1:])
    n1, n2 = len(x1), len(x2)
    tile = tile or default_tile(plan, x1.shape[1:], dtype)
    t1, t2 = min(tile, n1), min(tile, n2)
    nngp = np.zeros((n1, n2), dtype)
    ntk = np.zeros((n1, n2), dtype) if with_ntk else None

    with jax.enable_x64(dtype == "float64"):
        self_fn = functools.partial(self_variances, plan)
        cross_fn = functools.partial(cross, plan, with_ntk=with_ntk)
        x1j = jnp.asarray(x1, dtype)
        x2j = x1j if symmetric else jnp.asarray(x2, dtype)

        def variances(x, n, t):
            # Per-input variances of all inputs, computed in chunks of the tile size (padded to it).
            chunks = [self_fn(_padded(x, i0, t)) for i0 in range(0, n, t)]
            return [jnp.concatenate([c[a] for c in chunks], axis=-1) for a in range(len(chunks[0]))]

        vars1 = variances(x1j, n1, t1)
        vars2 = vars1 if symmetric else variances(x2j, n2, t2)
        for i0 in range(0, n1, tile):
            for j0 in range(i0 if symmetric else 0, n2, tile):
                a, b = _padded(x1j, i0, t1), _padded(x2j, j0, t2)
                va = [_padded_last(v, i0, t1) for v in vars1]
                vb = [_padded_last(v, j0, t2) for v in vars2]
                k, t = cross_fn(a, b, va, vb)
                b1, b2 = min(t1, n1 - i0), min(t2, n2 - j0)
                for out, value in ((nngp, k), (ntk, t)):
                    if out is None:
                        continue
                    block = np.asarray(value)[:b1, :b2]
                    if symmetric and i0 == j0:  # the upper triangle, mirrored: exactly symmetric
                        block = np.triu(block) + np.triu(block, 1).T
                    out[i0 : i0 + b1, j0 : j0 + b2] = block
                    if symmetric and i0 != j0:
                        out[j0 : j0 + b2, i0 : i0 + b1] = block.T
    return nngp, ntk


def _padded(x, i0: int, t: int):
    """Rows i0 .. i0 + t of x, the last row repeated when fewer remain (one compiled tile shape)."""
    rows = x[i0 : i0 + t]
    if len(rows) < t:
        rows = jnp.concatenate([rows, jnp.repeat(rows[-1:], t - len(rows), axis=0)], axis=0)
    return rows


def _padded_last(v, i0: int, t: int):
    cols = v[..., i0 : i0 + t]
    if cols.shape[-1] < t:
        cols = jnp.concatenate([cols, jnp.repeat(cols[..., -1:], t - cols.shape[-1], axis=-1)], axis=-1)
    return cols


class AnalyticBlocks:
    """The analytic kernel as a block function (engine/blocks.py) for the `kernel` task: features
    of a batch are its inputs; a block between a batch and itself is computed as a symmetric kernel."""

    outputs = 1

    def __init__(self, plan: Plan, which: Which, dtype: ComputeDtype, batch_size: int, tile: int | None = None):
        self.plan, self.which, self.dtype, self.tile = plan, which, dtype, tile
        self.batch_size = batch_size

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def block(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        same = f1 is f2 or (f1.shape == f2.shape and np.array_equal(f1, f2))
        return analytic_kernel(self.plan, f1, None if same else f2, self.which, self.dtype, self.tile)

    def feature_bytes(self) -> int:
        return 0
