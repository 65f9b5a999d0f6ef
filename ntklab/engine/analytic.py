"""Infinite-width NNGP and NTK of the architectures of the model configs.

One definition, two meanings: `plan_from_config` describes a model config as a sequence of layer
operations (a *plan*) that mirrors the forward pass of the Equinox model `models.build_model`
builds from the same config, op for op, and every affine op names the model layer it stands for
(`Affine.layer`). `tests/analytic` checks that running the plan with the model's own layers
gives the model's output, so the kernel below is the infinite-width limit of exactly that model.

Kernels of a plan are computed by the layer-wise recursions (Neal; Lee et al. 2018; Jacot et al.
2018; Arora et al. 2019), on pairs of input batches, tile by tile:

    Affine   K <- w^2 A(K) + b^2
             ntk:      T <- w^2 A(T) + w^2 A(K) + b^2
             standard: T <- w^2 A(T) + fan_in A(K) + [has bias]
             taylor k: T <- w^2 A(T) + w^2 fan_in^((k-1)/(k+1)) A(K) + b^2
    act      K <- E[phi(u) phi(v)],  T <- T * E[phi'(u) phi'(v)],  (u, v) ~ N(0, [[K11, K12], [K12, K22]])
             relu: arc-cosine kernel of degree 1 (Cho & Saul); erf: Williams' arcsine kernel; gelu
             (exact, x Phi(x)): orthant moments of a bivariate normal, its derivative by Price's theorem
    residual sums: the kernels of the branches add (branches uncorrelated, see `Residual`)

where A is the identity for Dense and, for a convolution, the mean of K over the k x k window
shifted along both pixels of a pixel pair (zero padding included), matching the fan-in
normalization of the finite layers (layers.py): `standard` draws W ~ N(0, w^2/fan_in), `ntk`
multiplies N(0, 1) weights by w/sqrt(fan_in). The standard parameterization's NTK grows with the
hidden widths (its fan_in term), so it is the NTK of the finite model at the widths of the config,
to leading order; the NNGP of both parameterizations is the same.

What is stored: a convolutional layer whose output only ever reaches a Flatten readout needs the
covariances of equal pixels only (n1 x n2 x HW); pooling and global average pooling need all pixel
pairs (n1 x n2 x (HW)^2). The mode of each op is chosen from what the ops after it need. Per-input
variances at every activation are computed once per input (the "self" pass), not once per pair.
Internally tensors keep the pair-batch axes last (pixel axes first), so the elementwise maps and
the shifted sums run over contiguous batches.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntklab.engine.config import ANALYTIC_ACTIVATIONS as ACTIVATIONS_WITH_KERNELS

Which = Literal["nngp", "ntk"]

# ----------------------------------------------------------------------------------------------
# Plans: the architecture as a sequence of layer operations.


@dataclass(frozen=True)
class Affine:
    """A Dense layer (kernel_size=None, on vectors) or a convolution of NHWC images with an HWIO kernel.

    `parameterization` (with `param_order` for taylor) is that of engine/layers.py. `layer` is the
    dotted path of the finite model's layer it stands for (`layers.0`, `blocks.2.conv1`; None for a
    plan built by hand).
    """

    out_channels: int
    w_std: float = 1.0
    b_std: float | None = None
    parameterization: Literal["standard", "ntk", "taylor"] = "ntk"
    kernel_size: tuple[int, int] | None = None
    strides: tuple[int, int] = (1, 1)
    padding: Literal["SAME", "VALID"] = "VALID"
    layer: str | None = None
    param_order: int | None = None


@dataclass(frozen=True)
class Activation:
    name: str


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over `window` with `strides` and VALID padding (odd sizes round down)."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)


@dataclass(frozen=True)
class GlobalAvgPool:
    pass


@dataclass(frozen=True)
class Flatten:
    pass


@dataclass(frozen=True)
class Residual:
    """The sum of `branches` applied to the same input; an empty branch is the identity.

    Exact when every branch but at most one ends in an affine layer (followed by nothing but
    pooling or flattening): their outputs are then uncorrelated with each other, so the kernels add.
    """

    branches: tuple[tuple, ...]


Op = Affine | Activation | AvgPool | GlobalAvgPool | Flatten | Residual
Plan = tuple  # tuple[Op, ...]


def plan_from_config(config, input_shape: Sequence[int]) -> Plan:
    """The plan of a model config (engine/config.py), op for op the forward pass of `build_model`:
    mlp, cnn, lenet5, myrtle5, wrn, logistic; standard, ntk and taylor parameterizations."""
    arch = config.arch
    if getattr(config, "parameterization", None) not in ("standard", "ntk", "taylor"):
        raise ValueError(
            f"no infinite-width kernel for {arch!r} in the {getattr(config, 'parameterization', '?')!r} "
            "parameterization (analytic kernels: standard, ntk, taylor)"
        )
    init = {
        "w_std": float(config.w_std),
        "b_std": None if config.b_std is None else float(config.b_std),
        "parameterization": config.parameterization,
        "param_order": getattr(config, "param_order", None),
    }
    act = Activation(config.activation)

    def dense(out: int, layer: str) -> Affine:
        return Affine(out, layer=layer, **init)

    def conv(channels: int, size: int, padding: str, layer: str, stride: int = 1) -> Affine:
        return Affine(channels, kernel_size=(size, size), strides=(stride, stride), padding=padding, layer=layer,
                      **init)  # fmt: skip

    if arch == "mlp":
        ops: list = [Flatten()]
        for i in range(config.depth):
            ops += [dense(config.width, f"layers.{i}"), act]
        return tuple(ops + [dense(1, f"layers.{config.depth}")])
    if arch == "logistic":
        return (Flatten(), dense(1, "layers.0"))
    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs (height, width, channels) inputs, got shape {list(input_shape)}")
    if arch == "cnn":
        ops = []
        for i in range(config.depth):
            ops += [conv(config.channels, config.kernel_size, config.padding, f"layers.{i}"), act]
        ops.append(GlobalAvgPool() if config.readout == "gap" else Flatten())
        return tuple(ops + [dense(1, f"layers.{config.depth}")])
    if arch == "lenet5":
        return (
            conv(6, 5, "SAME", "layers.0"), act, AvgPool(),
            conv(16, 5, "SAME", "layers.1"), act, AvgPool(), Flatten(),
            dense(120, "layers.2"), act, dense(84, "layers.3"), act, dense(1, "layers.4"),
        )  # fmt: skip
    if arch == "myrtle5":
        c = config.channels
        return (
            conv(c, 3, "SAME", "layers.0"), act, conv(c, 3, "SAME", "layers.1"), act, AvgPool(),
            conv(c, 3, "SAME", "layers.2"), act, AvgPool(), conv(c, 3, "SAME", "layers.3"), act,
            GlobalAvgPool(), dense(1, "layers.4"),
        )  # fmt: skip
    if arch == "wrn":
        ops = [conv(config.stem_channels, 3, "SAME", "stem")]
        index = 0
        for out_channels, stride in ((16 * config.widening, 1), (32 * config.widening, 2), (64 * config.widening, 2)):
            for j in range(config.blocks_per_group):
                s = stride if j == 0 else 1
                name = f"blocks.{index}"
                residual = (act, conv(out_channels, 3, "SAME", f"{name}.conv1", s), act,
                            conv(out_channels, 3, "SAME", f"{name}.conv2"))  # fmt: skip
                shortcut = (conv(out_channels, 3, "SAME", f"{name}.shortcut", s),) if j == 0 else ()
                ops.append(Residual((residual, shortcut)))
                index += 1
        return tuple(ops + [GlobalAvgPool(), dense(1, "readout")])
    raise ValueError(f"no infinite-width kernel for architecture {arch!r}")


# ----------------------------------------------------------------------------------------------
# Static analysis of a plan: shapes, fan-ins and what each op must store.

FULL, DIAG, VEC = "full", "diag", "vec"  # all pixel pairs; equal pixels only; no pixels (vectors)


def _conv_out(size: int, k: int, s: int, padding: str) -> tuple[int, int, int]:
    """Output size and (low, high) zero padding of lax's SAME/VALID convention along one axis."""
    if padding == "VALID":
        out = (size - k) // s + 1
        return out, 0, 0
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _check_activation(name: str) -> None:
    if name not in ACTIVATIONS_WITH_KERNELS:
        raise ValueError(
            f"activation {name!r} has no closed-form infinite-width kernel map; "
            f"use one of {', '.join(ACTIVATIONS_WITH_KERNELS)}"
        )


