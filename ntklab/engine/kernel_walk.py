"""The walk of a plan (engine/plan.py) by the kernel recursions: which stage (engine/kernel_stages.py)
each op runs, on which stored form of the kernel, with which pending scaling.

What is stored: a convolutional layer whose output only ever reaches a Flatten readout needs the
covariances of equal pixels only (n1 x n2 x HW); pooling and global average pooling need all pixel
pairs (n1 x n2 x (HW)^2). The mode of each op is chosen from what the ops after it need. Per-input
variances at every activation are computed once per input (the "self" pass), not once per pair.

Parallel branches: the kernels of a sum add (exact when the branches' outputs are uncorrelated,
see plan.kernel_problem); a channel concatenation averages the branches' kernels weighted by their
channel counts, as the next affine layer's fan-in normalization sees them (neural-tangents'
FanInConcat does the same). Only linear ops may follow a concatenation before the next affine layer.
"""

from __future__ import annotations

import math

from ntklab.engine.kernel_stages import (
    DIAG,
    FULL,
    VEC,
    Pending,
    coefficients,
    conv_window,
    stage_act_cross,
    stage_act_self,
    stage_combine,
    stage_diagonal,
    stage_input,
    stage_linear,
    stage_pool,
    stage_reduce,
    tangent_scales,
)
from ntklab.engine.plan import (
    Activation,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Parallel,
    Plan,
    PlanError,
    check_shapes,
    kernel_problem,
    ops_output_shape,
    output_shape,
)

_MODES = [VEC, DIAG, FULL]


def needs(ops: tuple, after: str) -> tuple[str, list[str]]:
    """What the input of `ops` must store given what its output must store; per op, what its input needs."""
    per_op = []
    need = after
    for op in reversed(ops):
        if isinstance(op, (GlobalAvgPool, AvgPool)):
            need = FULL
        elif isinstance(op, Flatten):
            need = DIAG
        elif isinstance(op, Dense):
            need = VEC
        elif isinstance(op, Parallel):
            need = max((needs(b, need)[0] for b in op.branches), key=_MODES.index)
        per_op.append(need)
    return need, per_op[::-1]


def validate(plan: Plan, input_shape: tuple[int, ...]) -> None:
    """PlanError unless the plan has a kernel on inputs of this shape (per example)."""
    problem = kernel_problem(plan.ops)
    if problem:
        raise PlanError(None, problem)
    if len(input_shape) not in (1, 3):
        raise PlanError(None, f"inputs must be vectors or (height, width, channels) images, got shape {list(input_shape)}")
    check_shapes(plan, input_shape)


def start_mode(plan: Plan, x_ndim: int) -> str:
    """How the input covariance is stored; a plan that starts by flattening images starts with vectors."""
    need, _ = needs(plan.ops, VEC)
    if x_ndim == 2 or (need == DIAG and isinstance(plan.ops[0], Flatten)):
        return VEC
    return need


