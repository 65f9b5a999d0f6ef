"""The ops of `arch: layers`, as written in a spec: a list of these, discriminated by `op`.
Pydantic only; engine/presets.py turns them into a plan (engine/plan.py).

Affine ops (`dense`, `conv`) take the model's activation-independent defaults (`parameterization`,
`param_order`, `w_std`, `b_std`) unless they set their own; `b_std: null` on a layer removes its
bias. `act` without a name is the model's `activation`. A `dense` without `out` is the readout: as
many outputs as the task has. Sizes (`kernel_size`, `window`, `strides`) are one number or a pair.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ntklab.configbase import StrictModel

Size = PositiveInt | tuple[PositiveInt, PositiveInt]
Activation = Literal["relu", "erf", "gelu", "tanh", "swish", "softplus"]
LayerParameterization = Literal["standard", "ntk", "taylor"]


class _Affine(StrictModel):
    w_std: PositiveFloat | None = Field(None, description="unset: the model's w_std")
    b_std: NonNegativeFloat | None = Field(None, description="unset: the model's b_std; null: no bias")
    parameterization: LayerParameterization | None = Field(None, description="unset: the model's")
    param_order: PositiveInt | None = Field(None, description="the k of a taylor layer; unset: the model's")


class DenseSpec(_Affine):
    op: Literal["dense"]
    out: PositiveInt | None = Field(None, description="output features; unset: the task's outputs (the readout)")


class ConvSpec(_Affine):
    op: Literal["conv"]
    out: PositiveInt = Field(description="output channels")
    kernel_size: Size
    strides: Size = 1
    padding: Literal["SAME", "VALID"] = "VALID"
    groups: PositiveInt = Field(1, description="channel groups (the input channels: a depthwise convolution)")


class ActSpec(StrictModel):
    op: Literal["act"]
    name: Activation | None = Field(None, description="unset: the model's activation")


class AvgPoolSpec(StrictModel):
    op: Literal["avg_pool"]
    window: Size = 2
    strides: Size | None = Field(None, description="unset: the window")


class MaxPoolSpec(StrictModel):
    op: Literal["max_pool"]
    window: Size = 2
    strides: Size | None = Field(None, description="unset: the window")
    padding: Literal["SAME", "VALID"] = "VALID"


class GlobalAvgPoolSpec(StrictModel):
    op: Literal["global_avg_pool"]


class FlattenSpec(StrictModel):
    op: Literal["flatten"]


class BatchNormSpec(StrictModel):
    op: Literal["batch_norm"]
    momentum: float = Field(0.1, gt=0.0, le=1.0)
    eps: PositiveFloat = 1e-5


class _Branches(StrictModel):
    branches: list[list[LayerSpec]] = Field(min_length=2, description="each a list of ops; [] is the identity")


class SumSpec(_Branches):
    """The sum of the branches (a residual block: one branch [] is the shortcut)."""

    op: Literal["sum"]

    @model_validator(mode="after")
    def _same_channels(self) -> SumSpec:
        known = {c for c in map(output_channels, self.branches) if c is not None}
        if len(known) > 1:
            raise ValueError(f"the branches of a sum end in different channel counts: {sorted(known)}")
        return self


class ConcatSpec(_Branches):
    """The branches' outputs concatenated along the channels."""

    op: Literal["concat"]


class SerialSpec(StrictModel):
    """`layers` in order, `repeat` times (each repetition with its own parameters)."""

    op: Literal["serial"]
    layers: list[LayerSpec] = Field(min_length=1)
    repeat: PositiveInt = 1


LayerSpec = Annotated[
    Union[DenseSpec, ConvSpec, ActSpec, AvgPoolSpec, MaxPoolSpec, GlobalAvgPoolSpec, FlattenSpec, BatchNormSpec,
          SumSpec, ConcatSpec, SerialSpec],
    Field(discriminator="op"),
]  # fmt: skip

for _spec in (SumSpec, ConcatSpec, SerialSpec, _Branches):
    _spec.model_rebuild()


def output_channels(layers: list) -> int | None:
    """The channels (or features) a list of ops ends in, where the list itself determines them."""
    for spec in reversed(layers):
        if isinstance(spec, (ConvSpec, DenseSpec)):
            return spec.out
        if isinstance(spec, SerialSpec):
            return output_channels(spec.layers)
        if isinstance(spec, SumSpec):
            known = [c for c in map(output_channels, spec.branches) if c is not None]
            return known[0] if known else None
        if isinstance(spec, ConcatSpec):
            parts = list(map(output_channels, spec.branches))
            return None if None in parts else sum(parts)
        if isinstance(spec, FlattenSpec):
            return None
    return None