def _needs(plan: Plan, after: str) -> tuple[str, list[str]]:
    """What the input of `plan` must store given what its output must store; per op, what its input needs."""
    needs = []
    need = after
    for op in reversed(plan):
        if isinstance(op, (GlobalAvgPool, AvgPool)):
            need = FULL
        elif isinstance(op, Flatten):
            need = DIAG
        elif isinstance(op, Affine) and op.kernel_size is None:
            need = VEC
        elif isinstance(op, Residual):
            need = max((_needs(b, need)[0] for b in op.branches), key=[VEC, DIAG, FULL].index)
        needs.append(need)
    return need, needs[::-1]


@dataclass(frozen=True)
class _Shape:
    spatial: tuple[int, ...]  # () for vectors
    channels: int


def _shapes(plan: Plan, shape: _Shape) -> _Shape:
    """Validates the plan against an input shape and returns the output shape."""
    for op in plan:
        if isinstance(op, Affine):
            if op.kernel_size is None:
                if shape.spatial:
                    raise ValueError("a Dense layer needs vector inputs: Flatten or GlobalAvgPool first")
                shape = _Shape((), op.out_channels)
            else:
                if len(shape.spatial) != 2:
                    raise ValueError("a convolution needs (height, width, channels) inputs")
                spatial = tuple(
                    _conv_out(n, k, s, op.padding)[0] for n, k, s in zip(shape.spatial, op.kernel_size, op.strides)
                )
                if min(spatial) < 1:
                    raise ValueError(f"a {op.kernel_size} VALID convolution leaves nothing of {shape.spatial} inputs")
                shape = _Shape(spatial, op.out_channels)
        elif isinstance(op, Activation):
            _check_activation(op.name)
        elif isinstance(op, AvgPool):
            spatial = tuple((n - w) // s + 1 for n, w, s in zip(shape.spatial, op.window, op.strides))
            if len(shape.spatial) != 2 or min(spatial) < 1:
                raise ValueError(f"cannot pool {op.window} over inputs of spatial shape {shape.spatial}")
            shape = _Shape(spatial, shape.channels)
        elif isinstance(op, GlobalAvgPool):
            shape = _Shape((), shape.channels)
        elif isinstance(op, Flatten):
            shape = _Shape((), shape.channels * math.prod(shape.spatial))
        elif isinstance(op, Residual):
            outs = {_shapes(branch, shape) for branch in op.branches}
            if len(outs) != 1:
                raise ValueError(f"the branches of a residual sum have different output shapes: {outs}")
            free = [b for b in op.branches if not _ends_with_affine(b)]
            if len(free) > 1:
                raise ValueError("at most one branch of a residual sum may end without an affine layer")
            shape = outs.pop()
        else:
            raise TypeError(f"unknown plan op {op!r}")
    return shape


def _ends_with_affine(branch: tuple) -> bool:
    for op in reversed(branch):
        if isinstance(op, Affine):
            return True
        if not isinstance(op, (AvgPool, GlobalAvgPool, Flatten)):
            return False
    return False


# ----------------------------------------------------------------------------------------------
# Kernel maps of the activations: (K12, K11, K22) -> (E[phi phi], E[phi' phi']).


# arcsin and arccos from a polynomial: XLA's CPU arccos/atan2 are scalar library calls (40 ns an
# element here, most of a CNTK's time), this is a dozen vectorized multiply-adds. On |x| <= 1/2,
# asin(x) = x + x z R(z) with z = x^2; above, asin(x) = pi/2 - 2 asin(sqrt((1 - x) / 2)).
# R(z) = (asin(sqrt z) / sqrt z - 1) / z on [0, 1/4]: the degree-12 Chebyshev interpolant of R,
# rewritten in powers of z (numpy.polynomial.chebyshev.chebinterpolate of np.arcsin); its
# relative error on asin is below 3e-16 over [-1, 1].
_ASIN_R = (
    0.16666666666675897, 0.07499999997927573, 0.044642858924889985, 0.03038186469979015,
    0.02237429688239777, 0.017315685592716068, 0.014398995669998433, 0.008050136122730502,
    0.029259209458076203, -0.06530577961277355, 0.18823447634646046, -0.2552200845687301,
    0.17842643151209284,
)  # fmt: skip


def _asin_small(s, z):
    """asin(s) for 0 <= s <= 1/2, z = s^2."""
    r = _ASIN_R[-1]
    for c in _ASIN_R[-2::-1]:
        r = r * z + c
    return s + s * z * r


def _acos(c, jnp):
    """arccos on [-1, 1], accurate near +-1 (where it matters for the arc-cosine kernels)."""
    a = jnp.abs(c)
    big = a > 0.5
    z = jnp.where(big, 0.5 * (1.0 - a), a * a)
    s = jnp.where(big, jnp.sqrt(z), a)
    p = _asin_small(s, z)  # big: asin(sqrt((1 - |c|) / 2)) = acos(|c|) / 2; else asin(|c|)
    acos_abs = jnp.where(big, 2.0 * p, 0.5 * jnp.pi - p)
    return jnp.where(c >= 0, acos_abs, jnp.pi - acos_abs)


def _asin(x, jnp):
    return 0.5 * jnp.pi - _acos(x, jnp)


def _relu_map(k12, v1, v2, jnp, derivative: bool):
    """Arc-cosine kernel of degree 1 (Cho & Saul): with cos(theta) = K12 / sqrt(K11 K22),
    E[relu relu] = sqrt(K11 K22) (sin theta + (pi - theta) cos theta) / (2 pi), E[relu' relu'] = (pi - theta) / (2 pi).

    Near theta = 0 the angle is ill-conditioned (a rounding error e in cos theta moves theta by
    sqrt(2 e)), so a pair whose K11 K22 - K12^2 is within a few rounding errors of zero (an input
    with itself, at the same pixel) is taken as exactly collinear, theta = 0, as exact arithmetic
    would give. A zero variance gives theta = pi/2 (the kernel is 0 there).
    """
    prod = v1 * v2
    gap = prod - k12 * k12
    eps = jnp.finfo(k12.dtype).eps
    collinear = gap <= 16 * eps * prod
    sine = jnp.sqrt(jnp.where(collinear, 0.0, gap))  # sqrt(K11 K22) sin(theta)
    positive = prod > 0
    cos = jnp.clip(jnp.where(positive, k12 / jnp.sqrt(jnp.where(positive, prod, 1.0)), 0.0), -1.0, 1.0)
    theta = jnp.where(collinear & positive, jnp.where(k12 > 0, 0.0, jnp.pi), _acos(cos, jnp))
    nngp = (sine + (jnp.pi - theta) * k12) / (2 * jnp.pi)
    dot = (jnp.pi - theta) / (2 * jnp.pi) if derivative else None
    return nngp, dot


def _erf_map(k12, v1, v2, jnp, derivative: bool):
    d = (1.0 + 2.0 * v1) * (1.0 + 2.0 * v2)
    nngp = (2.0 / jnp.pi) * _asin(jnp.clip(2.0 * k12 / jnp.sqrt(d), -1.0, 1.0), jnp)
    dot = (4.0 / jnp.pi) / jnp.sqrt(d - 4.0 * k12 * k12) if derivative else None
    return nngp, dot


def _gelu_nngp(k12, v1, v2, jnp):
    """E[u Phi(u) v Phi(v)]: u Phi(u) v Phi(v) = u v 1{u - g1 > 0} 1{v - g2 > 0} with g1, g2 ~ N(0, 1)
    independent. Regress (u, v) on (s, t) = (u - g1, v - g2), then use the orthant moments of (s, t)."""
    a, b, c = v1, v2, k12
    sa, sb = 1.0 + a, 1.0 + b  # var s, var t; cov(s, t) = c; cov([u, v], [s, t]) = [[a, c], [c, b]]
    det = sa * sb - c * c
    # A = M Sigma^-1 with M = [[a, c], [c, b]], Sigma^-1 = [[sb, -c], [-c, sa]] / det
    a11, a12 = (a * sb - c * c) / det, (c * sa - a * c) / det
    a21, a22 = (c * sb - b * c) / det, (b * sa - c * c) / det
    # cov(e1, e2) = c - (A M^T)_12 = c - (a11 c + a12 b)
    e12 = c - (a11 * c + a12 * b)
    ss, st = jnp.sqrt(sa), jnp.sqrt(sb)
    r = c / (ss * st)
    asr, root = _asin(r, jnp), jnp.sqrt(1.0 - r * r)
    p = 0.25 + asr / (2 * jnp.pi)
    m_ss = sa * (p + r * root / (2 * jnp.pi))
    m_tt = sb * (p + r * root / (2 * jnp.pi))
    m_st = ss * st * (r * p + root / (2 * jnp.pi))
    return e12 * p + a11 * a21 * m_ss + (a11 * a22 + a12 * a21) * m_st + a12 * a22 * m_tt


def _gelu_map(k12, v1, v2, jnp, derivative: bool):
    if not derivative:
        return _gelu_nngp(k12, v1, v2, jnp), None
    # Price's theorem: E[phi'(u) phi'(v)] = d/dK12 E[phi(u) phi(v)] at fixed variances.
    nngp, dot = jax.jvp(lambda c: _gelu_nngp(c, v1, v2, jnp), (k12,), (jnp.ones_like(k12),))
    return nngp, dot


_MAPS = {"relu": _relu_map, "erf": _erf_map, "gelu": _gelu_map}


# ----------------------------------------------------------------------------------------------
# The recursions. Layout: pixel axes first, pair-batch axes last.
#   full: (H, W, H', W', *batch)    diag: (H, W, *batch)    vec: (*batch)
# A "self" pass has one batch axis (n inputs, paired with themselves); a "cross" pass two (n1, n2).


def _shifted_mean(x, axes: tuple[int, int], k: int, s: int, padding: str, size: int, jnp, lax):
    """(1/k) sum_o x[i*s + o - lo, j*s + o - lo] along the two `axes` (a pixel pair), zero padded."""
    out, lo, hi = _conv_out(size, k, s, padding)
    if lo or hi:
        pads = [(0, 0, 0)] * x.ndim
        for ax in axes:
            pads[ax] = (lo, hi, 0)
        x = lax.pad(x, jnp.zeros((), x.dtype), pads)
    total = None
    for o in range(k):
        start = [0] * x.ndim
        limit = list(x.shape)
        strides = [1] * x.ndim
        for ax in axes:
            start[ax], limit[ax], strides[ax] = o, o + s * (out - 1) + 1, s
        piece = lax.slice(x, start, limit, strides)
        total = piece if total is None else total + piece
    return total / k


def _conv_op(x, op: Affine, mode: str, spatial: tuple[int, int], jnp, lax):
    (kh, kw), (sh, sw) = op.kernel_size, op.strides
    if mode == FULL:
        x = _shifted_mean(x, (0, 2), kh, sh, op.padding, spatial[0], jnp, lax)
        return _shifted_mean(x, (1, 3), kw, sw, op.padding, spatial[1], jnp, lax)
    x = _shifted_mean(x, (0, 0), kh, sh, op.padding, spatial[0], jnp, lax)
    return _shifted_mean(x, (1, 1), kw, sw, op.padding, spatial[1], jnp, lax)


def _pool_axis(x, axis: int, w: int, s: int, lax):
    window = [1] * x.ndim
    strides = [1] * x.ndim
    window[axis], strides[axis] = w, s
    return lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, "VALID") / w


