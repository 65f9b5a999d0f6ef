"""The layer plan: one description of a network, each op with a finite and an infinite-width meaning.

A model config yields a plan (engine/presets.py); the Equinox model is built from it
(engine/network.py) and the analytic NNGP/NTK walks it (engine/analytic.py), as in neural-tangents'
stax, where every layer is a triple of init, apply and kernel functions (Novak et al. 2020). Ops:

    Dense, Conv           affine layers (Conv with strides, SAME/VALID padding and groups), each with
                          its `Init` (parameterization, w_std, b_std) or explicit `Scales`
    Activation            an elementwise nonlinearity (engine/activations.py)
    Scale                 division by a constant (the mean-field parameterization's 1/N)
    AvgPool, MaxPool      pooling over a window; GlobalAvgPool, the mean over all pixels
    Flatten               images to vectors
    BatchNorm             per-channel normalization (batch statistics in training, running ones else)
    Parallel              branches on one input, joined by a sum (residual blocks) or a channel concatenation

Ops with no infinite-width meaning (MaxPool, BatchNorm, Scale, grouped convolutions, explicit
scales, activations without a closed-form kernel map) are named by `kernel_problem`.

Every op with parameters names where they sit in the model (`path`: `layers.0`, `blocks.2.conv1`),
so parameter paths are part of the plan, and which of the plan's `keys` initializes it. `at` is the
op's place in the description the plan came from (a `layers` list: `layers.2.branches.0.1`), for
error messages. This module is plain Python: configs validate plans without importing JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

KERNEL_ACTIVATIONS = ("relu", "erf", "gelu")  # the closed-form maps of engine/kernel_maps.py
KERNEL_PARAMETERIZATIONS = ("standard", "ntk", "taylor")
Padding = Literal["SAME", "VALID"]


class PlanError(ValueError):
    """A plan that cannot be built or has no kernel, with the op it is about."""

    def __init__(self, op: Op | None, message: str):
        where = op_label(op) if op is not None else ""
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Init:
    """How an affine layer draws and scales its parameters (engine/layers.py). b_std None: no bias."""

    w_std: float = 1.0
    b_std: float | None = None
    parameterization: Literal["standard", "ntk", "taylor"] = "standard"
    param_order: int | None = None  # the k of the taylor parameterization


@dataclass(frozen=True)
class Scales:
    """Explicit storage and forward multipliers of a layer, and its gradient multipliers, instead
    of those of a parameterization (the mean-field MLP's)."""

    store_weight: float
    weight_multiplier: float
    store_bias: float
    bias_multiplier: float
    weight_grad_scale: float = 1.0
    bias_grad_scale: float = 1.0
    constant_bias: bool = False  # the bias starts at store_bias instead of store_bias * N(0, 1)
    per_sqrt_fan_in: bool = False  # the stored weight is store_weight / sqrt(fan_in) times N(0, 1)


@dataclass(frozen=True)
class Dense:
    """y = x W + b on vectors, `out` features."""

    out: int
    init: Init = Init()
    path: str = ""
    key: int = 0
    scales: Scales | None = None
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Conv:
    """Convolution of NHWC images with an HWIO kernel; `groups` splits the channels (groups equal to
    the input channels: depthwise). SAME padding follows XLA's convention."""

    out: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "VALID"
    groups: int = 1
    init: Init = Init()
    path: str = ""
    key: int = 0
    at: str = field(default="", kw_only=True)


def square_conv(out: int, size: int, init: Init, path: str, key: int, stride: int = 1, padding: Padding = "SAME",
                groups: int = 1) -> Conv:  # fmt: skip
    """A size x size convolution with the same stride along both axes."""
    return Conv(out, (size, size), (stride, stride), padding, groups, init, path, key)


@dataclass(frozen=True)
class Activation:
    name: str
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Scale:
    """x / divisor."""

    divisor: float
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class AvgPool:
    """Average over `window` with `strides`, VALID padding (odd sizes round down)."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class MaxPool:
    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    padding: Padding = "VALID"
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class GlobalAvgPool:
    """The mean over the pixels: (h, w, c) -> (c,)."""

    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Flatten:
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class BatchNorm:
    """Normalization over all axes but the channels, with a trained scale and offset (finite only:
    its statistics depend on the batch)."""

    path: str
    momentum: float = 0.1
    eps: float = 1e-5
    at: str = field(default="", kw_only=True)


@dataclass(frozen=True)
class Parallel:
    """`branches` applied to the same input (an empty branch is the identity), joined by their sum
    or by concatenating their channels."""

    branches: tuple[tuple, ...]
    join: Literal["sum", "concat"] = "sum"
    at: str = field(default="", kw_only=True)


Op = Dense | Conv | Activation | Scale | AvgPool | MaxPool | GlobalAvgPool | Flatten | BatchNorm | Parallel
OP_NAMES = {
    Dense: "dense", Conv: "conv", Activation: "act", Scale: "scale", AvgPool: "avg_pool", MaxPool: "max_pool",
    GlobalAvgPool: "global_avg_pool", Flatten: "flatten", BatchNorm: "batch_norm",
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """The ops in forward order and how many keys the model key is split into (1: the key itself)."""

    ops: tuple
    keys: int


def op_label(op: Op) -> str:
    """How errors name an op: its place in the description and its kind (`layers.3 (max_pool)`)."""
    kind = op.join if isinstance(op, Parallel) else OP_NAMES[type(op)]
    where = op.at or getattr(op, "path", "")
    return f"{where} ({kind})" if where else kind


def walk(ops: tuple):
    """Every op, branches included, in forward order."""
    for op in ops:
        yield op
        if isinstance(op, Parallel):
            for branch in op.branches:
                yield from walk(branch)


def layers_with_parameters(plan: Plan) -> list[Dense | Conv | BatchNorm]:
    return [op for op in walk(plan.ops) if isinstance(op, (Dense, Conv, BatchNorm))]


# ----------------------------------------------------------------------------------------------
# Shapes: (features,) for vectors, (height, width, channels) for images.


def conv_output_size(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """Output size and (low, high) zero padding of XLA's SAME/VALID convention along one axis."""
    if padding == "VALID":
        return (size - k) // s + 1, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _image(op: Op, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise PlanError(op, f"needs (height, width, channels) inputs, got shape {list(shape)}")
    return shape


def output_shape(op: Op, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of one op on inputs of `shape` (per example); PlanError if it cannot apply."""
    if isinstance(op, Dense):
        if len(shape) != 1:
            raise PlanError(op, f"needs vector inputs (flatten or global_avg_pool first), got shape {list(shape)}")
        return (op.out,)
    if isinstance(op, Conv):
        h, w, c = _image(op, shape)
        if c % op.groups or op.out % op.groups:
            raise PlanError(op, f"{op.groups} groups do not divide {c} input and {op.out} output channels")
        sizes = [conv_output_size(n, k, s, op.padding)[0] for n, k, s in zip((h, w), op.kernel_size, op.strides)]
        if min(sizes) < 1:
            raise PlanError(op, f"a {op.padding} {op.kernel_size[0]}x{op.kernel_size[1]} convolution leaves "
                                f"nothing of a {h}x{w} input")  # fmt: skip
        return (*sizes, op.out)
    if isinstance(op, (AvgPool, MaxPool)):
        h, w, c = _image(op, shape)
        padding = getattr(op, "padding", "VALID")
        sizes = [conv_output_size(n, k, s, padding)[0] for n, k, s in zip((h, w), op.window, op.strides)]
        if min(sizes) < 1:
            raise PlanError(op, f"cannot pool {list(op.window)} windows over a {h}x{w} input")
        return (*sizes, c)
    if isinstance(op, GlobalAvgPool):
        return (_image(op, shape)[2],)
    if isinstance(op, Flatten):
        return (math.prod(shape),)
    if isinstance(op, Parallel):
        outs = [ops_output_shape(branch, shape) for branch in op.branches]
        if op.join == "sum":
            if len(set(outs)) != 1:
                raise PlanError(op, f"the branches give different shapes: {', '.join(map(str, map(list, outs)))}")
            return outs[0]
        if len({o[:-1] for o in outs}) != 1:
            raise PlanError(op, f"the branches give different spatial shapes: {', '.join(map(str, map(list, outs)))}")
        return (*outs[0][:-1], sum(o[-1] for o in outs))
    return shape  # Activation, Scale, BatchNorm


def ops_output_shape(ops: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    for op in ops:
        shape = output_shape(op, shape)
    return shape


def check_shapes(plan: Plan, input_shape: tuple[int, ...], out_dim: int | None = None) -> None:
    """PlanError naming the first op that cannot apply, or if the network does not end in `out_dim` outputs."""
    out = ops_output_shape(plan.ops, tuple(input_shape))
    if len(out) != 1 or (out_dim is not None and out[0] != out_dim):
        raise PlanError(None, f"the network must end in {out_dim or 'vector'} outputs, it ends in shape {list(out)}")


# ----------------------------------------------------------------------------------------------
# Which plans have an infinite-width kernel.


def kernel_problem(ops: tuple) -> str | None:
    """Why the plan has no infinite-width NNGP/NTK, naming the op, or None when it has one."""
    for op in walk(ops):
        problem = _op_kernel_problem(op)
        if problem:
            return f"{op_label(op)}: {problem}"
    op = _nonlinear_after_concat(ops, False)
    if op is not None:
        return (f"{op_label(op)}: a nonlinearity right after a concatenation has no kernel here (its "
                "channels differ in distribution); put an affine layer in between")  # fmt: skip
    return None


def _nonlinear_after_concat(ops: tuple, mixed: bool) -> Op | None:
    """The first activation that sees a concatenation's output before any affine layer does."""
    return _scan_mixed(ops, mixed)[0]


def _scan_mixed(ops: tuple, mixed: bool) -> tuple[Op | None, bool]:
    for op in ops:
        if isinstance(op, (Dense, Conv)):
            mixed = False
        elif isinstance(op, Activation) and mixed:
            return op, mixed
        elif isinstance(op, Parallel):
            results = [_scan_mixed(branch, mixed) for branch in op.branches]
            for found, _ in results:
                if found is not None:
                    return found, mixed
            mixed = op.join == "concat" or any(m for _, m in results)
    return None, mixed


def _op_kernel_problem(op: Op) -> str | None:
    if isinstance(op, (MaxPool, BatchNorm)):
        return "has no infinite-width kernel (its output is not a Gaussian process in the limit)"
    if isinstance(op, Scale) or getattr(op, "scales", None) is not None:
        return "the scalings of the mean_field parameterization have no infinite-width NNGP/NTK limit"
    if isinstance(op, Conv) and op.groups != 1:
        return "grouped convolutions have no analytic kernel in ntklab"
    if isinstance(op, Activation) and op.name not in KERNEL_ACTIVATIONS:
        return (f"activation {op.name!r} has no closed-form infinite-width kernel map; "
                f"use one of {', '.join(KERNEL_ACTIVATIONS)}")  # fmt: skip
    if isinstance(op, Parallel) and op.join == "sum":
        free = [b for b in op.branches if not ends_with_affine(b)]
        if len(free) > 1:
            return ("at most one branch of a sum may end without an affine layer (the kernels of the "
                    "branches add only when their outputs are uncorrelated)")  # fmt: skip
    return None


def ends_with_affine(branch: tuple) -> bool:
    """Whether a branch's output is an affine layer's, up to pooling and flattening."""
    for op in reversed(branch):
        if isinstance(op, (Dense, Conv)):
            return True
        if not isinstance(op, (AvgPool, GlobalAvgPool, Flatten)):
            return False
    return False


# ----------------------------------------------------------------------------------------------
# The plan as `layers` ops (the YAML form of ntklab/engine/config.py:LayersModel), fully explicit:
# what tests/reference/make_nt_fixtures.py turns into stax.


def to_layers(ops: tuple) -> list[dict]:
    out = []
    for op in ops:
        if isinstance(op, Parallel):
            out.append({"op": op.join, "branches": [to_layers(b) for b in op.branches]})
            continue
        entry = {"op": OP_NAMES[type(op)]}
        for f in fields(op):
            if f.name in ("at", "path", "key"):
                continue
            value = getattr(op, f.name)
            if isinstance(value, Init):
                entry.update({k.name: getattr(value, k.name) for k in fields(value)})
            elif isinstance(value, Scales):
                entry["scales"] = {k.name: getattr(value, k.name) for k in fields(value)}
            elif value is not None or f.name == "scales":
                entry[f.name] = list(value) if isinstance(value, tuple) else value
        if entry.get("scales", 0) is None:
            del entry["scales"]
        out.append(entry)
    return out
