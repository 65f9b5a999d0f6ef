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
  convolution's patches are its (strided) input pixels; others are cut by
  `conv_general_dilated_patches`.
- `positional` (a convolution with few output positions D): Σ_{p,q,γ} ⟨patch_ipγ, patch_jqγ⟩
  ⟨g_iopγ, g_jo'qγ⟩ from patch Grams and cotangent Grams per pair of positions. It costs
  ~n²D²(K + m·C) instead of (n·m)²·K·C: the cheaper for the late layers of a CIFAR network
  (4×4 or 2×2 positions, hundreds of channels), where most parameters are.
- `affine` (BatchNorm in evaluation mode, y = x̂·γ + β with x̂ = (x - μ)/√(σ² + ε) from the frozen
  statistics): the gradients are Σ_p g_p x̂_p for γ and Σ_p g_p for β, 2C numbers per example and
  output, contracted as Jacobians.

The costs (FLOPs of the features of one batch and of one block; bytes of the features of one batch
and of the largest intermediate of a block) choose a convolution's rule and size the blocks to the
memory budget (engine/entk.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ntklab.engine.entk_structure import Layer


# The positional rule's block takes its rows in this many sequential groups: its intermediates
# (n1·n2·D·m·C numbers per layer, and XLA's transposed copies of them) would otherwise dominate
# the memory of a block, 10.8 GiB for VGG-11's at n = 64 (XLA's memory analysis).
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


def rule_cost(layer: Layer, rule: str, m: int, n: int, trace: bool) -> tuple[float, float, float, float]:
    """(FLOPs of the features of one batch of n, FLOPs of one n x n block, numbers in the features
    of one batch, numbers in the largest intermediate of a block)."""
    cols = n * (1 if trace else m)
    D, K, C, G = layer.positions, layer.fan_in_size, layer.out_features, layer.groups
    if rule == "dense":
        return 0.0, 2.0 * n * n * K + 3.0 * (n * m) * cols * C, n * (K + m * C), 2.0 * (n * m) * cols
    if rule == "affine":
        return 4.0 * n * m * D * C, 2.0 * (n * m) * cols * 2 * C, n * m * 2 * C, 0.0
    bias = C if layer.bias_multiplier else 0
    if rule == "explicit":  # weight gradients K·C per (example, output), then their Gram
        q = K * C + bias
        patches = n * D * K * G
        return 2.0 * n * m * D * K * C, 2.0 * (n * m) * cols * q, n * m * q, float(patches)
    # positional: patch Grams per position pair, then cotangent Grams; the largest intermediate is
    # one row group's, counted four times: XLA's buffers hold up to ~3.5 copies of it (transposes;
    # its memory analysis of VGG-11's block and of tests/kernels/test_entk_zoo.py's)
    patch_gram = 2.0 * n * n * D * D * K * G
    rows = -(-n // ROW_STEPS)
    if trace:
        flops = patch_gram + 2.0 * n * n * D * D * m * C
        largest = 4.0 * rows * n * D * D * G
    else:
        flops = patch_gram + 2.0 * n * n * D * D * m * C + 2.0 * (n * m) * cols * D * C
        largest = 4.0 * rows * n * (D * D * G + D * m * C)
    return 0.0, flops + 2.0 * (n * m) * cols * bias, n * D * (K * G + m * C) + n * m * bias, largest


def choose_rule(layer: Layer, m: int, n: int, trace: bool) -> str:
    """The rule of fewest FLOPs for n x n blocks (features of both batches and the block)."""
    def flops(rule: str) -> float:
        features, block, _, _ = rule_cost(layer, rule, m, n, trace)
        return 2 * features + block

    layer.rule = min(rule_options(layer), key=flops)
    return layer.rule


# ----------------------------------------------------------------------------------------------
# Features and blocks


def _patches(layer: Layer, a: jax.Array) -> jax.Array:
    """(n, positions, groups, fan_in per group) inputs of a convolution's matmul: kernel-sized
    patches, grouped by channel group (the patches' features are channel-major)."""
    n = a.shape[0]
    conv = layer.layer
    kh, kw, _, _ = conv.weight.shape
    if (kh, kw) == (1, 1):  # no padding either way: SAME pads nothing for a 1x1 kernel
        patches = a[:, :: conv.strides[0], :: conv.strides[1], :]
    else:
        patches = jax.lax.conv_general_dilated_patches(a, (kh, kw), conv.strides, conv.padding,
                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    return patches.reshape(n, -1, layer.groups, layer.fan_in_size)


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
        return {"j": jnp.concatenate([jnp.sum(g * x_hat, axis=2), jnp.sum(g, axis=2)], axis=-1)}
    patches = _patches(layer, a)  # (n, D, G, K)
    G = layer.groups
    bias = [cb * jnp.sum(g, axis=2)] if cb else []
    g = g.reshape(n, m, g.shape[2], G, C // G)  # (n, m, D, G, C/G)
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
    def rows(p1: jax.Array, g1: jax.Array) -> jax.Array:  # one row example: (D, G, K), (m, D, G, C)
        patch_gram = jnp.einsum("pgk,jqgk->jpqg", p1, f2["p"])
        if trace:
            return jnp.einsum("jpqg,opgc,joqgc->j", patch_gram, g1, f2["g"])
        h = jnp.einsum("jpqg,joqgc->jpogc", patch_gram, f2["g"])
        return jnp.einsum("apgc,jpbgc->ajb", g1, h)

    k = jax.lax.map(lambda row: rows(*row), (f1["p"], f1["g"]), batch_size=-(-n1 // ROW_STEPS))
    r = 1 if trace else m
    k = k.reshape(n1 * r, n2 * r)
    if "b" in f1:
        k = k + contract(f1["b"], f2["b"], m, trace)
    return k