def _pool_op(x, op: AvgPool, lax):
    (wh, ww), (sh, sw) = op.window, op.strides
    for axis, w, s in ((0, wh, sh), (2, wh, sh), (1, ww, sw), (3, ww, sw)):
        x = _pool_axis(x, axis, w, s, lax)
    return x


def _diagonal(x, jnp):
    """Equal-pixel entries of a full tensor: (H, W, H, W, *b) -> (H, W, *b)."""
    h, w = x.shape[0], x.shape[1]
    hi = jnp.arange(h)[:, None]
    wi = jnp.arange(w)[None, :]
    return x[hi, wi, hi, wi]


def _mean_pixels(x, mode: str, jnp):
    if mode == FULL:
        return jnp.mean(x, axis=(0, 1, 2, 3))
    if mode == DIAG:
        return jnp.mean(x, axis=(0, 1))
    return x


# Stages. Each op of a plan runs as its own compiled function: compiled as one program, XLA's CPU
# fusion inlines the elementwise maps and shifted sums of earlier layers into the slices of later
# ones and recomputes them many times over (measured: 10-50x slower), optimization barriers or not.
# An affine op's scaling is left pending and applied inside the next stage, usually the activation.


@functools.partial(jax.jit, static_argnames=("mode", "self_only"))
def _stage_input(x1, x2, mode: str, self_only: bool):
    return _input_cov(x1, x2, mode, jnp, self_only)


