"""The contraction rules of the structured empirical NTK: one layer's share of a kernel block.

A tapped layer (engine/entk_structure.py) with input a and output cotangents g = ∂f_o/∂y (one per
example i and output o) contributes Θ_l[(i,o), (j,o')] = ⟨∂f_io/∂θ_l, ∂f_jo'/∂θ_l⟩ to the
kernel. The rules compute it without a per-example backward pass through the parameters:

- `dense` (a Dense layer on vectors, y = c·(a W) + c_b·b): the Jacobian of W is c·a ⊗ g, so
  Θ_l = (c² ⟨a_i, a_j⟩ + c_b²) ⟨g_io, g_jo'⟩, an input Gram times a cotangent Gram, instead of a
  contraction over in·out weights.
- `explicit` (a convolution, any strides and channel groups): the weight gradient of group γ is
  c·Σ_p patch_pγ ⊗ g_pγ over the output positions p, one batched matmul per example and output
  (the weight-gradient half of a backward pass), then a Gram of the flattened gradients. A 1×1
  convolution's patches are its (strided) input pixels; others are the kernel's shifted windows
  of the padded input.
- `positional` (a convolution with few output positions D): Σ_{p,q,γ} ⟨patch_ipγ, patch_jqγ⟩
  ⟨g_iopγ, g_jo'qγ⟩, the patch Gram of every pair of positions times the cotangent Gram of every
  pair of (output, position), two matrix products and a weighted sum. It costs
  ~n²D²(K + m²·C) instead of (n·m)²·K·C: the cheaper where D² < K, the late layers of a CIFAR
  network (4×4 or 2×2 positions, hundreds of channels), where most parameters are. Staging the
  sum instead (patch Gram times the column cotangents, then the row cotangents) takes fewer
  FLOPs, D²(K + m·C) + m²·D·C per pair of examples, but in products batched over examples,
  which XLA's CPU backend runs at a tenth of a plain product's speed: 0.42 s against 0.23 s for
  a 22 x 22 block of a 4×4 layer of 320 -> 1280 channels (a 2-core CPU).
- `affine` (BatchNorm in evaluation mode, y = x̂·γ + β with x̂ = (x - μ)/√(σ² + ε) from the frozen
  statistics): the gradients are Σ_p g_p x̂_p for γ and Σ_p g_p for β, 2C numbers per example and
  output, contracted as Jacobians.

The costs (`RuleCost`: FLOPs and numbers of a rule's features and blocks) choose a convolution's
rule and size the blocks to the memory budget (engine/entk.py).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ntklab.engine.entk_structure import Layer
from ntklab.engine.layers import shifted_windows, strided_pixels


# The positional rule's block takes its rows in this many sequential groups: its cotangent Gram
# (n1·n2·(m·D)² numbers per layer, and the product with the patch Gram) would otherwise dominate
# the memory of a block.
ROW_STEPS = 8


def contract(a: jax.Array, b: jax.Array, m: int, trace: bool) -> jax.Array:
    """Σ over the feature axis of per-(example, output) rows: a (n1, m, q), b (n2, m, q) ->
    (n1·m, n2·m), or (n1, n2) summed over equal outputs when tracing."""
    n1, n2 = a.shape[0], b.shape[0]
    if trace:
        return a.reshape(n1, -1) @ b.reshape(n2, -1).T
    return a.reshape(n1 * m, -1) @ b.reshape(n2 * m, -1).T


def rule_options(layer: Layer) -> tuple[str, ...]:
    if layer.kind == "dense":
        return ("dense",)
    if layer.kind == "batch_norm":
        return ("affine",)
    return ("explicit", "positional")


class RuleCost(NamedTuple):
    """A rule's cost for one batch of n: FLOPs of its features and of one n x n block, numbers in
    its features, in the largest intermediate of computing them, and in the intermediates of its
    share of a block."""

    feature_flops: float
    block_flops: float
    feature_numbers: float
    feature_working: float
    block_working: float


def rule_cost(layer: Layer, rule: str, m: int, n: int, trace: bool) -> RuleCost:
    cols = n * (1 if trace else m)
    D, K, C, G = layer.positions, layer.fan_in_size, layer.out_features, layer.groups
    if rule == "dense":
        return RuleCost(0.0, 2.0 * n * n * K + 3.0 * (n * m) * cols * C, n * (K + m * C), 0.0, 2.0 * (n * m) * cols)
    if rule == "affine":
        return RuleCost(4.0 * n * m * D * C, 2.0 * (n * m) * cols * 2 * C, n * m * 2 * C, 0.0, 0.0)
    bias = C if layer.bias_multiplier else 0
    patches = float(n * D * K * G)
    if rule == "explicit":  # weight gradients K·C per (example, output) from the patches, then their Gram
        q = K * C + bias
        return RuleCost(2.0 * n * m * D * K * C, 2.0 * (n * m) * cols * q, n * m * q, patches, 0.0)
    # positional: the patch Gram and the cotangent Gram of one row group, and their product
    # before it is summed (counted twice), and the column features transposed for the products:
    # XLA's memory analysis of tests/kernels/test_entk_zoo.py's block holds up to two copies of
    # every positional layer's column features at once
    rows = -(-n // ROW_STEPS)
    r = 1 if trace else m
    patch_gram = 2.0 * n * n * D * D * K * G
    cotangent_gram = 2.0 * n * n * D * D * (m if trace else m * m) * C
    flops = patch_gram + cotangent_gram + 2.0 * n * n * D * D * G * r * r
    numbers = n * D * (K * G + m * C) + n * m * bias
    working = 2.0 * (rows * n * D * D * G * r * r + numbers)
    return RuleCost(0.0, flops + 2.0 * (n * m) * cols * bias, numbers, 0.0, working)


def choose_rule(layer: Layer, m: int, n: int, trace: bool) -> str:
    """The rule of fewest FLOPs for n x n blocks (features of both batches and the block)."""
    def flops(rule: str) -> float:
        cost = rule_cost(layer, rule, m, n, trace)
        return 2 * cost.feature_flops + cost.block_flops

    layer.rule = min(rule_options(layer), key=flops)
    return layer.rule


# ----------------------------------------------------------------------------------------------
# Features and blocks


def _windows(layer: Layer, a: jax.Array) -> list[jax.Array]:
    """The shifted windows of a convolution's input, one per kernel tap (layers.shifted_windows)."""
    conv = layer.layer
    return shifted_windows(a, conv.weight.shape[:2], conv.strides, conv.padding)


