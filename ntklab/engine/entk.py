"""The empirical neural tangent kernel Θ(x, x') = J(x) J(x')ᵀ of an Equinox model, three ways.

J(x) is the Jacobian of the m logits of one example with respect to the trainable parameters θ
(P numbers). A kernel block between batches X1 (n1 examples) and X2 (n2) is either the full
(n1·m, n2·m) matrix, sample-major (row = example·m + output), or, with `trace=True`, the
(n1, n2) matrix Σ_o Θ_oo.

Implementations (the costs use [FP] for the forward FLOPs of one example):

- `jacobian`: per-example Jacobians by reverse mode (m backward passes per example), contracted
  one parameter tensor at a time. n·m·[FP] + (n1·m)(n2·m)·P.
- `ntvp`: NTK-vector products: for every column (example j, output o) of the block, one VJP of
  example j gives the tangent J(x_j)ᵀ e_o, and one JVP on X1 pushes it forward. No Jacobian is
  stored; n1·n2·m·[FP], good when P·m is large compared to the forward pass.
- `structured`: the layers of the model are instrumented (engine/entk_structure.py): one forward
  pass records each layer's input, m backward passes of the batch give the cotangent ∂f_o/∂y of
  each layer's output y, and each Dense, convolution (strided, 1×1, grouped, depthwise) and
  BatchNorm layer contributes by its own rule (engine/entk_rules.py) without forming the
  Jacobian of the whole network. This is the idea of neural-tangents' structured derivatives
  (Novak et al. 2022) at the level of layers rather than of primitives. Parameters outside such
  layers (custom layers, a layer called twice) fall back to the Jacobian contraction, computed
  in per-example backward passes.
- `auto`: the cheapest of the three by estimated FLOPs, within the memory budget.

Memory: a block is computed in chunks of examples (`chunk`): as few chunks as fit `memory_bytes`
with their features (two chunks), the intermediates of computing them and of contracting them,
and the chunk's block, by the estimates of `footprint`, and of equal size. A chunk is featurized
`sub_batch` examples at a time (the intermediates of a backward pass grow with the examples, its
features do not shrink), so chunks are as large as their features allow: MobileNet v2 at n = 64
and 4 GiB featurizes 2 chunks of 32 in sub-batches of 8, where whole chunks would have been 4
of 16, featurized 7 times (bench/entk_zoo.py). Equal chunks: a batch of 64 in
chunks of 60 would pad its second chunk of 4 to 60, nearly twice the featurized examples and 3.5
times the block FLOPs of two chunks of 32 (ResNet-18 of width 16 in bench/entk_zoo.py, a 4 GiB
budget: 16.0 s against 5.6 s). As ntkgen sizes its blocks to the GPU
(examples = memory / (P·m·24 bytes)), but from every implementation's own footprint: the
Jacobians of a 58M-parameter network take 2.3 GB per example at m = 10, the structured features
of its late layers a few MB. When a block takes more than one chunk its batches are kept as
inputs and the chunks' features are computed in the block, column chunks again for every row
chunk (ntkgen's recomputation, which trades FLOPs for memory); for a batch with itself only the
upper chunk blocks, and each row's last column chunk is the next row's (k(k-1)/2 + 1 chunks
featurized instead of k + k(k-1)/2).

BatchNorm layers follow equinox's convention: `eqx.nn.inference_mode` switches them to their
running statistics, which are not parameters (they are not floating arrays, or they are marked
frozen; see `models.partition_parameters`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.blocks import kernel_block
from ntklab.engine.config import ComputeDtype, Implementation
from ntklab.engine.entk_rules import choose_rule, contract, layer_block, layer_features, rule_cost
from ntklab.engine.entk_structure import Structure, Tape, recording
from ntklab.engine.models import parameter_count, partition_parameters

IMPLEMENTATIONS = tuple(i for i in get_args(Implementation) if i != "auto")
# XLA compiler options of the kernel functions (tests lower the optimization level: their tiny
# kernels are dominated by compile time)
COMPILER_OPTIONS: dict[str, Any] = {}


def _jit(fn: Callable) -> Callable:
    return jax.jit(fn, compiler_options=dict(COMPILER_OPTIONS) or None)


# ----------------------------------------------------------------------------------------------
# Parameters


def evaluation_mode(model: eqx.Module) -> eqx.Module:
    """The model with BatchNorm (and dropout) layers in inference mode: frozen statistics."""
    return eqx.nn.inference_mode(model, True)


def compute_dtype(dtype: ComputeDtype) -> Any:
    """The JAX dtype of a compute precision; float64 needs x64 enabled, else JAX would silently
    compute in float32."""
    if dtype not in get_args(ComputeDtype):
        raise ValueError(f"dtype must be one of {', '.join(get_args(ComputeDtype))}, got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("a float64 kernel needs jax_enable_x64 (wrap the computation in jax.enable_x64(True))")
    return jnp.dtype(dtype)


def cast_floats(tree: Any, dtype: Any) -> Any:
    """A copy of `tree` with every floating array cast to `dtype` (the input is left untouched)."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf, dtype) if eqx.is_inexact_array(leaf) else leaf, tree
    )