@functools.partial(jax.jit, static_argnames=("window", "mode", "spatial"))
def _stage_linear(x, window: Affine, mode: str, spatial: tuple):
    return _conv_op(x, window, mode, spatial, jnp, lax)


def _window(op: Affine) -> Affine:
    """The part of a convolution its linear map depends on (so layers alike share compiled stages)."""
    return Affine(1, kernel_size=op.kernel_size, strides=op.strides, padding=op.padding)


@functools.partial(jax.jit, static_argnames=("op",))
def _stage_pool(x, op: AvgPool):
    return _pool_op(x, op, lax)


@functools.partial(jax.jit, static_argnames=("mode",))
def _stage_reduce(x, mode: str):
    return _mean_pixels(x, mode, jnp)


@jax.jit
def _stage_diagonal(x):
    return _diagonal(x, jnp)


@dataclass(frozen=True)
class _Pending:
    """The scaling of an affine op, applied to its linear parts (A(K), A(T)) by the next stage:

        K <- w2 A(K) + b2,   T <- w2 A(T) + tw A(K) + tb

    tw A(K) + tb is the NTK of the layer's own weights and bias (`_tangent_scales`). The numbers
    travel as a traced array, so layers with different scales share compiled stages."""

    coefficients: tuple[float, float, float, float]  # w2, b2, tw, tb
    start: bool  # no incoming T (the first affine layer): A(T) = 0