class _Walk:
    """One pass of the recursion over a plan. A self pass (inputs paired with themselves, NNGP
    only) records the per-input variances at every activation; a cross pass consumes them."""

    def __init__(self, with_ntk: bool, variances: list | None):
        self.record = variances is None
        self.with_ntk = with_ntk and not self.record
        self.variances = [] if variances is None else variances
        self.act_index = 0

    def _settle(self, k, t, pending):
        if pending is None:
            return k, t
        return stage_combine(k, t, coefficients(pending, k.dtype), pending.start, t is not None or pending.start)

    def run(self, ops: tuple, k, t, pending, mode: str, shape: tuple[int, ...], after: str):
        _, per_op = needs(ops, after)
        for i, (op, need) in enumerate(zip(ops, per_op)):
            need_out = per_op[i + 1] if i + 1 < len(per_op) else after
            if mode == FULL and need == DIAG:
                k = stage_diagonal(k)
                t = None if t is None else stage_diagonal(t)
                mode = DIAG
            out_shape = output_shape(op, shape)
            if isinstance(op, (Dense, Conv)):
                k, t = self._settle(k, t, pending)
                if isinstance(op, Dense):
                    fan_in = shape[0]
                else:
                    fan_in = shape[-1] * op.kernel_size[0] * op.kernel_size[1]
                    k = stage_linear(k, conv_window(op), mode, shape[:2])
                    t = None if t is None else stage_linear(t, conv_window(op), mode, shape[:2])
                tw, tb = tangent_scales(op, fan_in)
                b2 = 0.0 if op.init.b_std is None else op.init.b_std**2
                pending = Pending((op.init.w_std**2, b2, tw, tb), start=t is None and self.with_ntk)
            elif isinstance(op, Activation):
                if self.record:
                    k, own = stage_act_self(k, coefficients(pending, k.dtype), op.name, mode)
                    self.variances.append(own)
                else:
                    v1, v2 = self.variances[self.act_index]
                    self.act_index += 1
                    start = pending is not None and pending.start
                    with_t = t is not None or start
                    k, t = stage_act_cross(k, t, v1, v2, coefficients(pending, k.dtype), op.name, mode, start, with_t)
                pending = None
            elif isinstance(op, AvgPool):
                k, t = self._settle(k, t, pending)
                pending = None
                k = stage_pool(k, op.window, op.strides)
                t = None if t is None else stage_pool(t, op.window, op.strides)
            elif isinstance(op, (GlobalAvgPool, Flatten)):
                k, t = self._settle(k, t, pending)
                pending = None
                k = stage_reduce(k, mode)
                t = None if t is None else stage_reduce(t, mode)
                mode = VEC
            elif isinstance(op, Parallel):
                k, t = self._settle(k, t, pending)
                pending = None
                k, t, mode = self._parallel(op, k, t, mode, shape, need_out)
            else:
                raise PlanError(op, "has no infinite-width kernel")
            shape = out_shape
        k, t = self._settle(k, t, pending)
        return k, t, mode

    def _parallel(self, op: Parallel, k, t, mode: str, shape: tuple[int, ...], after: str):
        outs = [self.run(branch, k, t, None, mode, shape, after) for branch in op.branches]
        out_mode = min((o[2] for o in outs), key=_MODES.index)
        if op.join == "sum":
            weights = [1.0] * len(outs)
        else:
            channels = [ops_output_shape(b, shape)[-1] for b in op.branches]
            weights = [c / sum(channels) for c in channels]
        k_sum = t_sum = None
        for (kb, tb, mb), weight in zip(outs, weights):
            if mb == FULL and out_mode == DIAG:
                kb = stage_diagonal(kb)
                tb = None if tb is None else stage_diagonal(tb)
            if weight != 1.0:
                kb = weight * kb
                tb = None if tb is None else weight * tb
            k_sum = kb if k_sum is None else k_sum + kb
            if tb is not None:
                t_sum = tb if t_sum is None else t_sum + tb
        return k_sum, t_sum, out_mode


def self_variances(plan: Plan, x) -> list:
    """Per-input variances at every activation of the plan, pixel axes first, inputs last."""
    mode = start_mode(plan, x.ndim)
    walk = _Walk(with_ntk=False, variances=None)
    walk.run(plan.ops, stage_input(x, x, mode, True), None, None, mode, tuple(x.shape[1:]), VEC)
    return walk.variances


def cross(plan: Plan, x1, x2, vars1, vars2, with_ntk: bool):
    """(NNGP, NTK or None) between the batches x1 and x2, given their `self_variances`."""
    mode = start_mode(plan, x1.ndim)
    walk = _Walk(with_ntk=with_ntk, variances=list(zip(vars1, vars2)))
    k, t, _ = walk.run(plan.ops, stage_input(x1, x2, mode, False), None, None, mode, tuple(x1.shape[1:]), VEC)
    return k, t


def per_pair_bytes(plan: Plan, input_shape: tuple[int, ...], itemsize: int) -> int | None:
    """Bytes per input pair of the largest stored kernel tensor; None for vectors."""
    mode = start_mode(plan, len(input_shape) + 1)
    if mode == VEC:
        return None
    return math.prod(input_shape[:2]) ** (2 if mode == FULL else 1) * itemsize
