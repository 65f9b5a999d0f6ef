"""Configs of models and training. Pydantic only: importing this module does not import JAX."""

import functools
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, TypeAdapter, model_validator

from ntklab.configbase import StrictModel, added_field, non_semantic
from ntklab.engine.layer_init import LayerInit
from ntklab.engine.layer_specs import Activation, LayerSpec
from ntklab.engine.zoo_config import (
    DenseNetModel,
    LeNetModel,
    MobileNetModel,
    MobileNetV2Model,
    PreActWideResNetModel,
    ResNetModel,
    VGGModel,
)

MAX_EXPANSION_ORDER = 4
# How the empirical NTK is evaluated (ntklab/engine/entk.py); auto picks the cheapest.
Implementation = Literal["auto", "jacobian", "ntvp", "structured"]
ComputeDtype = Literal["float32", "float64"]


class MLPModel(LayerInit):
    """Flatten, then `depth` hidden Dense layers of `width` units with the activation, then a Dense readout."""

    MEAN_FIELD: ClassVar[bool] = True

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


class WideResNetModel(LayerInit):
    """Bai et al.'s BN-free pre-activation WideResNet: a 3x3 SAME stem convolution of `stem_channels`,
    three groups of `blocks_per_group` blocks with 16, 32 and 64 x `widening` channels and strides 1,
    2, 2, global average pooling and a Dense readout. A block computes conv3x3(act(conv3x3_s(act(x))))
    plus a shortcut: a 3x3 convolution with the block's stride at the entry of every group, the
    identity elsewhere. WRN-16-4 is blocks_per_group 2, widening 4. (Bai's head is an 8x8 average
    pool, which is the global average on 32x32 inputs.)"""

    arch: Literal["wrn"]
    blocks_per_group: PositiveInt = 2
    widening: PositiveInt = 4
    stem_channels: PositiveInt = 16


class ResNet18Model(LayerInit):
    """CIFAR ResNet-18 with BatchNorm: conv3x3(`width`)-BN-act, four stages of two basic blocks with
    width x 1, 2, 4, 8 channels and strides 1, 2, 2, 2, global average pooling, Dense readout. A basic
    block is act(BN(conv3x3(act(BN(conv3x3_s(x))))) + shortcut), the shortcut a 1x1 convolution with
    BN where the stride or the width changes. BN normalizes with batch statistics when the network
    itself is trained (expansion order 0) and updates running statistics (PyTorch convention:
    running = (1 - momentum) running + momentum batch, unbiased variance); evaluation, Taylor
    expansions and kernels use the running statistics, frozen."""

    arch: Literal["resnet18"]
    width: PositiveInt = 64
    bn_momentum: float = Field(0.1, gt=0.0, le=1.0)
    bn_eps: PositiveFloat = 1e-5


class LogisticModel(LayerInit):
    """Logistic regression: flatten, then one Dense layer (set b_std for a bias). `activation` is unused."""

    arch: Literal["logistic"]


