"""The fields every architecture of Dense and Conv layers shares: its activation, its
parameterization and its weight and bias scales (engine/config.py and engine/zoo_config.py derive
their models from it). Pydantic and the plain-Python plan only: no JAX."""

from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ntklab.configbase import StrictModel
from ntklab.engine.layer_specs import Activation
from ntklab.engine.plan import Init

Parameterization = Literal["standard", "ntk", "taylor", "mean_field"]


class LayerInit(StrictModel):
    """Fields shared by the architectures built from Dense and Conv layers: activation,
    parameterization and the weight/bias scales. With fan_in m:

    standard:   W ~ N(0, w_std^2 / m), b ~ N(0, b_std^2), forward W x + b.
    ntk:        W ~ N(0, 1), b ~ N(0, 1), forward (w_std / sqrt(m)) W x + b_std b.
    taylor:     Bai et al.'s order-k parameterization (k = `param_order`): W ~ N(0, m^(-(k-1)/(k+1))),
                b ~ N(0, 1), forward w_std m^(-1/(k+1)) W x + b_std b. The effective weight is
                N(0, w_std^2 / m) for every k; k = 1 is the NTK parameterization and k -> infinity
                approaches the standard one (up to where w_std sits).
    mean_field: Ghorbani et al.'s mean-field MLP (mlp only): first layer W ~ N(0, w_std^2 / d),
                hidden and readout weights N(0, w_std^2); each hidden layer's output (after the
                activation) and the readout are divided by the width N; hidden biases start at the
                constant b_std (Ghorbani: 0.01), the readout bias at 0; the optimizer sees the
                gradients multiplied by N (first layer), N^2 (hidden weights), N (hidden biases)
                and N * outputs (readout weights).
    b_std = None means the layers have no bias.
    """

    MEAN_FIELD: ClassVar[bool] = False  # whether the architecture defines a mean-field parameterization

    activation: Activation = "relu"
    parameterization: Parameterization = "standard"
    param_order: PositiveInt | None = Field(
        None, description="the k of the taylor parameterization (Bai et al.'s --param_order); only with taylor"
    )
    w_std: PositiveFloat = 1.0
    b_std: NonNegativeFloat | None = None

    @model_validator(mode="after")
    def _parameterization_fields(self) -> "LayerInit":
        if (self.parameterization == "taylor") != (self.param_order is not None):
            raise ValueError("param_order is required by, and only allowed with, parameterization: taylor")
        if self.parameterization == "mean_field" and not self.MEAN_FIELD:
            raise ValueError(f"the mean_field parameterization is defined for mlp only, not {getattr(self, 'arch', '?')}")
        return self

    def plan_init(self) -> Init:
        """The `Init` of the plan's affine layers (engine/plan.py)."""
        b_std = None if self.b_std is None else float(self.b_std)
        return Init(float(self.w_std), b_std, self.parameterization, self.param_order)
