"""The plan (engine/plan.py) of every layer architecture of the model configs: the named
architectures as presets, and `arch: layers` from its ops. Plain Python, like the plan.

The presets keep the parameter paths (`layers.<i>`, `stem`, `blocks.<i>.conv1`, `readout`), the
order of the parameters and the assignment of keys of the hand-written models they replace, so
stored parameters and per-layer metrics read the same. The BatchNorm zoo (the ResNets with
`resnet18`, the MobileNets, VGG, LeNet with `lenet5`, the pre-activation WideResNet and DenseNet)
is built in engine/zoo.py.
"""

from __future__ import annotations

from ntklab.engine import layer_specs as S
from ntklab.engine import zoo
from ntklab.engine.config import (
    CNNModel,
    LayersModel,
    LogisticModel,
    MLPModel,
    Myrtle5Model,
    WideResNetModel,
)
from ntklab.engine.plan import (
    Activation,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Init,
    MaxPool,
    Parallel,
    Plan,
    PlanError,
    Scale,
    Scales,
    square_conv,
)


def plan_of(config, out_dim: int = 1) -> Plan:
    """The plan of a model config with `out_dim` outputs (the readout's width, 1 for a kernel)."""
    build = _PRESETS.get(config.arch)
    if build is None:
        raise ValueError(f"{config.arch!r} is not a network of layers (layer networks: {', '.join(_PRESETS)})")
    return build(config, out_dim)


def _mlp(config: MLPModel, out_dim: int) -> Plan:
    if config.parameterization == "mean_field":
        return _mean_field_mlp(config, out_dim)
    init, act = config.plan_init(), Activation(config.activation)
    ops: list = [Flatten()]
    for i in range(config.depth):
        ops += [Dense(config.width, init, f"layers.{i}", i), act]
    ops.append(Dense(out_dim, init, f"layers.{config.depth}", config.depth))
    return Plan(tuple(ops), config.depth + 1)


def _mean_field_mlp(config: MLPModel, out_dim: int) -> Plan:
    """Ghorbani et al.'s mean-field network (engine/config.py:LayerInit): act(first(x)), then
    act(hidden(x)) / N per hidden layer, then x a / N + c."""
    n, w, b = config.width, config.w_std, config.b_std or 0.0
    act = Activation(config.activation)
    init = Init(w, config.b_std)
    hidden = Scales(w, 1.0, b, 1.0, weight_grad_scale=n * n, bias_grad_scale=n, constant_bias=True)
    readout = Scales(w, 1.0 / n, 0.0, 1.0, weight_grad_scale=n * out_dim, constant_bias=True)
    first = Scales(w, 1.0, b, 1.0, weight_grad_scale=n, bias_grad_scale=n, constant_bias=True, per_sqrt_fan_in=True)
    ops: list = [Flatten(), Dense(n, init, "layers.0", 0, scales=first), act]
    for i in range(1, config.depth):
        ops += [Dense(n, init, f"layers.{i}", i, hidden), act, Scale(n)]
    # the readout bias c always exists and starts at 0
    ops.append(Dense(out_dim, Init(w, 0.0), f"layers.{config.depth}", config.depth, readout))
    return Plan(tuple(ops), config.depth + 1)


def _cnn(config: CNNModel, out_dim: int) -> Plan:
    init, act = config.plan_init(), Activation(config.activation)
    ops: list = []
    for i in range(config.depth):
        ops += [square_conv(config.channels, config.kernel_size, init, f"layers.{i}", i, padding=config.padding), act]
    ops.append(GlobalAvgPool() if config.readout == "gap" else Flatten())
    ops.append(Dense(out_dim, init, f"layers.{config.depth}", config.depth))
    return Plan(tuple(ops), config.depth + 1)


def _myrtle5(config: Myrtle5Model, out_dim: int) -> Plan:
    init, act, c = config.plan_init(), Activation(config.activation), config.channels
    return Plan((
        square_conv(c, 3, init, "layers.0", 0), act, square_conv(c, 3, init, "layers.1", 1), act, AvgPool(),
        square_conv(c, 3, init, "layers.2", 2), act, AvgPool(), square_conv(c, 3, init, "layers.3", 3), act,
        GlobalAvgPool(), Dense(out_dim, init, "layers.4", 4),
    ), 5)  # fmt: skip


def _logistic(config: LogisticModel, out_dim: int) -> Plan:
    return Plan((Flatten(), Dense(out_dim, config.plan_init(), "layers.0", 0)), 1)