def _apply_pending(coef, start: bool, ak, at):
    if coef is None:
        return ak, at
    w2, b2, tw, tb = coef[0], coef[1], coef[2], coef[3]
    k = w2 * ak + b2
    if at is None and not start:
        return k, None
    base = 0.0 if at is None else w2 * at
    return k, base + tw * ak + tb


def _coef(pending: _Pending | None, dtype):
    return None if pending is None else jnp.asarray(pending.coefficients, dtype)


@functools.partial(jax.jit, static_argnames=("start", "with_t"))
def _stage_combine(ak, at, coef, start: bool, with_t: bool):
    return _apply_pending(coef, start, ak, at if with_t else None)


@functools.partial(jax.jit, static_argnames=("name", "mode", "start", "with_t"))
def _stage_act_cross(k, t, v1, v2, coef, name: str, mode: str, start: bool, with_t: bool):
    k, t = _apply_pending(coef, start, k, t)
    if mode == FULL:
        v1, v2 = v1[:, :, None, None, :, None], v2[None, None, :, :, None, :]
    else:
        v1, v2 = v1[..., :, None], v2[..., None, :]
    k, dot = _MAPS[name](k, v1, v2, jnp, with_t)
    return k, (t * dot if with_t else None)


@functools.partial(jax.jit, static_argnames=("name", "mode"))
def _stage_act_self(k, coef, name: str, mode: str):
    k, _ = _apply_pending(coef, False, k, None)
    own = _diagonal(k, jnp) if mode == FULL else k  # (H, W, n) or (n,)
    if mode == FULL:
        v1, v2 = own[:, :, None, None, :], own[None, None, :, :, :]
    else:
        v1 = v2 = own
    k, _ = _MAPS[name](k, v1, v2, jnp, False)
    return k, own


