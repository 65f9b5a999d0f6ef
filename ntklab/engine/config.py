"""Configs of models and training. Pydantic only: importing this module does not import JAX."""

from typing import Annotated, Literal, Union

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from ntklab.configbase import StrictModel, non_semantic

Activation = Literal["relu", "erf", "gelu", "tanh"]
Parameterization = Literal["standard", "ntk"]


class LayerInit(StrictModel):
    """Fields shared by every architecture: activation, parameterization and the weight/bias scales.

    standard: W ~ N(0, w_std^2 / fan_in), b ~ N(0, b_std^2), forward W x + b.
    ntk:      W ~ N(0, 1), b ~ N(0, 1), forward (w_std / sqrt(fan_in)) W x + b_std b.
    b_std = None means the layers have no bias.
    """

    activation: Activation = "relu"
    parameterization: Parameterization = "standard"
    w_std: PositiveFloat = 1.0
    b_std: NonNegativeFloat | None = None


class MLPModel(LayerInit):
    """Flatten, then `depth` hidden Dense layers of `width` units with the activation, then a Dense readout."""

    arch: Literal["mlp"]
    depth: PositiveInt = 2
    width: PositiveInt = 512


class CNNModel(LayerInit):
    """`depth` convolutions (kernel_size x kernel_size, `channels` each, stride 1) with the activation,
    then global average pooling (`gap`) or `flatten`, then a Dense readout."""

    arch: Literal["cnn"]
    depth: PositiveInt = 4
    channels: PositiveInt = 128
    kernel_size: PositiveInt = 3
    padding: Literal["VALID", "SAME"] = "VALID"
    readout: Literal["gap", "flatten"] = "gap"


class LeNet5Model(LayerInit):
    """Conv 5x5 (6) -> act -> avg-pool 2 -> conv 5x5 (16) -> act -> avg-pool 2 -> flatten
    -> Dense 120 -> act -> Dense 84 -> act -> Dense readout. SAME padding, so it runs on 8x8 inputs too."""

    arch: Literal["lenet5"]


class Myrtle5Model(LayerInit):
    """Myrtle-5 (Shankar et al. 2020): conv-act x2, avg-pool 2, conv-act, avg-pool 2, conv-act,
    global average pooling, Dense readout. 3x3 SAME convolutions of `channels` each."""

    arch: Literal["myrtle5"]
    channels: PositiveInt = 128


ModelConfig = Annotated[Union[MLPModel, CNNModel, LeNet5Model, Myrtle5Model], Field(discriminator="arch")]


class SGD(StrictModel):
    name: Literal["sgd"]
    lr: PositiveFloat


class Momentum(StrictModel):
    name: Literal["momentum"]
    lr: PositiveFloat
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class Nesterov(StrictModel):
    name: Literal["nesterov"]
    lr: PositiveFloat
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class Adam(StrictModel):
    name: Literal["adam"]
    lr: PositiveFloat
    b1: float = Field(0.9, ge=0.0, lt=1.0)
    b2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: PositiveFloat = 1e-8


OptimizerConfig = Annotated[Union[SGD, Momentum, Nesterov, Adam], Field(discriminator="name")]


class ConstantSchedule(StrictModel):
    name: Literal["constant"]


class StepSchedule(StrictModel):
    """Multiply the learning rate by `factor` at each milestone epoch (Bai et al.: 100 and 150, x0.1)."""

    name: Literal["step"]
    milestones_epochs: list[PositiveFloat]
    factor: PositiveFloat = 0.1

    @model_validator(mode="after")
    def _increasing(self) -> "StepSchedule":
        if list(self.milestones_epochs) != sorted(set(self.milestones_epochs)):
            raise ValueError("milestones_epochs must be strictly increasing")
        return self


class LinearSchedule(StrictModel):
    """Linear decay from the base learning rate to zero at the last step."""

    name: Literal["linear"]


class CosineSchedule(StrictModel):
    """Cosine decay from the base learning rate to `final_fraction` of it at the last step."""

    name: Literal["cosine"]
    final_fraction: float = Field(0.0, ge=0.0, le=1.0)


class WarmupCosineSchedule(StrictModel):
    """Linear warm-up from `initial_fraction` to `peak_factor` x the base rate over `warmup_epochs`,
    then cosine decay to `final_fraction` x the base rate (Ghorbani et al.: 15 epochs to 2 lr, floor lr/15)."""

    name: Literal["warmup_cosine"]
    warmup_epochs: PositiveFloat
    initial_fraction: float = Field(0.0, ge=0.0)
    peak_factor: PositiveFloat = 1.0
    final_fraction: float = Field(0.0, ge=0.0)


ScheduleConfig = Annotated[
    Union[ConstantSchedule, StepSchedule, LinearSchedule, CosineSchedule, WarmupCosineSchedule],
    Field(discriminator="name"),
]


class TrainConfig(StrictModel):
    """Mini-batch training. Batches are a pure function of (seed, epoch, step): each epoch is a
    permutation of the training set drawn from the run seed and the epoch number."""

    loss: Literal["mse", "cross_entropy", "bce"] = "cross_entropy"
    optimizer: OptimizerConfig
    schedule: ScheduleConfig = ConstantSchedule(name="constant")
    weight_decay: NonNegativeFloat = Field(0.0, description="coupled L2: weight_decay * theta added to the gradient")
    clip_grad_norm: PositiveFloat | None = Field(None, description="clip the gradient to this global norm")
    batch_size: PositiveInt = 128
    drop_last: bool = Field(False, description="drop the incomplete last batch of each epoch")
    epochs: PositiveInt = 10
    eval_every_steps: PositiveInt = 100
    eval_train_samples: PositiveInt | None = Field(
        None, description="evaluate train loss/accuracy on the first N training samples (all when unset)"
    )
    checkpoint_every_steps: PositiveInt = non_semantic(500, "how often the runner checkpoints the training state")
