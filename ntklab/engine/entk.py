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
- `structured`: the layers of the model are instrumented (`_Tap`): one forward pass records each
  layer's input, m backward passes per example give the cotangent g = ∂f_o/∂y of each layer's
  output y, and the Jacobian of a layer's parameters is never formed when its structure gives a
  cheaper contraction. A Dense layer y = c·(a W) + c_b·b contributes
      Θ[(i,o), (j,o')] = (c² ⟨a_i, a_j⟩ + c_b²) ⟨g_io, g_jo'⟩,
  a product of an input Gram (n1 x n2) and a cotangent Gram, instead of a contraction over its
  in·out weights. A convolution contributes through its weight gradients c·patches(a)ᵀ g (the
  Jacobian of that layer, formed by one batched matrix product, no extra backward pass), or,
  when it has few output positions, through patch Grams ⟨patch_ip, patch_jq⟩ and cotangent Grams
  per pair of positions, whichever costs fewer FLOPs. Parameters outside Dense and Conv2d layers
  (BatchNorm scales and shifts, custom layers, a layer called twice) fall back to the Jacobian
  contraction, computed in the same backward passes. This is the idea of neural-tangents'
  structured derivatives (Novak et al. 2022) at the level of layers rather than of primitives.
- `auto`: the cheapest of the three by estimated FLOPs, within the memory budget.

BatchNorm layers follow equinox's convention: `eqx.nn.inference_mode` switches them to their
running statistics, which are not parameters (they are not floating arrays, or they are marked
frozen; see `models.partition_parameters`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.blocks import kernel_block
from ntklab.engine.config import ComputeDtype, Implementation
from ntklab.engine.layers import Conv2d, Dense
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
    for every block it takes part in. Batches are padded to `batch_size` rows so each function is
    compiled once.
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
    out_dim: int = field(init=False)
    parameters: int = field(init=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        self._dtype = compute_dtype(self.dtype)
        # a copy of the whole model in the compute dtype (frozen statistics included); the
        # caller's model is left as it is
        params, static = partition_parameters(evaluation_mode(cast_floats(self.model, self._dtype)))
        self._params = params
        self._static = static
        self.parameters = parameter_count(params)
        x = jax.ShapeDtypeStruct((1, *self.input_shape), self._dtype)
        self.out_dim = int(jax.eval_shape(lambda p, x: eqx.combine(p, self._static)(x), self._params, x).shape[-1])
        self._structure = _Structure.of(self._params, self._static, self.input_shape, self._dtype)
        if self.implementation == "auto":
            self.chosen = choose_implementation(self._structure, self.out_dim, self.batch_size, self.trace,
                                                self.memory_bytes)
        elif self.implementation in IMPLEMENTATIONS:
            self.chosen = self.implementation
        else:
            raise ValueError(f"unknown empirical NTK implementation {self.implementation!r}")
        builder = {"jacobian": _JacobianContraction, "ntvp": _NtkVectorProducts, "structured": _Structured}
        self._impl = builder[self.chosen](self._params, self._static, self._structure, self.out_dim, self.trace,
                                          self.batch_size)

    @property
    def outputs(self) -> int:
        """Rows per example in a block: m for full output blocks, 1 when traced."""
        return 1 if self.trace else self.out_dim

    def features(self, x: np.ndarray) -> Features:
        x = np.asarray(x)
        n = len(x)
        if n > self.batch_size:
            raise ValueError(f"a batch of {n} exceeds the batch size {self.batch_size}")
        padded = np.zeros((self.batch_size, *self.input_shape), dtype=np.dtype(self.dtype))
        padded[:n] = x
        return Features(n, self._impl.features(jnp.asarray(padded)))

    def block(self, f1: Features, f2: Features) -> np.ndarray:
        """The kernel block between two featurized batches, as a numpy array in the compute dtype."""
        k = self._impl.block(f1.data, f2.data)
        k = np.asarray(k)
        r = self.outputs
        k = k[: f1.n * r, : f2.n * r]
        return k * self.scale if self.scale != 1.0 else k

    def __call__(self, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
        """The kernel between two arrays of any length, in batches (x2=None: between x1 and itself)."""
        return kernel_block(self, x1, x2)

    def feature_bytes(self) -> int:
        """Bytes held by the features of one batch (for caching decisions)."""
        return self._impl.feature_bytes()


@dataclass
class Features:
    n: int
    data: Any


# ----------------------------------------------------------------------------------------------
# Instrumented layers: record each tapped layer's input and add a perturbation to its output


class _Tape:
    def __init__(self, perturbations: Sequence[jax.Array] | None):
        self.perturbations = perturbations
        self.inputs: dict[int, jax.Array] = {}
        self.outputs: dict[int, Any] = {}
        self.calls: dict[int, int] = {}


_TAPE: contextvars.ContextVar[_Tape | None] = contextvars.ContextVar("ntklab_entk_tape", default=None)


@contextlib.contextmanager
def _recording(tape: _Tape) -> Iterator[_Tape]:
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


class _Tap(eqx.Module):
    """Wraps a Dense or Conv2d layer of the model; transparent unless a tape is recording."""

    layer: eqx.Module
    index: int = eqx.field(static=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.layer(x)
        tape = _TAPE.get()
        if tape is None:
            return y
        tape.calls[self.index] = tape.calls.get(self.index, 0) + 1
        tape.inputs[self.index] = x
        tape.outputs[self.index] = jax.ShapeDtypeStruct(y.shape, y.dtype)
        if tape.perturbations is not None:
            y = y + tape.perturbations[self.index]
        return y


def _is_tappable(node: Any) -> bool:
    """Dense layers and ungrouped convolutions (a grouped one falls back to its Jacobian)."""
    return isinstance(node, Dense) or (isinstance(node, Conv2d) and node.groups == 1)


@dataclass
class _Layer:
    """A tapped layer: its kind and the shapes and multipliers its contraction rule needs."""

    index: int
    kind: Literal["dense", "conv"]
    layer: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_multiplier: float
    bias_multiplier: float  # 0 without a bias
    rule: str = "explicit"

    @property
    def fan_in_size(self) -> int:  # length of one input vector of the matmul (a patch for a conv)
        if self.kind == "dense":
            return self.in_shape[-1]
        kh, kw, cin, _ = self.layer.weight.shape
        return kh * kw * cin

    @property
    def out_features(self) -> int:
        return self.out_shape[-1]

    @property
    def positions(self) -> int:
        return int(np.prod(self.out_shape[:-1]))

    @property
    def weight_size(self) -> int:
        return int(np.prod(self.layer.weight.shape))


@dataclass
class _Structure:
    """The model split into tapped layers (with their shapes) and the remaining parameters."""

    tapped_model: Any  # the params+static model with _Tap wrappers, tapped layer parameters inside
    rest_params: Any  # trainable parameters outside tapped layers (fall back to Jacobians)
    fixed: Any  # everything else, combined with rest_params gives tapped_model
    layers: list[_Layer]
    rest_count: int
    parameter_count: int
    forward_flops: float  # per example, tapped layers only (2 * MACs)

    @staticmethod
    def of(params: Any, static: Any, input_shape: tuple[int, ...], dtype: Any) -> _Structure:
        model = eqx.combine(params, static)
        tapped = _wrap_layers(model)
        tape = _Tape(None)

        def run(m, x):
            with _recording(tape):
                return m(x)

        jax.eval_shape(run, tapped, jax.ShapeDtypeStruct((1, *input_shape), dtype))
        layers: list[_Layer] = []
        for tap in _taps(tapped):
            if tape.calls.get(tap.index, 0) != 1:  # unused or shared layers fall back to Jacobians
                continue
            layer = tap.layer
            layers.append(_Layer(
                index=tap.index,
                kind="dense" if isinstance(layer, Dense) else "conv",
                layer=layer,
                in_shape=tuple(tape.inputs[tap.index].shape[1:]),
                out_shape=tuple(tape.outputs[tap.index].shape[1:]),
                weight_multiplier=float(layer.weight_multiplier),
                bias_multiplier=float(layer.bias_multiplier) if layer.bias is not None else 0.0,
            ))
        kept = {layer.index for layer in layers}
        # A leaf is a "rest" parameter when it is trainable and not inside a kept tapped layer
        # (wrapping layers does not copy arrays, so leaves are matched by identity).
        param_ids = {id(leaf) for leaf in jax.tree_util.tree_leaves(params)}
        kept_ids = {id(leaf) for tap in _taps(tapped) if tap.index in kept for leaf in jax.tree_util.tree_leaves(tap)}
        rest_mask = jax.tree_util.tree_map(lambda leaf: id(leaf) in param_ids and id(leaf) not in kept_ids, tapped)
        rest_params, fixed = eqx.partition(tapped, rest_mask)
        forward = sum(2.0 * layer.positions * layer.fan_in_size * layer.out_features for layer in layers)
        return _Structure(
            tapped_model=tapped,
            rest_params=rest_params,
            fixed=fixed,
            layers=layers,
            rest_count=parameter_count(rest_params),
            parameter_count=parameter_count(params),
            forward_flops=forward,
        )


def _wrap_layers(tree: Any) -> Any:
    """`tree` (a model, or a pytree of the same structure) with every Dense and Conv2d wrapped in a
    `_Tap`, numbered in pytree order."""
    counter = iter(range(1 << 30))
    return jax.tree_util.tree_map(
        lambda node: _Tap(node, next(counter)) if _is_tappable(node) else node, tree, is_leaf=_is_tappable
    )


def _taps(tree: Any) -> list[_Tap]:
    nodes = jax.tree_util.tree_leaves(tree, is_leaf=lambda n: isinstance(n, _Tap))
    return [node for node in nodes if isinstance(node, _Tap)]


# ----------------------------------------------------------------------------------------------
# Cost model


def estimate_costs(structure: _Structure, m: int, n: int, trace: bool) -> dict[str, tuple[float, float]]:
    """(FLOPs, bytes of features) of one n x n block and the features of its two batches, per
    implementation. Estimates from the layer shapes; parameters outside Dense/Conv2d layers count
    one forward FLOP pair each."""
    P = structure.parameter_count
    fp = structure.forward_flops + 2.0 * structure.rest_count
    jac_features = 3.0 * n * m * fp
    contraction = 2.0 * (n * m) * (n * (1 if trace else m)) * P
    jacobian = (2 * jac_features + contraction, 4.0 * n * m * P)
    ntvp = (3.0 * n * n * m * fp + 2 * 2.0 * n * fp, 4.0 * n * m * P)
    structured_flops = 2 * (2.0 * n * m * fp)  # the cotangent passes of both batches
    structured_bytes = 0.0
    cols = n * (1 if trace else m)
    for layer in structure.layers:
        choose_rule(layer, m, n, trace)
        flops, nbytes = _rule_cost(layer, layer.rule, m, n, trace)
        structured_flops += flops
        structured_bytes += nbytes
    structured_flops += 2.0 * (n * m) * cols * structure.rest_count
    structured_bytes += 4.0 * n * m * structure.rest_count
    return {"jacobian": jacobian, "ntvp": ntvp, "structured": (structured_flops, structured_bytes)}


def _rule_cost(layer: _Layer, rule: str, m: int, n: int, trace: bool) -> tuple[float, float]:
    cols = n * (1 if trace else m)
    D, K, C = layer.positions, layer.fan_in_size, layer.out_features
    if rule == "dense":  # input Gram + cotangent Gram
        return 2.0 * n * n * K + 2.0 * (n * m) * cols * C, 4.0 * n * (K + m * C)
    if rule == "explicit":  # weight gradients (both batches), then their Gram
        q = K * C + C
        return 2 * 2.0 * n * m * D * K * C + 2.0 * (n * m) * cols * q, 4.0 * n * m * q
    # positional: patch Grams per position pair, cotangent Grams per position pair
    flops = 2.0 * n * n * D * D * K + 2.0 * n * n * D * D * m * C + 2.0 * n * (m * cols // n) * D * D
    return flops, 4.0 * n * D * (K + m * C)


def choose_rule(layer: _Layer, m: int, n: int, trace: bool) -> str:
    if layer.kind == "dense" and layer.positions == 1:
        layer.rule = "dense"
    else:
        options = ("explicit", "positional")
        layer.rule = min(options, key=lambda r: _rule_cost(layer, r, m, n, trace)[0])
    return layer.rule


def choose_implementation(structure: _Structure, m: int, n: int, trace: bool, memory_bytes: int) -> str:
    costs = estimate_costs(structure, m, n, trace)
    fitting = {k: v for k, v in costs.items() if v[1] <= memory_bytes} or costs
    return min(fitting, key=lambda k: fitting[k][0])


# ----------------------------------------------------------------------------------------------
# Implementations


def _single(model_fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    return lambda x: model_fn(x[None])[0]


def _contract(a: jax.Array, b: jax.Array, m: int, trace: bool) -> jax.Array:
    """Σ over the feature axis of per-(example, output) rows: a (n1, m, q), b (n2, m, q) ->
    (n1·m, n2·m), or (n1, n2) summed over equal outputs when tracing."""
    n1, n2 = a.shape[0], b.shape[0]
    if trace:
        return a.reshape(n1, -1) @ b.reshape(n2, -1).T
    return a.reshape(n1 * m, -1) @ b.reshape(n2 * m, -1).T


class _CompiledKernel:
    """What every implementation provides: its compiled feature and block functions and the memory
    the features of one batch take."""

    def __init__(self, features, block, feature_bytes: int):
        self._features, self._block, self._bytes = features, block, feature_bytes

    def features(self, x):
        return self._features(x)

    def block(self, f1, f2):
        return self._block(f1, f2)

    def feature_bytes(self):
        return self._bytes


class _JacobianContraction(_CompiledKernel):
    def __init__(self, params, static, structure, m, trace, batch_size):
        self.m, self.trace, self.batch_size = m, trace, batch_size

        def jac(p, x):
            return jax.vmap(jax.jacrev(lambda p, xi: _single(eqx.combine(p, static))(xi)), (None, 0))(p, x)

        def features(x):
            leaves = jax.tree_util.tree_leaves(jac(params, x))
            return [leaf.reshape(leaf.shape[0], m, -1) for leaf in leaves]

        def block(f1, f2):
            return sum(_contract(a, b, m, trace) for a, b in zip(f1, f2))

        super().__init__(_jit(features), _jit(block), 4 * batch_size * m * parameter_count(params))



class _NtkVectorProducts(_CompiledKernel):
    """Θ e_(j,o) = J(X1) (J(x_j)ᵀ e_o): one VJP and one JVP per block column; the features of a
    batch are the batch itself."""

    def __init__(self, params, static, structure, m, trace, batch_size):
        self.m, self.trace = m, trace
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

        super().__init__(lambda x: x, _jit(block), 0)  # the features of a batch are the batch


class _Structured(_CompiledKernel):
    def __init__(self, params, static, structure: _Structure, m, trace, batch_size):
        self.m, self.trace = m, trace
        self.structure = structure
        for layer in structure.layers:
            choose_rule(layer, m, batch_size, trace)
        layers = structure.layers
        rest0, fixed = structure.rest_params, structure.fixed
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        eye = jnp.eye(m, dtype=dtype)

        def forward(rest, perturbations, x):
            model = eqx.combine(rest, fixed)
            tape = _Tape(perturbations)
            with _recording(tape):
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
            out = {}
            for layer in layers:
                a, g = inputs[layer.index], cotangents[layer.index]  # (n, *in), (n, m, *out)
                out[layer.index] = _layer_features(layer, a, g, n, m)
            rest_leaves = jax.tree_util.tree_leaves(g_rest)
            rest = None
            if rest_leaves:
                rest = jnp.concatenate([leaf.reshape(n, m, -1) for leaf in rest_leaves], axis=-1)
            return out, rest

        def block(f1, f2):
            (layers1, rest1), (layers2, rest2) = f1, f2
            total = None
            for layer in layers:
                part = _layer_block(layer, layers1[layer.index], layers2[layer.index], m, trace)
                total = part if total is None else total + part
            if rest1 is not None:
                part = _contract(rest1, rest2, m, trace)
                total = part if total is None else total + part
            return total

        feature_bytes = int(sum(_rule_cost(layer, layer.rule, m, batch_size, trace)[1] for layer in layers)
                            + 4 * batch_size * m * structure.rest_count)
        super().__init__(_jit(features), _jit(block), feature_bytes)



def _patches(layer: _Layer, a: jax.Array) -> jax.Array:
    """(n, positions, fan_in) inputs of the layer's matmul: the activations of a Dense layer,
    the kernel-sized patches of a convolution."""
    n = a.shape[0]
    if layer.kind == "dense":
        return a.reshape(n, -1, layer.in_shape[-1])
    kh, kw, _, _ = layer.layer.weight.shape
    patches = jax.lax.conv_general_dilated_patches(
        a, (kh, kw), layer.layer.strides, layer.layer.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return patches.reshape(n, -1, patches.shape[-1])


def _layer_features(layer: _Layer, a: jax.Array, g: jax.Array, n: int, m: int) -> dict[str, jax.Array]:
    c, cb = layer.weight_multiplier, layer.bias_multiplier
    if layer.rule == "dense":
        return {"a": c * a.reshape(n, -1), "g": g.reshape(n, m, -1)}
    patches = _patches(layer, a)  # (n, D, K)
    g = g.reshape(n, m, -1, layer.out_features)  # (n, m, D, C)
    bias = [cb * jnp.sum(g, axis=2)] if cb else []
    if layer.rule == "explicit":
        g_flat = jnp.swapaxes(g, 1, 2).reshape(n, g.shape[2], m * layer.out_features)  # (n, D, m C)
        weight = c * (jnp.swapaxes(patches, 1, 2) @ g_flat)  # (n, K, m C)
        weight = jnp.swapaxes(weight.reshape(n, -1, m, layer.out_features), 1, 2).reshape(n, m, -1)
        return {"j": jnp.concatenate([weight, *bias], axis=-1)}
    out = {"p": c * patches, "g": g}
    if bias:
        out["b"] = bias[0]
    return out


def _layer_block(layer: _Layer, f1: dict, f2: dict, m: int, trace: bool) -> jax.Array:
    n1, n2 = f1[next(iter(f1))].shape[0], f2[next(iter(f2))].shape[0]
    if layer.rule == "dense":
        gram = f1["a"] @ f2["a"].T + layer.bias_multiplier**2  # (n1, n2)
        g = _contract(f1["g"], f2["g"], m, trace)
        if trace:
            return g * gram
        return (g.reshape(n1, m, n2, m) * gram[:, None, :, None]).reshape(n1 * m, n2 * m)
    if layer.rule == "explicit":
        return _contract(f1["j"], f2["j"], m, trace)
    # positional: Σ_{p,q} ⟨patch_ip, patch_jq⟩ ⟨g_iop, g_jo'q⟩
    patch_gram = jnp.einsum("ipk,jqk->ijpq", f1["p"], f2["p"])
    if trace:
        cot = jnp.einsum("iopc,joqc->ijpq", f1["g"], f2["g"])
        k = jnp.sum(patch_gram * cot, axis=(2, 3))
    else:
        h = jnp.einsum("ijpq,joqc->ijpoc", patch_gram, f2["g"])
        k = jnp.einsum("iapc,ijpbc->iajb", f1["g"], h).reshape(n1 * m, n2 * m)
    if "b" in f1:
        k = k + _contract(f1["b"], f2["b"], m, trace)
    return k


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
