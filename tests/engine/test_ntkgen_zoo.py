"""The ntkgen zoo (engine/zoo.py, engine/zoo_config.py): its parameter counts are those of the
seed's README at 10 outputs on 32x32x3 inputs, and every model runs forward and trains a step."""

import math

import equinox as eqx
import jax
import numpy as np
import pytest

from ntklab.engine.config import TrainConfig, parse_model_config
from ntklab.engine.models import build_model, named_frozen, named_parameters, parameter_count
from ntklab.engine.optim import make_optimizer
from ntklab.engine.presets import plan_of
from ntklab.engine.training import init_train_state, make_train_step

TWOLAYER = {"arch": "mlp", "depth": 1, "width": 120, "activation": "tanh", "b_std": 0.0}
"""ntkgen's `twolayer`, 3072 -> 120 tanh -> 10, is an MLP of one hidden layer."""

# ntkgen's model names, their configs, and the README's parameter counts (with its rounding)
README = {
    "resnet9": ({"arch": "resnet", "depth": 9}, "4.9M"),  # the README says 4.8M, see below
    "resnet18": ({"arch": "resnet", "depth": 18}, "11.1M"),
    "resnet34": ({"arch": "resnet", "depth": 34}, "21.2M"),
    "resnet50": ({"arch": "resnet", "depth": 50}, "23.5M"),
    "resnet68": ({"arch": "resnet", "depth": 68}, "41.4M"),
    "resnet101": ({"arch": "resnet", "depth": 101}, "42.5M"),
    "resnet152": ({"arch": "resnet", "depth": 152}, "58.2M"),
    "mobilenet": ({"arch": "mobilenet"}, "3.2M"),
    "mobilenetv2": ({"arch": "mobilenetv2"}, "2.3M"),
    "vgg11": ({"arch": "vgg", "depth": 11}, "9.2M"),
    "vgg13": ({"arch": "vgg", "depth": 13}, "9.4M"),
    "lenet": ({"arch": "lenet"}, "62K"),
    "wrn-28-2": ({"arch": "wrn_bn", "widening": 2}, "1.5M"),
    "wrn-28-5": ({"arch": "wrn_bn", "widening": 5}, "9.1M"),
    "wrn-28-10": ({"arch": "wrn_bn", "widening": 10}, "36.5M"),
    "logistic": ({"arch": "logistic"}, "30K"),
    "densenet121": ({"arch": "densenet"}, "7.0M"),
}


def count(config: dict, out_dim: int = 10) -> int:
    """Parameters from shapes only: the model is traced, never allocated."""
    model = eqx.filter_eval_shape(build_model, parse_model_config(config), (32, 32, 3), out_dim, jax.random.PRNGKey(0))
    return parameter_count(model)


def test_the_zoo_has_the_readme_s_parameter_counts():
    """Within one unit of the README's last digit: its figures are rounded in places (58,156,618
    as 58.2M) and truncated in others (11,173,962 as 11.1M)."""
    wrong = {}
    for name, (config, stated) in README.items():
        number, scale = stated[:-1], {"K": 1e3, "M": 1e6}[stated[-1]]
        unit = scale * 10.0 ** -len(number.partition(".")[2])
        n = count(config)
        if not abs(n - float(number) * scale) < unit:
            wrong[name] = (n, stated)
    assert not wrong, wrong


def basic_resnet_count(sizes: tuple[int, ...], w: int = 64, out: int = 10) -> int:
    """The CIFAR ResNet of basic blocks counted by hand: 3x3 convolutions without bias, BN's scale
    and offset, a 1x1 convolution and BN on each shortcut that changes shape, a readout without bias."""
    total, c_in = 9 * 3 * w + 2 * w, w
    for stage, blocks in enumerate(sizes):
        c = w * 2**stage
        for j in range(blocks):
            total += 9 * c_in * c + 9 * c * c + 4 * c
            if c_in != c:
                total += c_in * c + 2 * c
            c_in = c
    return total + c_in * out


def test_resnet9_is_the_seed_s_basic_block_network_of_4_9m_parameters():
    """The seed's ResNet9 (models/resnet.py: BasicBlock, [1, 1, 1, 1], width 64) has 4,903,242
    parameters with its readout bias; the README's 4.8M is a slip. The hand count settles it, and
    the deeper basic-block ResNets agree with it too."""
    assert count({"arch": "resnet", "depth": 9}) == basic_resnet_count((1, 1, 1, 1)) == 4_903_242 - 10
    assert count({"arch": "resnet", "depth": 34, "width": 8}) == basic_resnet_count((3, 4, 6, 3), 8)


def test_twolayer_and_the_bottlenecks_counted_by_hand():
    assert count(TWOLAYER) == 3072 * 120 + 120 + 120 * 10 + 10
    w = 4  # a bottleneck stage of c channels: 1x1 to c, 3x3, 1x1 to 4c, BN after each, shortcut at entry
    stages = [(c, blocks) for c, blocks in zip((w, 2 * w, 4 * w, 8 * w), (3, 4, 6, 3))]
    total, c_in = 27 * w + 2 * w, w
    for c, blocks in stages:
        for j in range(blocks):
            total += c_in * c + 9 * c * c + c * 4 * c + 2 * (c + c + 4 * c)
            if j == 0:
                total += c_in * 4 * c + 2 * 4 * c
            c_in = 4 * c
    assert count({"arch": "resnet", "depth": 50, "width": w}) == total + c_in * 10