def _tangent_scales(op: Affine, fan_in: int) -> tuple[float, float]:
    """The NTK terms of an affine layer's own parameters, from the multipliers of engine/layers.py:
    weight: mult_w^2 fan_in (times A(K)), bias: mult_b^2. ntk: w^2 and b^2; standard: fan_in and 1
    (the NTK grows with the width); taylor k: w^2 fan_in^((k-1)/(k+1)) and b^2."""
    from types import SimpleNamespace

    from ntklab.engine.layers import parameterization_scales

    scales = parameterization_scales(
        SimpleNamespace(parameterization=op.parameterization, param_order=op.param_order, w_std=op.w_std,
                        b_std=op.b_std),
        fan_in,
    )  # fmt: skip
    tw = scales.weight_multiplier**2 * fan_in
    tb = 0.0 if op.b_std is None else scales.bias_multiplier**2
    return float(tw), float(tb)


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
        return _stage_combine(k, t, _coef(pending, k.dtype), pending.start, t is not None or pending.start)

    def run(self, plan: Plan, k, t, pending, mode: str, shape: _Shape, after: str):
        _, needs = _needs(plan, after)
        for i, (op, need) in enumerate(zip(plan, needs)):
            need_out = needs[i + 1] if i + 1 < len(needs) else after
            if mode == FULL and need == DIAG:
                k = _stage_diagonal(k)
                t = None if t is None else _stage_diagonal(t)
                mode = DIAG
            if isinstance(op, Affine):
                k, t = self._settle(k, t, pending)
                if op.kernel_size is None:
                    fan_in = shape.channels
                    shape = _Shape((), op.out_channels)
                else:
                    fan_in = shape.channels * op.kernel_size[0] * op.kernel_size[1]
                    sp = shape.spatial
                    k = _stage_linear(k, _window(op), mode, sp)
                    t = None if t is None else _stage_linear(t, _window(op), mode, sp)
                    shape = _Shape(
                        tuple(_conv_out(n, kk, s, op.padding)[0] for n, kk, s in zip(sp, op.kernel_size, op.strides)),
                        op.out_channels,
                    )
                tw, tb = _tangent_scales(op, fan_in)
                b2 = 0.0 if op.b_std is None else op.b_std**2
                pending = _Pending((op.w_std**2, b2, tw, tb), start=t is None and self.with_ntk)
            elif isinstance(op, Activation):
                if self.record:
                    k, own = _stage_act_self(k, _coef(pending, k.dtype), op.name, mode)
                    self.variances.append(own)
                else:
                    v1, v2 = self.variances[self.act_index]
                    self.act_index += 1
                    with_t = t is not None or (pending is not None and pending.start)
                    start = pending is not None and pending.start
                    k, t = _stage_act_cross(k, t, v1, v2, _coef(pending, k.dtype), op.name, mode, start, with_t)
                pending = None
            elif isinstance(op, AvgPool):
                k, t = self._settle(k, t, pending)
                pending = None
                k = _stage_pool(k, op)
                t = None if t is None else _stage_pool(t, op)
                shape = _Shape(
                    tuple((n - w) // s + 1 for n, w, s in zip(shape.spatial, op.window, op.strides)), shape.channels
                )
            elif isinstance(op, (GlobalAvgPool, Flatten)):
                k, t = self._settle(k, t, pending)
                pending = None
                k = _stage_reduce(k, mode)
                t = None if t is None else _stage_reduce(t, mode)
                channels = shape.channels
                if isinstance(op, Flatten):
                    channels *= math.prod(shape.spatial)
                mode, shape = VEC, _Shape((), channels)
            elif isinstance(op, Residual):
                k, t = self._settle(k, t, pending)
                pending = None
                outs = [self.run(branch, k, t, None, mode, shape, need_out) for branch in op.branches]
                out_mode = min((o[2] for o in outs), key=[VEC, DIAG, FULL].index)
                k_sum = t_sum = None
                for kb, tb, mb, _ in outs:
                    if mb == FULL and out_mode == DIAG:
                        kb = _stage_diagonal(kb)
                        tb = None if tb is None else _stage_diagonal(tb)
                    k_sum = kb if k_sum is None else k_sum + kb
                    if tb is not None:
                        t_sum = tb if t_sum is None else t_sum + tb
                k, t, mode, shape = k_sum, t_sum, out_mode, outs[0][3]
        k, t = self._settle(k, t, pending)
        return k, t, mode, shape


def _input_shape_of(x_shape: tuple[int, ...]) -> _Shape:
    if len(x_shape) == 1:
        return _Shape((), x_shape[0])
    if len(x_shape) == 3:
        return _Shape(tuple(x_shape[:2]), x_shape[2])
    raise ValueError(f"inputs must be (n, d) vectors or (n, height, width, channels) images, got {x_shape}")


def _input_cov(x1, x2, mode: str, jnp, self_only: bool):
    """Covariance of the inputs, normalized by the channel count (the fan-in convention)."""
    if x1.ndim == 2:  # vectors
        d = x1.shape[1]
        if self_only:
            return jnp.sum(x1 * x1, axis=1) / d
        return x1 @ x2.T / d
    c = x1.shape[-1]
    if mode == VEC:  # flattened images
        f1 = x1.reshape(x1.shape[0], -1)
        if self_only:
            return jnp.sum(f1 * f1, axis=1) / f1.shape[1]
        return f1 @ x2.reshape(x2.shape[0], -1).T / f1.shape[1]
    if mode == DIAG:
        if self_only:
            return jnp.einsum("nhwc,nhwc->hwn", x1, x1) / c
        return jnp.einsum("ahwc,bhwc->hwab", x1, x2) / c
    if self_only:
        return jnp.einsum("nhwc,nxyc->hwxyn", x1, x1) / c
    return jnp.einsum("ahwc,bxyc->hwxyab", x1, x2) / c


def _start_mode(plan: Plan, x_ndim: int) -> str:
    """How the input covariance is stored; a plan that starts by flattening images starts with vectors."""
    need, _ = _needs(plan, VEC)
    if x_ndim == 2 or (need == DIAG and isinstance(plan[0], Flatten)):
        return VEC
    return need


def _validate(plan: Plan, x_shape: tuple[int, ...]) -> None:
    if _shapes(plan, _input_shape_of(x_shape)).spatial:
        raise ValueError("the plan must end with vector outputs (Flatten or GlobalAvgPool, then Dense)")


def _self_variances(plan: Plan, x) -> list:
    """Per-input variances at every activation of the plan, pixel axes first, inputs last."""
    mode = _start_mode(plan, x.ndim)
    walk = _Walk(with_ntk=False, variances=None)
    k0 = _stage_input(x, x, mode, True)
    walk.run(plan, k0, None, None, mode, _input_shape_of(x.shape[1:]), VEC)
    return walk.variances


def _cross(plan: Plan, x1, x2, vars1, vars2, with_ntk: bool):
    mode = _start_mode(plan, x1.ndim)
    walk = _Walk(with_ntk=with_ntk, variances=list(zip(vars1, vars2)))
    k0 = _stage_input(x1, x2, mode, False)
    k, t, _, _ = walk.run(plan, k0, None, None, mode, _input_shape_of(x1.shape[1:]), VEC)
    return k, t


# ----------------------------------------------------------------------------------------------
# Public API.


class BlockSink(Protocol):
    """Where tiles of a kernel go: an in-memory array, or an out-of-core store that can resume."""

    def has_block(self, i0: int, j0: int) -> bool: ...

    def write_block(self, i0: int, j0: int, blocks: dict[str, np.ndarray]) -> None: ...


class MemorySink:
    """Collects the tiles into dense (n1, n2) arrays; mirrors them for symmetric kernels."""

    def __init__(self, n1: int, n2: int, which: Sequence[str], dtype, symmetric: bool):
        self.arrays = {w: np.zeros((n1, n2), dtype) for w in which}
        self.done: set[tuple[int, int]] = set()
        self.symmetric = symmetric

    def has_block(self, i0: int, j0: int) -> bool:
        return (i0, j0) in self.done

    def write_block(self, i0: int, j0: int, blocks: dict[str, np.ndarray]) -> None:
        for name, block in blocks.items():
            b1, b2 = block.shape
            self.arrays[name][i0 : i0 + b1, j0 : j0 + b2] = block
            if self.symmetric and i0 != j0:
                self.arrays[name][j0 : j0 + b2, i0 : i0 + b1] = block.T
        self.done.add((i0, j0))


def default_tile(plan: Plan, x_shape: tuple[int, ...], dtype) -> int:
    """The tile side: for pixel-pair tensors, about 2 MB per tensor, so that a layer's passes stay in
    cache (measured on the CNTK: tiles 4x larger run 2-10x slower per entry); for vectors, large
    tiles (one matrix product per layer)."""
    shape = _input_shape_of(tuple(x_shape))
    mode = _start_mode(plan, len(x_shape) + 1)
    if mode == VEC:
        return 2048
    per_pair = math.prod(shape.spatial) ** (2 if mode == FULL else 1) * np.dtype(dtype).itemsize
    side = int(math.sqrt((2 << 20) / per_pair))
    # A pair axis shorter than a vector register makes the innermost loops short: below 4, one pair
    # per tile (the pixel axes innermost) is faster (16x16 CNTK: 2x).
    return 1 if side < 4 else min(side, 2048)


def tiles(n1: int, n2: int, tile: int, symmetric: bool) -> Iterator[tuple[int, int]]:
    """Tile origins (i0, j0) in row-major order; the upper triangle only for a symmetric kernel."""
    for i0 in range(0, n1, tile):
        for j0 in range(i0 if symmetric else 0, n2, tile):
            yield i0, j0


def analytic_kernel(
    plan: Plan,
    x1: np.ndarray,
    x2: np.ndarray | None = None,
    which: Sequence[Which] = ("nngp", "ntk"),
    dtype: str = "float64",
    tile: int | None = None,
    sink: BlockSink | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray] | None:
    """The NNGP and/or NTK of `plan` between inputs x1 (n1, ...) and x2 (n2, ...), x2 = x1 when None.

    Inputs are (n, d) vectors or (n, height, width, channels) images. The kernel is computed in
    tiles of `tile` x `tile` pairs (default: from a memory budget); for x2 = None only the upper
    triangle of tiles is computed. Tiles go to `sink` (default: in memory, returned as a dict of
    (n1, n2) arrays); a sink that already has a tile is not asked again, so a run resumes.
    `should_stop` is polled between tiles: when it says True the function returns None.
    """
    which = tuple(which)
    if not which or any(w not in ("nngp", "ntk") for w in which):
        raise ValueError(f"which must name nngp and/or ntk, got {which}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    symmetric = x2 is None
    x1 = np.asarray(x1)
    x2 = x1 if symmetric else np.asarray(x2)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 have different input shapes: {x1.shape[1:]} and {x2.shape[1:]}")
    _validate(plan, x1.shape[1:])
    n1, n2 = len(x1), len(x2)
    tile = tile or default_tile(plan, x1.shape[1:], dtype)
    t1, t2 = min(tile, n1), min(tile, n2)
    own = sink is None
    if own:
        sink = MemorySink(n1, n2, which, np.dtype(dtype), symmetric)
    origins = list(tiles(n1, n2, tile, symmetric))

    with jax.enable_x64(dtype == "float64"):
        self_fn = functools.partial(_self_variances, plan)
        cross_fn = functools.partial(_cross, plan, with_ntk="ntk" in which)
        x1j = jax.numpy.asarray(x1, dtype)
        x2j = x1j if symmetric else jax.numpy.asarray(x2, dtype)

        def variances(x, n, t):
            # Per-input variances of all inputs, computed in chunks of the tile size (padded to it).
            chunks = []
            for i0 in range(0, n, t):
                xs = _padded(x, i0, t)
                chunks.append(self_fn(xs))
            return [jax.numpy.concatenate([c[a] for c in chunks], axis=-1) for a in range(len(chunks[0]))]

        todo = [(i0, j0) for i0, j0 in origins if not sink.has_block(i0, j0)]
        if not todo:
            return sink.arrays if own else None
        vars1 = variances(x1j, n1, t1)
        vars2 = vars1 if symmetric else variances(x2j, n2, t2)
        done = len(origins) - len(todo)
        for i0, j0 in todo:
            if should_stop is not None and should_stop():
                return None
            a, b = _padded(x1j, i0, t1), _padded(x2j, j0, t2)
            va = [_padded_last(v, i0, t1) for v in vars1]
            vb = [_padded_last(v, j0, t2) for v in vars2]
            k, t = cross_fn(a, b, va, vb)
            b1, b2 = min(t1, n1 - i0), min(t2, n2 - j0)
            out = {}
            for name, value in (("nngp", k), ("ntk", t)):
                if name in which:
                    block = np.asarray(value)[:b1, :b2]
                    if symmetric and i0 == j0:  # the upper triangle, mirrored: exactly symmetric
                        block = np.triu(block) + np.triu(block, 1).T
                    out[name] = block
            sink.write_block(i0, j0, out)
            done += 1
            if progress is not None:
                progress(done, len(origins))
    return sink.arrays if own else None


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


def kernel_from_config(
    config, x1: np.ndarray, x2: np.ndarray | None = None, which: Sequence[Which] = ("nngp", "ntk"), **kwargs
) -> dict[str, np.ndarray] | None:
    """`analytic_kernel` of the plan of a model config (engine/config.py) on these inputs."""
    return analytic_kernel(plan_from_config(config, np.shape(x1)[1:]), x1, x2, which, **kwargs)


class AnalyticBlocks:
    """The analytic kernel as a block function for the `kernel` task (engine/kernels.py): features
    of a batch are its inputs; a block between a batch and itself is computed as a symmetric kernel."""

    outputs = 1

    def __init__(self, plan: Plan, which: Which, dtype: str, batch_size: int, tile: int | None = None):
        self.plan, self.which, self.dtype, self.tile = plan, which, dtype, tile
        self.batch_size = batch_size

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def block(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        same = f1 is f2 or (f1.shape == f2.shape and np.array_equal(f1, f2))
        out = analytic_kernel(self.plan, f1, None if same else f2, (self.which,), self.dtype, self.tile)
        return out[self.which]

    def feature_bytes(self) -> int:
        return 0
