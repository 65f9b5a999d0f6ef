"""The stages of the layer-wise kernel recursions (Neal 1996; Lee et al. 2018; Jacot et al. 2018;
Arora et al. 2019), each its own compiled function; engine/kernel_walk.py strings them together.

    Affine   K <- w^2 A(K) + b^2
             ntk:      T <- w^2 A(T) + w^2 A(K) + b^2
             standard: T <- w^2 A(T) + fan_in A(K) + [has bias]
             taylor k: T <- w^2 A(T) + w^2 fan_in^((k-1)/(k+1)) A(K) + b^2
    act      K <- E[phi(u) phi(v)],  T <- T * E[phi'(u) phi'(v)]   (engine/kernel_maps.py)

where A is the identity for Dense and, for a convolution, the mean of K over the k x k window
shifted along both pixels of a pixel pair (zero padding included), matching the fan-in
normalization of the finite layers (engine/layers.py).

Layout: pixel axes first, pair-batch axes last, so the elementwise maps and the shifted sums run
over contiguous batches:
    full: (H, W, H', W', *batch)    diag: (H, W, *batch)    vec: (*batch)
A "self" pass has one batch axis (n inputs, paired with themselves); a "cross" pass two (n1, n2).
"""

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ntklab.engine.kernel_maps import MAPS
from ntklab.engine.layers import parameterization_scales
from ntklab.engine.plan import Conv, Dense, conv_output_size

FULL, DIAG, VEC = "full", "diag", "vec"  # all pixel pairs; equal pixels only; no pixels (vectors)
Window = tuple  # (kernel_size, strides, padding) of a convolution


def _input_cov(x1, x2, mode: str, self_only: bool):
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


#   full: (H, W, H', W', *batch)    diag: (H, W, *batch)    vec: (*batch)
# A "self" pass has one batch axis (n inputs, paired with themselves); a "cross" pass two (n1, n2).


def _shifted_mean(x, axes: tuple[int, int], k: int, s: int, padding: str, size: int):
    """(1/k) sum_o x[i*s + o - lo, j*s + o - lo] along the two `axes` (a pixel pair), zero padded."""
    out, lo, hi = conv_output_size(size, k, s, padding)
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


def _conv_op(x, window: Window, mode: str, spatial: tuple[int, int]):
    (kh, kw), (sh, sw), padding = window
    if mode == FULL:
        x = _shifted_mean(x, (0, 2), kh, sh, padding, spatial[0])
        return _shifted_mean(x, (1, 3), kw, sw, padding, spatial[1])
    x = _shifted_mean(x, (0, 0), kh, sh, padding, spatial[0])
    return _shifted_mean(x, (1, 1), kw, sw, padding, spatial[1])


def _pool_axis(x, axis: int, w: int, s: int):
    window = [1] * x.ndim
    strides = [1] * x.ndim
    window[axis], strides[axis] = w, s
    return lax.reduce_window(x, np.array(0, x.dtype), lax.add, window, strides, "VALID") / w


def _pool_op(x, window: tuple[int, int], strides: tuple[int, int]):
    (wh, ww), (sh, sw) = window, strides
    for axis, w, s in ((0, wh, sh), (2, wh, sh), (1, ww, sw), (3, ww, sw)):
        x = _pool_axis(x, axis, w, s)
    return x


def _diagonal(x):
    """Equal-pixel entries of a full tensor: (H, W, H, W, *b) -> (H, W, *b)."""
    h, w = x.shape[0], x.shape[1]
    hi = jnp.arange(h)[:, None]
    wi = jnp.arange(w)[None, :]
    return x[hi, wi, hi, wi]


def _mean_pixels(x, mode: str):
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
def stage_input(x1, x2, mode: str, self_only: bool):
    return _input_cov(x1, x2, mode, self_only)


@functools.partial(jax.jit, static_argnames=("window", "mode", "spatial"))
def stage_linear(x, window: Window, mode: str, spatial: tuple):
    """A convolution's A(.) (`window` from `conv_window`, so layers alike share compiled stages)."""
    return _conv_op(x, window, mode, spatial)


def conv_window(op: Conv) -> Window:
    return (op.kernel_size, op.strides, op.padding)


@functools.partial(jax.jit, static_argnames=("window", "strides"))
def stage_pool(x, window: tuple[int, int], strides: tuple[int, int]):
    return _pool_op(x, window, strides)


@functools.partial(jax.jit, static_argnames=("mode",))
def stage_reduce(x, mode: str):
    return _mean_pixels(x, mode)


@jax.jit
def stage_diagonal(x):
    return _diagonal(x)


@dataclass(frozen=True)
class Pending:
    """The scaling of an affine op, applied to its linear parts (A(K), A(T)) by the next stage:

        K <- w2 A(K) + b2,   T <- w2 A(T) + tw A(K) + tb

    tw A(K) + tb is the NTK of the layer's own weights and bias (`tangent_scales`). The numbers
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


def coefficients(pending: Pending | None, dtype):
    return None if pending is None else jnp.asarray(pending.coefficients, dtype)


@functools.partial(jax.jit, static_argnames=("start", "with_t"))
def stage_combine(ak, at, coef, start: bool, with_t: bool):
    return _apply_pending(coef, start, ak, at if with_t else None)


@functools.partial(jax.jit, static_argnames=("name", "mode", "start", "with_t"))
def stage_act_cross(k, t, v1, v2, coef, name: str, mode: str, start: bool, with_t: bool):
    k, t = _apply_pending(coef, start, k, t)
    if mode == FULL:
        v1, v2 = v1[:, :, None, None, :, None], v2[None, None, :, :, None, :]
    else:
        v1, v2 = v1[..., :, None], v2[..., None, :]
    k, dot = MAPS[name](k, v1, v2, jnp, with_t)
    return k, (t * dot if with_t else None)


@functools.partial(jax.jit, static_argnames=("name", "mode"))
def stage_act_self(k, coef, name: str, mode: str):
    k, _ = _apply_pending(coef, False, k, None)
    own = _diagonal(k) if mode == FULL else k  # (H, W, n) or (n,)
    if mode == FULL:
        v1, v2 = own[:, :, None, None, :], own[None, None, :, :, :]
    else:
        v1 = v2 = own
    k, _ = MAPS[name](k, v1, v2, jnp, False)
    return k, own


def tangent_scales(op: Dense | Conv, fan_in: int) -> tuple[float, float]:
    """The NTK terms of an affine layer's own parameters, from the multipliers of engine/layers.py:
    weight: mult_w^2 fan_in (times A(K)), bias: mult_b^2. ntk: w^2 and b^2; standard: fan_in and 1
    (the NTK grows with the width); taylor k: w^2 fan_in^((k-1)/(k+1)) and b^2."""
    scales = parameterization_scales(op.init, fan_in)
    tw = scales.weight_multiplier**2 * fan_in
    tb = 0.0 if op.init.b_std is None else scales.bias_multiplier**2
    return float(tw), float(tb)