# ----------------------------------------------------------------------------------------------
# The kernel function: features of a batch, then blocks between two batches of features


@dataclass
class EmpiricalNTK:
    """Evaluates blocks of the empirical NTK of `model`.

    `features(x)` computes what a block needs from one batch (Jacobians, layer inputs and
    cotangents); `block(f1, f2)` contracts two of them. Features of a batch can be kept and reused
    for every block it takes part in. Batches are padded to `chunk` rows so each function is
    compiled once; `chunk` splits `batch_size` into the fewest equal chunks whose computation fits
    `memory_bytes`.
    """

    model: eqx.Module
    input_shape: tuple[int, ...]
    implementation: Implementation = "auto"
    trace: bool = False
    dtype: ComputeDtype = "float32"
    scale: float = 1.0
    batch_size: int = 64
    memory_bytes: int = 2 << 30
    chosen: str = field(init=False)
    chunk: int = field(init=False)
    sub_batch: int = field(init=False)
    out_dim: int = field(init=False)
    parameters: int = field(init=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        self._dtype = compute_dtype(self.dtype)
        # a copy of the whole model in the compute dtype (frozen statistics included); the
        # caller's model is left as it is
        params, static = partition_parameters(evaluation_mode(cast_floats(self.model, self._dtype)))
        self.parameters = parameter_count(params)
        x = jax.ShapeDtypeStruct((1, *self.input_shape), self._dtype)
        self.out_dim = int(jax.eval_shape(lambda p, x: eqx.combine(p, static)(x), params, x).shape[-1])
        self._structure = Structure.of(params, static, self.input_shape, self._dtype)
        if self.implementation != "auto" and self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown empirical NTK implementation {self.implementation!r}")
        plan = plan_blocks(self._structure, self.out_dim, self.batch_size, self.trace, self.memory_bytes,
                           self._dtype.itemsize, self.input_shape)  # fmt: skip
        candidates = IMPLEMENTATIONS if self.implementation == "auto" else (self.implementation,)
        fitting = [impl for impl in candidates if plan[impl].chunk >= 1]
        if not fitting:
            need = min(plan[impl].bytes_per_example for impl in candidates)
            raise ValueError(f"the empirical NTK ({'/'.join(candidates)}) of this {self.parameters:,}-parameter "
                             f"network needs about {need / 2**20:,.0f} MiB for one example; the memory budget "
                             f"is {self.memory_bytes / 2**20:,.0f} MiB (raise cache_mb)")  # fmt: skip
        self.chosen = min(fitting, key=lambda impl: plan[impl].flops)
        self.chunk, self.sub_batch = plan[self.chosen].chunk, plan[self.chosen].sub_batch
        builder = {"jacobian": _JacobianContraction, "ntvp": _NtkVectorProducts, "structured": _Structured}
        self._impl = builder[self.chosen](params, static, self._structure, self.out_dim, self.trace, self.chunk,
                                          self.sub_batch)  # fmt: skip

    @property
    def outputs(self) -> int:
        """Rows per example in a block: m for full output blocks, 1 when traced."""
        return 1 if self.trace else self.out_dim

    @property
    def chunked(self) -> bool:
        return self.chunk < self.batch_size

    def _pad(self, x: np.ndarray) -> jax.Array:
        padded = np.zeros((self.chunk, *self.input_shape), dtype=np.dtype(self.dtype))
        padded[: len(x)] = x
        return jnp.asarray(padded)

    def features(self, x: np.ndarray) -> Features:
        x = np.asarray(x)
        n = len(x)
        if n > self.batch_size:
            raise ValueError(f"a batch of {n} exceeds the batch size {self.batch_size}")
        if self.chunked:  # featurized chunk by chunk inside each block
            return Features(n, np.asarray(x, np.dtype(self.dtype)))
        return Features(n, self._impl.features(self._pad(x)))

    def block(self, f1: Features, f2: Features) -> np.ndarray:
        """The kernel block between two featurized batches, as a numpy array in the compute dtype."""
        r = self.outputs
        k = self._chunked_block(f1, f2) if self.chunked else np.asarray(self._impl.block(f1.data, f2.data))
        k = k[: f1.n * r, : f2.n * r]
        return k * self.scale if self.scale != 1.0 else k

    def _chunked_block(self, f1: Features, f2: Features) -> np.ndarray:
        """The block chunk by chunk, featurizing the chunks as it goes (two chunks' features held at
        once). A batch with itself takes the upper chunk blocks, mirrored below, and each row's
        columns from right to left: the last column featurized (chunk a + 1) is the next row."""
        c, r = self.chunk, self.outputs
        rows, cols = range(0, f1.n, c), range(0, f2.n, c)
        out = np.zeros((len(rows) * c * r, len(cols) * c * r), np.dtype(self.dtype))
        symmetric = f1 is f2

        def featurize(data: np.ndarray, start: int):
            return self._impl.features(self._pad(data[start : start + c]))

        def tile(a: int, b: int) -> tuple[slice, slice]:
            return slice(a * c * r, (a + 1) * c * r), slice(b * c * r, (b + 1) * c * r)

        next_row = None
        for a, i in enumerate(rows):
            row = featurize(f1.data, i) if next_row is None else next_row
            next_row = None
            for b in range(a if symmetric else 0):
                out[tile(a, b)] = out[tile(b, a)].T
            for b in reversed(range(a, len(cols))) if symmetric else range(len(cols)):
                col = row if symmetric and b == a else featurize(f2.data, cols[b])
                out[tile(a, b)] = np.asarray(self._impl.block(row, col))
                if symmetric and b == a + 1:
                    next_row = col
        return out

    def __call__(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        """The kernel between two arrays of any length, in batches (x2=None: between x1 and itself)."""
        return kernel_block(self, x1, x2)

    def feature_bytes(self) -> int:
        """Bytes held by the features of one batch (for caching decisions)."""
        if self.chunked:
            return self.batch_size * math.prod(self.input_shape) * self._dtype.itemsize
        return self._impl.feature_bytes()


@dataclass
class Features:
    n: int
    data: Any


# ----------------------------------------------------------------------------------------------
# Cost and memory model


@dataclass(frozen=True)
class Footprint:
    """Per implementation and chunk of c examples: FLOPs of the features of one chunk and of one
    c x c block, numbers in the features of one chunk, in the largest intermediate of computing
    them, and in the intermediates of contracting a block (the layers' shares summed: XLA may
    schedule them at once)."""

    feature_flops: float
    block_flops: float
    feature_numbers: float
    feature_working: float
    block_working: float

    def peak(self, c: int, sub_batch: int, m: int, itemsize: int) -> float:
        """Bytes held at once: two chunks' features (a row's are kept while a column's are
        computed) and the larger of featurizing `sub_batch` examples at a time (the intermediates
        grow with the examples) and of contracting a block into its (c·m)² numbers."""
        block = self.block_working + (c * m) ** 2
        return itemsize * (2 * self.feature_numbers + max(self.feature_working * sub_batch / c, block))


def footprint(structure: Structure, impl: str, m: int, c: int, trace: bool, input_size: int) -> Footprint:
    """Estimates from the layer shapes; `structured` sets each layer's rule for chunks of c.

    Featurizing c examples holds the residuals of the forward pass (A numbers per example) and the
    m cotangents of the largest activations, several at a time: XLA's memory analysis of the
    features of bench/entk_zoo.py's networks holds 7 (ResNet-18) to 12 (VGG-11, MobileNet v2)
    largest activations' worth of cotangents per example beyond the residuals, counted here as
    16. Per-example Jacobians also copy the largest parameter tensor's."""
    P, A = structure.parameter_count, structure.activation_size
    fp = structure.forward_flops
    cols = c * (1 if trace else m)
    backward = c * (A + 16.0 * m * structure.largest_activation)
    per_example_jacobian = c * m * structure.largest_tensor
    if impl == "jacobian":
        return Footprint(3.0 * c * m * fp, 2.0 * (c * m) * cols * P, float(c * m * P),
                         backward + per_example_jacobian, 0.0)  # fmt: skip
    if impl == "ntvp":  # per column example: m tangents of size P, m JVPs on the row chunk
        return Footprint(0.0, 3.0 * c * c * m * fp + 2 * 2.0 * c * fp, float(c * input_size), 0.0,
                         2.0 * m * (P + c * A) + c * m * cols)  # fmt: skip
    costs = [rule_cost(layer, choose_rule(layer, m, c, trace), m, c, trace) for layer in structure.layers]
    return Footprint(
        3.0 * c * m * fp + sum(cost.feature_flops for cost in costs),
        2.0 * (c * m) * cols * structure.rest_count + sum(cost.block_flops for cost in costs),
        c * m * structure.rest_count + sum(cost.feature_numbers for cost in costs),
        backward + max((cost.feature_working for cost in costs), default=0.0)
        + (per_example_jacobian if structure.rest_count else 0.0),
        sum(cost.block_working for cost in costs),
    )


@dataclass(frozen=True)
class BlockPlan:
    chunk: int  # 0: not even one example fits
    sub_batch: int  # examples featurized at once, a divisor of chunk
    flops: float  # of one batch_size x batch_size block, features of both batches included
    bytes_per_example: float


def plan_blocks(structure: Structure, m: int, batch_size: int, trace: bool, memory_bytes: int, itemsize: int,
                input_shape: tuple[int, ...]) -> dict[str, BlockPlan]:
    """Per implementation, the chunk (the fewest equal chunks of `batch_size` that fit
    `memory_bytes`, featurized one example at a time if need be), the sub-batch (the largest
    divisor of the chunk featurized at once within the budget) and the FLOPs of a block in such
    chunks: k = ⌈batch/chunk⌉ row chunks featurized once, k² column chunks and k² chunk blocks
    (k = 1: both batches once and one block)."""
    input_size = math.prod(input_shape)
    plans = {}
    for impl in IMPLEMENTATIONS:
        def peak(c: int, sub_batch: int = 1) -> float:
            return footprint(structure, impl, m, c, trace, input_size).peak(c, sub_batch, m, itemsize)

        fitting = _largest_fitting(peak, batch_size, memory_bytes)
        chunk = -(-batch_size // -(-batch_size // fitting)) if fitting else 0
        c = max(chunk, 1)
        cost = footprint(structure, impl, m, c, trace, input_size)
        sub_batch = max(s for s in range(1, c + 1)
                        if c % s == 0 and (s == 1 or cost.peak(c, s, m, itemsize) <= memory_bytes))  # fmt: skip
        k = -(-batch_size // c)
        flops = (2 if k == 1 else k + k * k) * cost.feature_flops + k * k * cost.block_flops
        plans[impl] = BlockPlan(chunk, sub_batch, flops, peak(1))
    return plans


def _largest_fitting(peak: Callable[[int], float], most: int, budget: float) -> int:
    """The largest c in 1..most with peak(c) <= budget (peak grows with c), 0 if none."""
    if peak(most) <= budget:
        return most
    low, high = 0, most  # peak(low) fits (or low = 0), peak(high) does not
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if peak(mid) <= budget else (low, mid)
    return low


# ----------------------------------------------------------------------------------------------
# Implementations


def _single(model_fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    return lambda x: model_fn(x[None])[0]


def _in_sub_batches(features: Callable, sub_batch: int) -> Callable:
    """`features` of a batch computed `sub_batch` examples at a time, in sequence, each written in
    place into the stacked features of the batch (every feature has the examples as its first axis)."""

    def batched(x: jax.Array) -> Any:
        n = x.shape[0]
        if sub_batch >= n:
            return features(x)
        parts = jax.lax.map(features, x.reshape(n // sub_batch, sub_batch, *x.shape[1:]))
        return jax.tree_util.tree_map(lambda a: a.reshape(n, *a.shape[2:]), parts)

    return batched


class _CompiledKernel:
    """What every implementation provides: its compiled feature and block functions and the memory
    the features of one batch take."""

    def __init__(self, features, block, feature_bytes: int, sub_batch: int):
        self._features = _jit(_in_sub_batches(features, sub_batch))
        self._block, self._bytes = block, feature_bytes

    def features(self, x):
        return self._features(x)

    def block(self, f1, f2):
        return self._block(f1, f2)

    def feature_bytes(self):
        return self._bytes


class _JacobianContraction(_CompiledKernel):
    def __init__(self, params, static, structure, m, trace, batch_size, sub_batch):
        def jac(p, x):
            return jax.vmap(jax.jacrev(lambda p, xi: _single(eqx.combine(p, static))(xi)), (None, 0))(p, x)

        def features(x):
            leaves = jax.tree_util.tree_leaves(jac(params, x))
            return [leaf.reshape(leaf.shape[0], m, -1) for leaf in leaves]

        def block(f1, f2):
            return sum(contract(a, b, m, trace) for a, b in zip(f1, f2))

        itemsize = jax.tree_util.tree_leaves(params)[0].dtype.itemsize
        super().__init__(features, _jit(block), itemsize * batch_size * m * parameter_count(params), sub_batch)


class _NtkVectorProducts(_CompiledKernel):
    """Θ e_(j,o) = J(X1) (J(x_j)ᵀ e_o): one VJP and one JVP per block column; the features of a
    batch are the batch itself."""

    def __init__(self, params, static, structure, m, trace, batch_size, sub_batch):
        apply = lambda p, x: eqx.combine(p, static)(x)
        eye = jnp.eye(m, dtype=jax.tree_util.tree_leaves(params)[0].dtype)

        def column_group(x1, xj):
            _, vjp = jax.vjp(lambda p: _single(lambda x: apply(p, x))(xj), params)

            def push(e):
                (tangent,) = vjp(e)
                return jax.jvp(lambda p: apply(p, x1), (params,), (tangent,))[1]  # (n1, m)

            return jax.vmap(push)(eye)  # (m_col, n1, m_row)

        def block(x1, x2):
            cols = jax.lax.map(lambda xj: column_group(x1, xj), x2)  # (n2, m_col, n1, m_row)
            n1, n2 = x1.shape[0], x2.shape[0]
            if trace:
                return jnp.einsum("jonp->nj", cols * jnp.eye(m, dtype=cols.dtype)[None, :, None, :])
            return jnp.transpose(cols, (2, 3, 0, 1)).reshape(n1 * m, n2 * m)

        super().__init__(lambda x: x, _jit(block), 0, batch_size)  # the features of a batch are the batch


class _Structured(_CompiledKernel):
    def __init__(self, params, static, structure: Structure, m, trace, batch_size, sub_batch):
        self.structure = structure
        for layer in structure.layers:
            choose_rule(layer, m, batch_size, trace)
        layers = structure.layers
        rest0, fixed = structure.rest_params, structure.fixed
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        eye = jnp.eye(m, dtype=dtype)

        def forward(rest, perturbations, x):
            model = eqx.combine(rest, fixed)
            tape = Tape(perturbations)
            with recording(tape):
                out = model(x)
            return out, {layer.index: tape.inputs[layer.index] for layer in layers}

        def per_example(x):  # cotangents and the Jacobian of the rest parameters, one example
            zeros = {layer.index: jnp.zeros((1, *layer.out_shape), dtype) for layer in layers}
            _, vjp, inputs = jax.vjp(lambda r, p: forward(r, p, x[None]), rest0, zeros, has_aux=True)
            g_rest, g_layers = jax.vmap(lambda e: vjp(e[None]))(eye)
            return ({k: v[0] for k, v in inputs.items()}, {k: v[:, 0] for k, v in g_layers.items()}, g_rest)

        def batched(x):  # no rest parameters: m backward passes of the whole batch
            n = x.shape[0]
            zeros = {layer.index: jnp.zeros((n, *layer.out_shape), dtype) for layer in layers}
            _, vjp, inputs = jax.vjp(lambda p: forward(rest0, p, x), zeros, has_aux=True)
            (g_layers,) = jax.vmap(vjp)(jnp.broadcast_to(eye[:, None, :], (m, n, m)))
            return inputs, {k: jnp.swapaxes(v, 0, 1) for k, v in g_layers.items()}, None

        def features(x):
            if structure.rest_count:
                inputs, cotangents, g_rest = jax.vmap(per_example)(x)
            else:
                inputs, cotangents, g_rest = batched(x)
            n = x.shape[0]
            out = {layer.index: layer_features(layer, inputs[layer.index], cotangents[layer.index], n, m)
                   for layer in layers}  # fmt: skip
            rest_leaves = jax.tree_util.tree_leaves(g_rest)
            rest = None
            if rest_leaves:
                rest = jnp.concatenate([leaf.reshape(n, m, -1) for leaf in rest_leaves], axis=-1)
            return out, rest

        def block(f1, f2):
            (layers1, rest1), (layers2, rest2) = f1, f2
            parts = [layer_block(layer, layers1[layer.index], layers2[layer.index], m, trace) for layer in layers]
            if rest1 is not None:
                parts.append(contract(rest1, rest2, m, trace))
            return sum(parts[1:], parts[0])

        numbers = sum(rule_cost(layer, layer.rule, m, batch_size, trace).feature_numbers for layer in layers)
        feature_bytes = int(dtype.itemsize * (numbers + batch_size * m * structure.rest_count))
        super().__init__(features, _jit(block), feature_bytes, sub_batch)


# ----------------------------------------------------------------------------------------------
# Reference


def reference_ntk(model: eqx.Module, x1: np.ndarray, x2: np.ndarray, trace: bool = False) -> np.ndarray:
    """Brute force: the full Jacobians by `jax.jacrev` of the whole batch output, concatenated, J1 J2ᵀ."""
    params, static = partition_parameters(evaluation_mode(model))

    def flat_jacobian(x):
        jac = jax.jacrev(lambda p: eqx.combine(p, static)(x))(params)
        leaves = jax.tree_util.tree_leaves(jac)
        n, m = leaves[0].shape[:2]
        return jnp.concatenate([leaf.reshape(n, m, -1) for leaf in leaves], axis=-1)

    flat_jacobian = _jit(flat_jacobian)
    j1, j2 = flat_jacobian(jnp.asarray(x1)), flat_jacobian(jnp.asarray(x2))
    if trace:
        return np.asarray(jnp.einsum("iop,jop->ij", j1, j2))
    n1, m = j1.shape[:2]
    return np.asarray(j1.reshape(n1 * m, -1) @ j2.reshape(j2.shape[0] * m, -1).T)
