"""The finite network of a plan (engine/plan.py): its layers, and its forward pass op by op.

The layers sit in a tree shaped by their paths in the plan: `layers.0` is `network.layers[0]`,
`blocks.2.conv1` is `network.blocks[2].conv1`, in the order the plan first names them, so a
network's parameter paths and leaf order are those its plan states (`Parts` is that tree's node:
named children in order, keyed like attributes). The plan travels as static data of the pytree.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ntklab.engine.activations import activation
from ntklab.engine.layers import BatchNorm as BatchNormLayer
from ntklab.engine.layers import Conv2d, Dense, avg_pool, flatten, global_avg_pool, max_pool
from ntklab.engine.plan import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Parallel,
    Plan,
    PlanError,
    Scale,
    check_shapes,
    layers_with_parameters,
    output_shape,
)
from ntklab.engine.plan import Dense as DenseOp


@jax.tree_util.register_pytree_with_keys_class
class Parts:
    """Named children in a fixed order, read as attributes."""

    def __init__(self, names: tuple[str, ...], children: tuple):
        object.__setattr__(self, "_names", tuple(names))
        object.__setattr__(self, "_children", tuple(children))

    def __getattr__(self, name: str) -> Any:
        names = object.__getattribute__(self, "_names")
        if name in names:
            return object.__getattribute__(self, "_children")[names.index(name)]
        raise AttributeError(f"{type(self).__name__} has no part {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Parts are immutable")

    def tree_flatten_with_keys(self):
        return [(jax.tree_util.GetAttrKey(n), c) for n, c in zip(self._names, self._children)], self._names

    @classmethod
    def tree_unflatten(cls, names, children):
        return cls(names, tuple(children))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._names)})"


@jax.tree_util.register_pytree_with_keys_class
class Network(Parts):
    """A network built from a plan: `network(x)` is the evaluation-mode forward pass (BatchNorm
    with running statistics); `forward_train(x)` uses batch statistics and returns the network
    with updated running statistics."""

    def __init__(self, names: tuple[str, ...], children: tuple, plan: Plan):
        super().__init__(names, children)
        object.__setattr__(self, "plan", plan)

    def tree_flatten_with_keys(self):
        children, names = super().tree_flatten_with_keys()
        return children, (names, self.plan)

    @classmethod
    def tree_unflatten(cls, aux, children):
        names, plan = aux
        return cls(names, tuple(children), plan)

    def __call__(self, x: jax.Array) -> jax.Array:
        return _forward(self, self.plan.ops, x, None)

    def forward_train(self, x: jax.Array) -> tuple[jax.Array, Network]:
        updates: dict[str, BatchNormLayer] = {}
        logits = _forward(self, self.plan.ops, x, updates)
        if not updates:
            return logits, self
        layers = {path: updates.get(path, layer) for path, layer in _layers_by_path(self)}
        return logits, _assemble(layers, self.plan)


def _resolve(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = tree[int(part)] if part.isdigit() else getattr(tree, part)
    return tree


def _forward(network: Network, ops: tuple, x: jax.Array, updates: dict | None) -> jax.Array:
    """Runs `ops`; with `updates` (a dict), BatchNorm uses batch statistics and records its updated layer."""
    for op in ops:
        if isinstance(op, (DenseOp, Conv)):
            x = _resolve(network, op.path)(x)
        elif isinstance(op, BatchNorm):
            layer = _resolve(network, op.path)
            if updates is None:
                x = layer(x)
            else:
                x, updates[op.path] = layer.train_call(x)
        elif isinstance(op, Activation):
            x = activation(op.name)(x)
        elif isinstance(op, Scale):
            x = x / op.divisor
        elif isinstance(op, AvgPool):
            x = avg_pool(x, op.window, op.strides)
        elif isinstance(op, MaxPool):
            x = max_pool(x, op.window, op.strides, op.padding)
        elif isinstance(op, GlobalAvgPool):
            x = global_avg_pool(x)
        elif isinstance(op, Flatten):
            x = flatten(x)
        elif isinstance(op, Parallel):
            outs = [_forward(network, branch, x, updates) if branch else x for branch in op.branches]
            x = functools.reduce(jnp.add, outs) if op.join == "sum" else jnp.concatenate(outs, axis=-1)
        else:
            raise TypeError(f"unknown plan op {op!r}")
    return x


def build_network(plan: Plan, input_shape: tuple[int, ...], out_dim: int, key: jax.Array) -> Network:
    """The initialized network of `plan` on inputs of `input_shape` (per example): a pure function
    of the plan, the shape and the key. PlanError (a ValueError) names an op that cannot apply."""
    check_shapes(plan, input_shape, out_dim)
    keys = [key] if plan.keys == 1 else list(jax.random.split(key, plan.keys))
    layers: dict[str, Any] = {}
    _create(plan.ops, tuple(input_shape), keys, layers)
    return _assemble(layers, plan)


def _create(ops: tuple, shape: tuple[int, ...], keys: list, layers: dict) -> tuple[int, ...]:
    for op in ops:
        if isinstance(op, DenseOp):
            layers[op.path] = Dense(shape[0], op.out, op.init, keys[op.key], op.scales)
        elif isinstance(op, Conv):
            layers[op.path] = Conv2d(shape[-1], op.out, op.kernel_size, op.padding, op.init, keys[op.key],
                                     op.strides, op.groups)  # fmt: skip
        elif isinstance(op, BatchNorm):
            layers[op.path] = BatchNormLayer(shape[-1], op.momentum, op.eps)
        elif isinstance(op, Parallel):
            for branch in op.branches:
                _create(branch, shape, keys, layers)
        shape = output_shape(op, shape)
    return shape


def _assemble(layers: dict[str, Any], plan: Plan) -> Network:
    """The tree of `layers` by their dotted paths: numbered parts become tuples."""
    root: dict = {}
    for path, layer in layers.items():
        node = root
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if last in node:
            raise PlanError(None, f"two layers of the plan have the path {path!r}")
        node[last] = layer

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        children = [build(child) for child in node.values()]
        if all(name.isdigit() for name in node):
            if [int(name) for name in node] != list(range(len(node))):
                raise PlanError(None, f"numbered layers must run 0, 1, ... in order, got {list(node)}")
            return tuple(children)
        return Parts(tuple(node), tuple(children))

    top = {name: build(child) for name, child in root.items()}
    return Network(tuple(top), tuple(top.values()), plan)


def _layers_by_path(network: Network) -> list[tuple[str, Any]]:
    return [(op.path, _resolve(network, op.path)) for op in layers_with_parameters(network.plan)]
