"""The plans (engine/plan.py) of the BatchNorm zoo: the ResNets (`resnet18` and `resnet`), MobileNet
v1 and v2, VGG, LeNet (`lenet5` and `lenet`), the pre-activation WideResNet and DenseNet, with the
layouts engine/zoo_config.py describes. Plain Python, like the plan.

Convolutions are SAME-padded (XLA's convention: a stride-2 3x3 convolution of an even-sized input
pads one pixel below and right, where PyTorch pads one on each side and drops the last; the shapes
and parameter counts are the same). Keys: one per affine layer in forward order, except in the
ResNets, which keep `resnet18`'s assignment (the stem, then one per convolution of each block plus
one for its shortcut, drawn even where the shortcut is the identity, then the readout), so the
`resnet18` architecture and `resnet` of depth 18 draw the same network.
"""

from __future__ import annotations

from ntklab.engine.config import LeNet5Model, ResNet18Model
from ntklab.engine.layer_init import LayerInit
from ntklab.engine.plan import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    Parallel,
    Plan,
    square_conv,
)
from ntklab.engine.zoo_config import (
    RESNET_DEPTHS,
    VGG_DEPTHS,
    DenseNetModel,
    LeNetModel,
    MobileNetModel,
    MobileNetV2Model,
    PreActWideResNetModel,
    ResNetModel,
    VGGModel,
)


class _Layers:
    """Hands out the keys and builds the layers of one network with its init, activation and BatchNorm."""

    def __init__(self, config: LayerInit):
        self.init, self.act, self.config, self.keys = config.plan_init(), Activation(config.activation), config, 0

    def key(self) -> int:
        self.keys += 1
        return self.keys - 1

    def conv(self, out: int, size: int, path: str, stride: int = 1, groups: int = 1) -> Conv:
        return square_conv(out, size, self.init, path, self.key(), stride, groups=groups)

    def dense(self, out: int, path: str) -> Dense:
        return Dense(out, self.init, path, self.key())

    def bn(self, path: str) -> BatchNorm:
        return BatchNorm(path, self.config.bn_momentum, self.config.bn_eps)

    def conv_bn(self, out: int, size: int, path: str, bn_path: str, stride: int = 1, groups: int = 1) -> tuple:
        return self.conv(out, size, path, stride, groups), self.bn(bn_path)

    def plan(self, ops: list) -> Plan:
        return Plan(tuple(ops), self.keys)


# ----------------------------------------------------------------------------------------------
# ResNets


def resnet18(config: ResNet18Model, out_dim: int) -> Plan:
    return _resnet(config, out_dim, "basic", (2, 2, 2, 2))


def resnet(config: ResNetModel, out_dim: int) -> Plan:
    return _resnet(config, out_dim, *RESNET_DEPTHS[config.depth])


def _resnet(config, out_dim: int, block: str, sizes: tuple[int, ...]) -> Plan:
    init, act, w = config.plan_init(), Activation(config.activation), config.width
    bn = _Layers(config).bn
    expansion = 4 if block == "bottleneck" else 1
    ops: list = [square_conv(w, 3, init, "stem", 0), bn("stem_bn"), act]
    index, in_channels, key = 0, w, 1
    for stage, blocks in enumerate(sizes):
        channels = w * 2**stage
        for j in range(blocks):
            s, name = (1 if stage == 0 or j else 2), f"blocks.{index}"
            if block == "basic":
                layout = ((channels, 3, s), (channels, 3, 1))
            else:
                layout = ((channels, 1, 1), (channels, 3, s), (expansion * channels, 1, 1))
            main: list = []
            for i, (out, size, stride) in enumerate(layout, 1):
                main += [square_conv(out, size, init, f"{name}.conv{i}", key + i - 1, stride), bn(f"{name}.bn{i}"), act]
            out = expansion * channels
            shortcut = (square_conv(out, 1, init, f"{name}.shortcut_conv", key + len(layout), s),
                        bn(f"{name}.shortcut_bn"))
            project = s != 1 or in_channels != out
            ops += [Parallel((tuple(main[:-1]), shortcut if project else ())), act]
            index, in_channels, key = index + 1, out, key + len(layout) + 1
    ops += [GlobalAvgPool(), Dense(out_dim, init, "readout", key)]
    return Plan(tuple(ops), key + 1)


# ----------------------------------------------------------------------------------------------
# MobileNets

MOBILENET = ((2, 1), (4, 2), (4, 1), (8, 2), (8, 1), (16, 2), *[(16, 1)] * 5, (32, 2), (32, 1))
"""MobileNet v1's blocks: (channels in units of the stem's width, stride)."""
MOBILENET_V2 = ((1, 2, 1, 1), (6, 3, 2, 1), (6, 4, 3, 2), (6, 8, 4, 2), (6, 12, 3, 1), (6, 20, 3, 2), (6, 40, 1, 1))
"""MobileNet v2's stages: (expansion, channels in quarters of the stem's width, blocks, stride)."""


def mobilenet(config: MobileNetModel, out_dim: int) -> Plan:
    layers, w = _Layers(config), config.width
    ops: list = [*layers.conv_bn(w, 3, "stem", "stem_bn"), layers.act]
    in_channels = w
    for i, (units, stride) in enumerate(MOBILENET):
        name = f"blocks.{i}"
        ops += [*layers.conv_bn(in_channels, 3, f"{name}.conv1", f"{name}.bn1", stride, groups=in_channels),
                layers.act, *layers.conv_bn(units * w, 1, f"{name}.conv2", f"{name}.bn2"), layers.act]  # fmt: skip
        in_channels = units * w
    return layers.plan([*ops, GlobalAvgPool(), layers.dense(out_dim, "readout")])