def _patches(layer: Layer, a: jax.Array) -> jax.Array:
    """(n, positions, groups, fan_in per group) inputs of a convolution's matmul: kernel-sized
    patches, grouped by channel group (the patches' features are channel-major). Cut from shifted
    windows: `conv_general_dilated_patches` is a grouped convolution with a one-hot kernel, which
    XLA's CPU backend computes in 0.20 s for 22 images of 32 x 32 x 144 against 0.13 s so."""
    conv = layer.layer
    if conv.weight.shape[:2] == (1, 1):
        patches = strided_pixels(a, conv.strides)
    else:
        patches = jnp.stack(_windows(layer, a), axis=-1)
    return patches.reshape(a.shape[0], -1, layer.groups, layer.fan_in_size)


def _depthwise_windows(layer: Layer, a: jax.Array) -> jax.Array:
    """(n, taps, positions, channels): what each tap of a depthwise convolution reads."""
    windows = jnp.stack(_windows(layer, a), axis=1)
    return windows.reshape(*windows.shape[:2], -1, windows.shape[-1])


def sum_positions(*factors: jax.Array, axis: int = 2) -> jax.Array:
    """Σ over the positions axis of the product of `factors` (broadcastable, each with all the
    positions on that axis), as a sum over blocks of positions of the sums within them. XLA's CPU
    backend reduces a long axis that is not the minor one, when its operand is a product, at
    ~1 GB/s: BatchNorm's Σ_p g·x̂ for 8 examples of 32 x 32 x 144 and 10 outputs takes 47 ms in
    one level, 2 ms in two (a 2-core CPU)."""
    positions = factors[0].shape[axis]
    inner = max(d for d in range(1, math.isqrt(positions) + 1) if positions % d == 0)
    split = [f.reshape(*f.shape[:axis], positions // inner, inner, *f.shape[axis + 1 :]) for f in factors]
    return jnp.sum(jnp.sum(functools.reduce(operator.mul, split), axis=axis + 1), axis=axis)


def _normalized(layer: Layer, a: jax.Array) -> jax.Array:
    bn = layer.layer
    return (a - bn.running_mean.value) * jax.lax.rsqrt(bn.running_var.value + bn.eps)


def layer_features(layer: Layer, a: jax.Array, g: jax.Array, n: int, m: int) -> dict[str, jax.Array]:
    """What the layer's rule needs from one batch: a (n, *in) its inputs, g (n, m, *out) the cotangents."""
    c, cb = layer.weight_multiplier, layer.bias_multiplier
    if layer.rule == "dense":
        return {"a": c * a.reshape(n, -1), "g": g.reshape(n, m, -1)}
    C = layer.out_features
    g = g.reshape(n, m, -1, C)  # (n, m, D, C)
    if layer.rule == "affine":
        x_hat = _normalized(layer, a).reshape(n, 1, -1, C)
        return {"j": jnp.concatenate([sum_positions(g, x_hat), sum_positions(g)], axis=-1)}
    G = layer.groups
    bias = [cb * sum_positions(g)] if cb else []
    g = g.reshape(n, m, g.shape[2], G, C // G)  # (n, m, D, G, C/G)
    if layer.rule == "explicit" and layer.depthwise:  # products summed over positions, the taps
        # leading: as an einsum, XLA's CPU backend runs a matmul per example and channel (9 x D by
        # D x m), 94 ms for 8 images of 32 x 32 x 144 and 10 outputs, against 117 ms for the
        # products with the taps minor and 37 ms so (a 2-core CPU)
        windows = _depthwise_windows(layer, a)[:, None, :, :, :, None]  # (n, 1, K, D, G, 1)
        weight = c * sum_positions(windows, g[:, :, None], axis=3)
        return {"j": jnp.concatenate([weight.reshape(n, m, -1), *bias], axis=-1)}
    patches = _patches(layer, a)  # (n, D, G, K)
    if layer.rule == "explicit":
        weight = c * jnp.einsum("ndgk,nmdgc->nmgkc", patches, g)
        return {"j": jnp.concatenate([weight.reshape(n, m, -1), *bias], axis=-1)}
    out = {"p": c * patches, "g": g}
    if bias:
        out["b"] = bias[0]
    return out


def layer_block(layer: Layer, f1: dict, f2: dict, m: int, trace: bool) -> jax.Array:
    """The layer's share of the block between two featurized batches."""
    n1, n2 = f1[next(iter(f1))].shape[0], f2[next(iter(f2))].shape[0]
    if layer.rule == "dense":
        gram = f1["a"] @ f2["a"].T + layer.bias_multiplier**2  # (n1, n2)
        g = contract(f1["g"], f2["g"], m, trace)
        if trace:
            return g * gram
        return (g.reshape(n1, m, n2, m) * gram[:, None, :, None]).reshape(n1 * m, n2 * m)
    if layer.rule in ("explicit", "affine"):
        return contract(f1["j"], f2["j"], m, trace)
    # positional: Σ_{p,q,γ} ⟨patch_ipγ, patch_jqγ⟩ ⟨g_iopγ, g_jo'qγ⟩, ROW_STEPS row groups in turn
    def row(p1: jax.Array, g1: jax.Array) -> jax.Array:  # one row example: (D, G, K), (m, D, G, C/G)
        patch_gram = jnp.einsum("pgk,jqgk->gpjq", p1, f2["p"])
        if trace:
            cotangent_gram = jnp.einsum("opgc,joqgc->gpjq", g1, f2["g"])
            return jnp.einsum("gpjq,gpjq->j", patch_gram, cotangent_gram)
        cotangent_gram = jnp.einsum("opgc,jbqgc->gopjbq", g1, f2["g"])
        return jnp.einsum("gpjq,gopjbq->ojb", patch_gram, cotangent_gram)

    k = jax.lax.map(lambda example: row(*example), (f1["p"], f1["g"]), batch_size=-(-n1 // ROW_STEPS))
    r = 1 if trace else m
    k = k.reshape(n1 * r, n2 * r)
    if "b" in f1:
        k = k + contract(f1["b"], f2["b"], m, trace)
    return k