def _wrn(config: WideResNetModel, out_dim: int) -> Plan:
    """Keys: the stem, then three per block (conv1, conv2, the shortcut's, drawn even where the
    shortcut is the identity), then the readout."""
    init, act = config.plan_init(), Activation(config.activation)
    ops: list = [square_conv(config.stem_channels, 3, init, "stem", 0)]
    index = 0
    for channels, stride in ((16 * config.widening, 1), (32 * config.widening, 2), (64 * config.widening, 2)):
        for j in range(config.blocks_per_group):
            s, name, key = (stride if j == 0 else 1), f"blocks.{index}", 1 + 3 * index
            residual = (act, square_conv(channels, 3, init, f"{name}.conv1", key, s), act,
                        square_conv(channels, 3, init, f"{name}.conv2", key + 1))  # fmt: skip
            shortcut = (square_conv(channels, 3, init, f"{name}.shortcut", key + 2, s),) if j == 0 else ()
            ops.append(Parallel((residual, shortcut)))
            index += 1
    ops += [GlobalAvgPool(), Dense(out_dim, init, "readout", 1 + 3 * index)]
    return Plan(tuple(ops), 2 + 3 * index)


# ----------------------------------------------------------------------------------------------
# arch: layers


def _layers(config: LayersModel, out_dim: int) -> Plan:
    counter = iter(range(1 << 30))
    ops = _ops_of(config.layers, config, out_dim, counter, "layers")
    return Plan(ops, next(counter))


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def _layer_init(spec, config: LayersModel, at: str) -> Init:
    parameterization = spec.parameterization or config.parameterization
    order = spec.param_order if spec.param_order is not None else config.param_order
    if parameterization == "mean_field":
        raise PlanError(None, f"{at}: the mean_field parameterization is defined for arch mlp only")
    if parameterization != "taylor":
        if spec.param_order is not None:
            raise PlanError(None, f"{at}: param_order is only allowed with parameterization: taylor")
        order = None
    elif order is None:
        raise PlanError(None, f"{at}: parameterization taylor needs param_order")
    b_std = spec.b_std if "b_std" in spec.model_fields_set else config.b_std
    w_std = spec.w_std if spec.w_std is not None else config.w_std
    return Init(float(w_std), None if b_std is None else float(b_std), parameterization, order)


def _ops_of(specs: list, config: LayersModel, out_dim: int, counter, at: str) -> tuple:
    ops = []
    for i, spec in enumerate(specs):
        here = f"{at}.{i}"
        if isinstance(spec, S.SerialSpec):
            for _ in range(spec.repeat):
                ops += _ops_of(spec.layers, config, out_dim, counter, f"{here}.layers")
        elif isinstance(spec, (S.SumSpec, S.ConcatSpec)):
            branches = tuple(_ops_of(b, config, out_dim, counter, f"{here}.branches.{j}")
                             for j, b in enumerate(spec.branches))  # fmt: skip
            ops.append(Parallel(branches, spec.op, at=here))
        elif isinstance(spec, (S.DenseSpec, S.ConvSpec)):
            index = next(counter)
            init = _layer_init(spec, config, here)
            if isinstance(spec, S.DenseSpec):
                out = spec.out if spec.out is not None else out_dim
                ops.append(Dense(out, init, f"layers.{index}", index, at=here))
            else:
                ops.append(Conv(spec.out, _pair(spec.kernel_size), _pair(spec.strides), spec.padding, spec.groups,
                                init, f"layers.{index}", index, at=here))  # fmt: skip
        elif isinstance(spec, S.BatchNormSpec):
            index = next(counter)
            ops.append(BatchNorm(f"layers.{index}", spec.momentum, spec.eps, at=here))
        elif isinstance(spec, S.ActSpec):
            ops.append(Activation(spec.name or config.activation, at=here))
        elif isinstance(spec, (S.AvgPoolSpec, S.MaxPoolSpec)):
            window = _pair(spec.window)
            strides = window if spec.strides is None else _pair(spec.strides)
            if isinstance(spec, S.AvgPoolSpec):
                ops.append(AvgPool(window, strides, at=here))
            else:
                ops.append(MaxPool(window, strides, spec.padding, at=here))
        elif isinstance(spec, S.GlobalAvgPoolSpec):
            ops.append(GlobalAvgPool(at=here))
        elif isinstance(spec, S.FlattenSpec):
            ops.append(Flatten(at=here))
        else:
            raise TypeError(f"unknown layer spec {spec!r}")
    return tuple(ops)


_PRESETS = {
    "mlp": _mlp,
    "cnn": _cnn,
    "lenet5": zoo.lenet5,
    "myrtle5": _myrtle5,
    "logistic": _logistic,
    "wrn": _wrn,
    "resnet18": zoo.resnet18,
    "resnet": zoo.resnet,
    "mobilenet": zoo.mobilenet,
    "mobilenetv2": zoo.mobilenetv2,
    "vgg": zoo.vgg,
    "lenet": zoo.lenet,
    "wrn_bn": zoo.wrn_bn,
    "densenet": zoo.densenet,
    "layers": _layers,
}