def test_resnet_of_depth_18_is_the_resnet18_architecture():
    """The same plan, so the same parameters from the same key (tests/engine/test_presets.py pins
    `resnet18` to the network recorded before the plan existed)."""
    for width in (4, 64):
        assert plan_of(parse_model_config({"arch": "resnet", "depth": 18, "width": width}), 10) == plan_of(
            parse_model_config({"arch": "resnet18", "width": width}), 10)


def test_mobilenets_convolve_depthwise_and_densenet_concatenates():
    model = eqx.filter_eval_shape(build_model, parse_model_config({"arch": "mobilenet", "width": 4}), (32, 32, 3),
                                  10, jax.random.PRNGKey(0))  # fmt: skip
    shapes = {name: p.shape for name, p in named_parameters(model).items()}
    assert shapes["blocks.0.conv1.weight"] == (3, 3, 1, 4) and shapes["blocks.0.conv2.weight"] == (1, 1, 4, 8)
    assert shapes["blocks.12.conv1.weight"] == (3, 3, 1, 128) and shapes["readout.weight"] == (128, 10)
    model = eqx.filter_eval_shape(build_model, parse_model_config({"arch": "densenet", "growth": 4}), (32, 32, 3),
                                  10, jax.random.PRNGKey(0))  # fmt: skip
    shapes = {name: p.shape for name, p in named_parameters(model).items()}
    # each layer adds 4 channels: 8 + 6 x 4 = 32 into the first transition, which halves them, ...
    assert shapes["transitions.0.conv.weight"] == (1, 1, 32, 16)
    assert shapes["dense.1.0.conv1.weight"] == (1, 1, 16, 16) and shapes["dense.1.11.conv1.weight"] == (1, 1, 60, 16)
    assert shapes["transitions.2.conv.weight"] == (1, 1, 128, 64) and shapes["readout.weight"] == (128, 10)


def test_bad_zoo_options_are_refused_with_their_field():
    for config, field in (({"arch": "resnet", "depth": 20}, "depth"), ({"arch": "wrn_bn", "depth": 27}, "depth"),
                          ({"arch": "mobilenetv2", "width": 6}, "width"), ({"arch": "lenet", "pool": "min"}, "pool"),
                          ({"arch": "vgg", "depth": 16}, "depth")):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            parse_model_config(config)


# ----------------------------------------------------------------------------------------------
# Every model at a small width on a 2 x 32 x 32 x 3 batch. Each one's forward pass and training step
# are traced abstractly (jax.eval_shape: every layer's shapes, dtypes and gradient, nothing compiled);
# LeNet (max pools), ResNet-9 (BatchNorm, basic blocks) and twolayer are also compiled and run.
# Compiling every model would cost the suite many minutes (MobileNet v2 alone about a minute) for
# layers that tests/kernels/test_entk_zoo.py compiles and checks against jacrev already.

SMALL = {
    **{f"resnet{d}": {"arch": "resnet", "depth": d, "width": 1} for d in (9, 18, 34, 50, 68, 101, 152)},
    "mobilenet": {"arch": "mobilenet", "width": 1},
    "mobilenetv2": {"arch": "mobilenetv2", "width": 4},
    "vgg11": {"arch": "vgg", "depth": 11, "width": 1},
    "vgg13": {"arch": "vgg", "depth": 13, "width": 1},
    "lenet": {"arch": "lenet"},
    "lenet_avg": {"arch": "lenet", "pool": "avg"},
    "wrn-28-1": {"arch": "wrn_bn", "widening": 1},
    "logistic": {"arch": "logistic"},
    "densenet": {"arch": "densenet", "growth": 2, "blocks": [2, 2, 2, 2]},
    "densenet121": {"arch": "densenet", "growth": 1},
    "twolayer": TWOLAYER,
}
COMPILED = ("lenet", "resnet9", "twolayer")
X = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
Y = np.array([3, 7], np.int32)


def model_of(name: str):
    return build_model(parse_model_config(SMALL[name]), (32, 32, 3), 10, jax.random.PRNGKey(0))


def train_step():
    train = TrainConfig.model_validate({"optimizer": {"name": "momentum", "lr": 0.1}, "weight_decay": 5e-4})
    optimizer = make_optimizer(train, 1, 10)
    step = make_train_step("cross_entropy", optimizer)
    return lambda model, x, y: step(init_train_state(model, optimizer), x, y)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_traces_forward_and_a_training_step(name):
    logits = jax.eval_shape(lambda x: model_of(name)(x), X)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    step = train_step()
    after, loss = jax.eval_shape(lambda x, y: step(model_of(name), x, y), X, Y)
    assert loss.shape == ()
    shapes = jax.eval_shape(lambda: named_parameters(model_of(name)))
    assert jax.eval_shape(lambda x, y: named_parameters(step(model_of(name), x, y)[0].model), X, Y) == shapes


@pytest.mark.parametrize("name", COMPILED)
def test_compiled_models_run_forward_and_train_a_step(name):
    model = eqx.filter_jit(model_of)(name)
    logits = eqx.filter_jit(lambda m, x: m(x))(model, X)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    after, loss = train_step()(model, X, Y)
    assert np.isfinite(float(loss))
    before, trained = named_parameters(model), named_parameters(after.model)
    assert all(np.all(np.isfinite(p)) for p in trained.values())
    assert any(not np.array_equal(before[k], trained[k]) for k in before), "the step changed no parameter"
    frozen_before, frozen_after = named_frozen(model), named_frozen(after.model)
    assert all(not np.array_equal(frozen_before[k], frozen_after[k]) for k in frozen_before), (
        "every BatchNorm's running statistics moved with the batch's")