def mobilenetv2(config: MobileNetV2Model, out_dim: int) -> Plan:
    layers, w = _Layers(config), config.width
    ops: list = [*layers.conv_bn(w, 3, "stem", "stem_bn"), layers.act]
    in_channels, index = w, 0
    for expansion, quarters, blocks, stage_stride in MOBILENET_V2:
        out = quarters * w // 4
        for j in range(blocks):
            stride, name, hidden = (stage_stride if j == 0 else 1), f"blocks.{index}", expansion * in_channels
            main = (*layers.conv_bn(hidden, 1, f"{name}.conv1", f"{name}.bn1"), layers.act,
                    *layers.conv_bn(hidden, 3, f"{name}.conv2", f"{name}.bn2", stride, groups=hidden), layers.act,
                    *layers.conv_bn(out, 1, f"{name}.conv3", f"{name}.bn3"))  # fmt: skip
            if stride != 1:
                ops += main
            elif in_channels != out:
                ops.append(Parallel((main, layers.conv_bn(out, 1, f"{name}.shortcut_conv", f"{name}.shortcut_bn"))))
            else:
                ops.append(Parallel((main, ())))
            in_channels, index = out, index + 1
    ops += [*layers.conv_bn(40 * w, 1, "head", "head_bn"), layers.act]
    return layers.plan([*ops, GlobalAvgPool(), layers.dense(out_dim, "readout")])


# ----------------------------------------------------------------------------------------------
# VGG and LeNet


def vgg(config: VGGModel, out_dim: int) -> Plan:
    layers, ops, index = _Layers(config), [], 0
    for entry in VGG_DEPTHS[config.depth]:
        if entry == "M":
            ops.append(MaxPool())
            continue
        ops += [*layers.conv_bn(entry * config.width, 3, f"features.{index}.conv", f"features.{index}.bn"), layers.act]
        index += 1
    return layers.plan([*ops, Flatten(), layers.dense(out_dim, "readout")])


def lenet5(config: LeNet5Model, out_dim: int) -> Plan:
    return _lenet(config, out_dim, AvgPool(), "SAME")


def lenet(config: LeNetModel, out_dim: int) -> Plan:
    return _lenet(config, out_dim, MaxPool() if config.pool == "max" else AvgPool(), "VALID")


def _lenet(config: LayerInit, out_dim: int, pool, padding: str) -> Plan:
    init, act = config.plan_init(), Activation(config.activation)
    return Plan((
        square_conv(6, 5, init, "layers.0", 0, padding=padding), act, pool,
        square_conv(16, 5, init, "layers.1", 1, padding=padding), act, pool, Flatten(),
        Dense(120, init, "layers.2", 2), act, Dense(84, init, "layers.3", 3), act, Dense(out_dim, init, "layers.4", 4),
    ), 5)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Pre-activation WideResNet and DenseNet


def wrn_bn(config: PreActWideResNetModel, out_dim: int) -> Plan:
    layers, k = _Layers(config), config.widening
    ops: list = [layers.conv(16, 3, "stem")]
    in_channels, index = 16, 0
    for channels, stage_stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
        for j in range((config.depth - 4) // 6):
            stride, name = (stage_stride if j == 0 else 1), f"blocks.{index}"
            pre = (layers.bn(f"{name}.bn1"), layers.act)
            residual = (layers.conv(channels, 3, f"{name}.conv1", stride), layers.bn(f"{name}.bn2"), layers.act,
                        layers.conv(channels, 3, f"{name}.conv2"))  # fmt: skip
            if in_channels != channels:  # the shortcut sees the pre-activation too
                ops += [*pre, Parallel((residual, (layers.conv(channels, 1, f"{name}.shortcut", stride),)))]
            else:
                ops.append(Parallel(((*pre, *residual), ())))
            in_channels, index = channels, index + 1
    ops += [layers.bn("bn"), layers.act, GlobalAvgPool(), layers.dense(out_dim, "readout")]
    return layers.plan(ops)


def densenet(config: DenseNetModel, out_dim: int) -> Plan:
    layers, g = _Layers(config), config.growth
    ops: list = [layers.conv(2 * g, 3, "stem")]
    channels = 2 * g
    for stage, blocks in enumerate(config.blocks):
        if stage:
            name, channels = f"transitions.{stage - 1}", channels // 2
            ops += [layers.bn(f"{name}.bn"), layers.act, layers.conv(channels, 1, f"{name}.conv"), AvgPool()]
        for j in range(blocks):
            name = f"dense.{stage}.{j}"
            new = (layers.bn(f"{name}.bn1"), layers.act, layers.conv(4 * g, 1, f"{name}.conv1"),
                   layers.bn(f"{name}.bn2"), layers.act, layers.conv(g, 3, f"{name}.conv2"))  # fmt: skip
            ops.append(Parallel((new, ()), "concat"))
            channels += g
    ops += [layers.bn("bn"), layers.act, GlobalAvgPool(), layers.dense(out_dim, "readout")]
    return layers.plan(ops)
