"""The layers of a model the structured empirical NTK (engine/entk.py) contracts by rule.

The model's Dense, Conv2d (any strides, kernel size and channel groups) and BatchNorm layers are
wrapped in `_Tap`s: transparent unless a `_Tape` is recording, when a tap records its layer's input
and adds a perturbation to its output, so the gradient with respect to the perturbation is the
cotangent ∂f/∂y of the layer's output. One abstract forward pass (`Structure.of`) finds each
layer's input and output shapes; a layer called more than once (shared weights) or never is left
to the Jacobian fallback, as is every parameter outside these layers. Parameter-free ops (pooling
of any kind, concatenations and sums of branches, activations) need no rule: the backward pass
carries the cotangents through them.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax

from ntklab.engine.layers import BatchNorm, Conv2d, Dense
from ntklab.engine.models import parameter_count

Kind = Literal["dense", "conv", "batch_norm"]


class Tape:
    def __init__(self, perturbations: dict[int, jax.Array] | Sequence[jax.Array] | None):
        self.perturbations = perturbations
        self.inputs: dict[int, jax.Array] = {}
        self.outputs: dict[int, Any] = {}
        self.calls: dict[int, int] = {}


_TAPE: contextvars.ContextVar[Tape | None] = contextvars.ContextVar("ntklab_entk_tape", default=None)


@contextlib.contextmanager
def recording(tape: Tape) -> Iterator[Tape]:
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


class _Tap(eqx.Module):
    """Wraps a Dense, Conv2d or BatchNorm layer of the model; transparent unless a tape is recording."""

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
    return isinstance(node, (Dense, Conv2d, BatchNorm))


def _kind(layer: Any) -> Kind:
    if isinstance(layer, Dense):
        return "dense"
    return "conv" if isinstance(layer, Conv2d) else "batch_norm"


@dataclass
class Layer:
    """A tapped layer: its kind, its shapes and multipliers, and the rule chosen to contract it."""

    index: int
    kind: Kind
    layer: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    rule: str = "explicit"

    @property
    def groups(self) -> int:
        return self.layer.groups if self.kind == "conv" else 1

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.layer.depthwise

    @property
    def fan_in_size(self) -> int:
        """Length of one input vector of the layer's matmul, per channel group (a patch for a conv)."""
        if self.kind == "dense":
            return self.in_shape[-1]
        if self.kind == "batch_norm":
            return 1
        kh, kw, cin, _ = self.layer.weight.shape
        return kh * kw * cin

    @property
    def out_features(self) -> int:
        return self.out_shape[-1]

    @property
    def positions(self) -> int:
        return math.prod(self.out_shape[:-1])

    @property
    def weight_multiplier(self) -> float:
        return 1.0 if self.kind == "batch_norm" else float(self.layer.weight_multiplier)

    @property
    def bias_multiplier(self) -> float:
        """0 without a bias."""
        if self.kind == "batch_norm":
            return 1.0
        return float(self.layer.bias_multiplier) if self.layer.bias is not None else 0.0

    @property
    def parameters(self) -> int:
        return parameter_count(self.layer)

    @property
    def activation_size(self) -> int:
        """Numbers in the layer's input and output, per example."""
        return math.prod(self.in_shape) + math.prod(self.out_shape)


@dataclass
class Structure:
    """The model split into tapped layers (with their shapes) and the remaining parameters."""

    tapped_model: Any  # the params+static model with _Tap wrappers, tapped layer parameters inside
    rest_params: Any  # trainable parameters outside tapped layers (fall back to Jacobians)
    fixed: Any  # everything else, combined with rest_params gives tapped_model
    layers: list[Layer]
    rest_count: int
    parameter_count: int
    forward_flops: float  # per example, tapped layers and a FLOP pair per other parameter
    activation_size: int  # numbers of the tapped layers' inputs and outputs, per example
    largest_activation: int  # numbers of a tapped layer's largest input or output, per example
    largest_tensor: int  # numbers of the largest parameter array

    @staticmethod
    def of(params: Any, static: Any, input_shape: tuple[int, ...], dtype: Any) -> Structure:
        model = eqx.combine(params, static)
        tapped = _wrap_layers(model)
        tape = Tape(None)

        def run(m, x):
            with recording(tape):
                return m(x)

        jax.eval_shape(run, tapped, jax.ShapeDtypeStruct((1, *input_shape), dtype))
        layers: list[Layer] = []
        for tap in _taps(tapped):
            if tape.calls.get(tap.index, 0) != 1:  # unused or shared layers fall back to Jacobians
                continue
            layers.append(Layer(tap.index, _kind(tap.layer), tap.layer, tuple(tape.inputs[tap.index].shape[1:]),
                                tuple(tape.outputs[tap.index].shape[1:])))  # fmt: skip
        kept = {layer.index for layer in layers}
        # A leaf is a "rest" parameter when it is trainable and not inside a kept tapped layer
        # (wrapping layers does not copy arrays, so leaves are matched by identity).
        param_ids = {id(leaf) for leaf in jax.tree_util.tree_leaves(params)}
        kept_ids = {id(leaf) for tap in _taps(tapped) if tap.index in kept for leaf in jax.tree_util.tree_leaves(tap)}
        rest_mask = jax.tree_util.tree_map(lambda leaf: id(leaf) in param_ids and id(leaf) not in kept_ids, tapped)
        rest_params, fixed = eqx.partition(tapped, rest_mask)
        rest_count = parameter_count(rest_params)
        forward = sum(2.0 * layer.positions * layer.fan_in_size * layer.out_features for layer in layers)
        forward += 2.0 * rest_count
        largest_activation = max((math.prod(s) for layer in layers for s in (layer.in_shape, layer.out_shape)),
                                 default=0)  # fmt: skip
        return Structure(tapped, rest_params, fixed, layers, rest_count, parameter_count(params), forward,
                         sum(layer.activation_size for layer in layers), largest_activation,
                         max(leaf.size for leaf in jax.tree_util.tree_leaves(params)))  # fmt: skip


def _wrap_layers(tree: Any) -> Any:
    """`tree` with every Dense, Conv2d and BatchNorm wrapped in a `_Tap`, numbered in pytree order."""
    counter = iter(range(1 << 30))
    return jax.tree_util.tree_map(
        lambda node: _Tap(node, next(counter)) if _is_tappable(node) else node, tree, is_leaf=_is_tappable
    )


def _taps(tree: Any) -> list[_Tap]:
    nodes = jax.tree_util.tree_leaves(tree, is_leaf=lambda n: isinstance(n, _Tap))
    return [node for node in nodes if isinstance(node, _Tap)]