class LayersModel(LayerInit):
    """A network written as a list of layer ops (ntklab/engine/layer_specs.py): dense, conv, act,
    avg_pool, max_pool, global_avg_pool, flatten, batch_norm, sum and concat of branches, serial
    with `repeat`. The model's activation, parameterization, w_std and b_std are the defaults of
    every layer; a layer may set its own. Its parameters are named `layers.<i>` in forward order."""

    arch: Literal["layers"]
    layers: list[LayerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _plan_builds(self) -> "LayersModel":
        from ntklab.engine.presets import plan_of

        plan_of(self)  # raises a ValueError naming the layer
        return self


FEATURE_SEED_DESCRIPTION = (
    "seed of the fixed first layer (Ghorbani et al. use 1990 for every run); unset: drawn from the run's seed"
)


class RandomFeaturesModel(StrictModel):
    """Ghorbani et al.'s two-layer random-features model f(x) = a^T act(W^T x) + c: W (d x width)
    Gaussian with unit-norm columns, fixed; the readout a (width x outputs) and c are trained and
    start at zero."""

    arch: Literal["rf"]
    width: PositiveInt = 4096
    activation: Activation = "relu"
    feature_seed: int | None = Field(None, description=FEATURE_SEED_DESCRIPTION)


class NeuralTangentModel(StrictModel):
    """Ghorbani et al.'s neural-tangent model: the first-order expansion of a two-layer network
    around fixed (W0, a0), f(x) = a^T act(W0^T x) + c + sum_i a0_i act'(<w0_i, x>) <g_i, x>. W0
    (d x width) is Gaussian with unit-norm columns, a0 (width x outputs) standard normal, both fixed;
    a, c and G (d x width) are trained and start at zero."""

    arch: Literal["nt"]
    width: PositiveInt = 4096
    activation: Activation = "relu"
    feature_seed: int | None = Field(None, description=FEATURE_SEED_DESCRIPTION)


ModelConfig = Annotated[
    Union[
        MLPModel,
        CNNModel,
        LeNet5Model,
        Myrtle5Model,
        WideResNetModel,
        ResNet18Model,
        LogisticModel,
        ResNetModel,
        MobileNetModel,
        MobileNetV2Model,
        VGGModel,
        LeNetModel,
        PreActWideResNetModel,
        DenseNetModel,
        LayersModel,
        RandomFeaturesModel,
        NeuralTangentModel,
    ],
    Field(discriminator="arch"),
]


def parse_model_config(data: dict[str, Any]) -> ModelConfig:
    """A model config from its dict (YAML) form, validated; `arch` selects the architecture."""
    return _model_config_adapter().validate_python(data)


@functools.cache
def _model_config_adapter() -> TypeAdapter:
    return TypeAdapter(ModelConfig)


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
    per_epoch: bool = added_field(
        False, "decay once per epoch, constant within one, over the run's epochs (PyTorch's CosineAnnealingLR "
        "stepped each epoch with T_max the epochs, as ntkgen trains)",
    )


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


EXPANSION_DEFAULTS = {"linearize_offset": True, "compare_to_full": True}


class StopWhen(StrictModel):
    """Stop training at the first evaluation step whose `metric` is above (or below) a value."""

    metric: str = Field(
        description="a metric logged at evaluation steps: running_accuracy (the training batches' accuracy since "
        "the last evaluation, ntkgen's criterion), train_accuracy, test_accuracy, test_loss, ..."
    )
    above: float | None = Field(None, description="stop once the metric is greater than this")
    below: float | None = Field(None, description="stop once the metric is less than this")

    @model_validator(mode="after")
    def _one_bound(self) -> "StopWhen":
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` and `below`")
        return self

    def reason(self, value: float) -> str | None:
        """Why training stops at a step where the metric has `value`, or None to go on."""
        if self.above is not None and value > self.above:
            return f"{self.metric} {value:.6g} > {self.above:g}"
        if self.below is not None and value < self.below:
            return f"{self.metric} {value:.6g} < {self.below:g}"
        return None


class TrainConfig(StrictModel):
    """Mini-batch training. Batches are a pure function of (seed, epoch, step): each epoch is a
    permutation of the training set drawn from the run seed and the epoch number, and the
    augmentation of a batch a function of (seed, step). So every expansion order of one spec sees
    the same batches.

    `expansion_order` k >= 1 trains the order-k Taylor expansion of the network around its starting
    point theta0 instead of the network (Bai et al. 2020): f_k(theta) = sum_{j<=k} D^j f(theta0)
    [theta - theta0]^j / j!. At order 0, `linearize_offset` and `compare_to_full` have no effect and
    are normalized to their defaults, so the network trained at order 0 has one identity whatever
    they say (and is the `full` run the expansions compare to).
    """

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
    expansion_order: int = Field(
        0, ge=0, le=MAX_EXPANSION_ORDER,
        description="0: the network; k = 1..4: its order-k Taylor expansion around the starting point (1: linearized)",
    )
    linearize_offset: bool = Field(
        True, description="include f(theta0) in the expansion (False: f_k - f(theta0), zero output at the start)"
    )
    stop_when: StopWhen | None = added_field(
        None, "stop at the first evaluation step that meets this (metric, above/below), e.g. "
        "{metric: running_accuracy, above: 0.995}; the step and the reason are recorded",
    )
    compare_to_full: bool = Field(
        True,
        description="for k >= 1: also train the network (order 0) as an upstream run `full` and log fn_distance, "
        "fn_rms_distance and agreement of the test logits against it at every evaluation step",
    )

    @model_validator(mode="before")
    @classmethod
    def _normalize_order_zero(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("expansion_order", 0) == 0:
            data = {**data, **EXPANSION_DEFAULTS}
        return data
