"""Configs of the CIFAR zoo of ntkgen (Hodgkinson et al.'s empirical-NTK generator): ResNets of
basic blocks and bottlenecks, MobileNet v1 and v2, VGG, LeNet, the pre-activation WideResNet with
BatchNorm and DenseNet. Their plans are built in engine/zoo.py; README.md lists their parameter
counts. Pydantic only, like engine/config.py.

Every network here has BatchNorm, as ResNet-18 (engine/config.py:ResNet18Model) has it: batch
statistics when the network itself is trained, frozen running statistics in evaluation, Taylor
expansions and kernels. The final pooling of each is the global average, which is the seed's fixed
4x4 (2x2 for MobileNet) average pool on 32x32 inputs and keeps the networks defined on smaller ones.
"""

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from ntklab.engine.layer_init import LayerInit

RESNET_DEPTHS = {
    9: ("basic", (1, 1, 1, 1)),  # ntkgen's "resnet9", a 10-layer network
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    68: ("basic", (3, 4, 23, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
VGG_DEPTHS = {  # channels in units of `width`; "M" is a 2x2 max pool
    11: (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
    13: (1, 1, "M", 2, 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),
}


class BatchNormInit(LayerInit):
    """LayerInit and the BatchNorm layers' running-statistics momentum and epsilon."""

    bn_momentum: float = Field(0.1, gt=0.0, le=1.0)
    bn_eps: PositiveFloat = 1e-5


class ResNetModel(BatchNormInit):
    """CIFAR ResNet (He et al. 2016; ntkgen's): a 3x3 stem of `width` channels with BN and the
    activation, no max pool; four stages of width x 1, 2, 4, 8 channels and strides 1, 2, 2, 2;
    global average pooling; a Dense readout. `depth` picks the blocks and the stage sizes: 9, 18, 34
    and 68 are basic blocks act(BN(conv3x3(act(BN(conv3x3_s(x))))) + shortcut) of [1,1,1,1],
    [2,2,2,2], [3,4,6,3], [3,4,23,3]; 50, 101, 152 are bottlenecks act(BN(conv1x1_4c(act(BN(
    conv3x3_s(act(BN(conv1x1_c(x))))))) + shortcut) of [3,4,6,3], [3,4,23,3], [3,8,36,3]. The
    shortcut is a 1x1 convolution with BN where the stride or the channels change, else the identity.
    Depth 18 is the `resnet18` architecture, parameter for parameter."""

    arch: Literal["resnet"]
    depth: Literal[9, 18, 34, 50, 68, 101, 152] = 18
    width: PositiveInt = 64


class MobileNetModel(BatchNormInit):
    """MobileNet v1 (Howard et al. 2017), CIFAR variant: a 3x3 stem of `width` channels (32) with BN
    and the activation, then 13 depthwise-separable blocks act(BN(conv1x1(act(BN(depthwise3x3_s(x))))))
    of 2, 4, 4, 8, 8, 16 (x6) and 32 (x2) times `width` channels, stride 2 at the 2nd, 4th, 6th and
    12th; global average pooling; a Dense readout."""

    arch: Literal["mobilenet"]
    width: PositiveInt = 32


class MobileNetV2Model(BatchNormInit):
    """MobileNet v2 (Sandler et al. 2018), CIFAR strides: a 3x3 stem of `width` channels (32) with BN
    and the activation; 17 inverted residual blocks BN(conv1x1(act(BN(depthwise3x3_s(act(BN(
    conv1x1_6c(x)))))))) (expansion 1 in the first), in seven stages of (1, 2, 3, 4, 3, 3, 1) blocks
    with 16, 24, 32, 64, 96, 160, 320 channels at `width` 32 and strides 1, 1, 2, 2, 1, 2, 1; a block of
    stride 1 adds a shortcut (the identity, or a 1x1 convolution with BN where the channels change;
    the seed's, where the paper has none); then a 1x1 convolution to 40 x `width` (1280) with BN and
    the activation, global average pooling, a Dense readout."""

    arch: Literal["mobilenetv2"]
    width: PositiveInt = 32

    @field_validator("width")
    @classmethod
    def _multiple_of_four(cls, width: int) -> int:
        if width % 4:
            raise ValueError(f"must be a multiple of 4 (the stages have 1/2 and 3/4 of it), got {width}")
        return width


class VGGModel(BatchNormInit):
    """VGG (Simonyan and Zisserman 2015) with BatchNorm: 3x3 convolutions conv-BN-act and 2x2 max
    pools, depth 11: [w, M, 2w, M, 4w, 4w, M, 8w, 8w, M, 8w, 8w, M], depth 13: [w, w, M, 2w, 2w, M,
    4w, 4w, M, 8w, 8w, M, 8w, 8w, M] with w = `width` (64), flattened (1x1x8w on 32x32 inputs) into
    a Dense readout. Set b_std for the convolutions' biases (the seed's have them)."""

    arch: Literal["vgg"]
    depth: Literal[11, 13] = 11
    width: PositiveInt = 64


class LeNetModel(LayerInit):
    """LeNet as ntkgen has it: conv 5x5 (6) -> act -> pool 2 -> conv 5x5 (16) -> act -> pool 2 ->
    flatten -> Dense 120 -> act -> Dense 84 -> act -> Dense readout, VALID convolutions (5x5x16
    features on 32x32 inputs), `pool` max (the seed's) or avg. `lenet5` is the SAME-padded one with
    average pools."""

    arch: Literal["lenet"]
    pool: Literal["max", "avg"] = "max"


class PreActWideResNetModel(BatchNormInit):
    """Pre-activation WideResNet with BatchNorm (Zagoruyko and Komodakis 2016; ntkgen's `wrn-28-k`):
    a 3x3 stem of 16 channels, three stages of (depth - 4) / 6 blocks with 16, 32, 64 x `widening`
    channels and strides 1, 2, 2, then BN, the activation, global average pooling and a Dense
    readout. A block is conv3x3(act(BN(conv3x3_s(act(BN(x)))))) + shortcut; where the channels
    change, the shortcut is a 1x1 convolution of act(BN(x)) with the block's stride, else x. The
    BN-free WideResNet of Bai et al. is `wrn`."""

    arch: Literal["wrn_bn"]
    depth: PositiveInt = 28
    widening: PositiveInt = 10

    @field_validator("depth")
    @classmethod
    def _six_n_plus_four(cls, depth: int) -> int:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"must be 6n + 4 with n >= 1 blocks per stage (10, 16, 22, 28, ...), got {depth}")
        return depth


class DenseNetModel(BatchNormInit):
    """DenseNet-BC (Huang et al. 2017), CIFAR variant: a 3x3 stem of 2 x `growth` channels; dense
    stages of `blocks` layers, each concatenating conv3x3_g(act(BN(conv1x1_4g(act(BN(x)))))) before
    its input x; between stages a transition avg_pool2(conv1x1(act(BN(x)))) halving the channels
    (rounded down); then BN, the activation, global average pooling and a Dense readout. The
    defaults are DenseNet-121 (growth 32, blocks [6, 12, 24, 16])."""

    arch: Literal["densenet"]
    growth: PositiveInt = 32
    blocks: tuple[PositiveInt, ...] = Field(default=(6, 12, 24, 16), min_length=1)
