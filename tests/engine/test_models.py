import equinox as eqx
import jax
import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.engine.config import ModelConfig
from ntklab.engine.losses import output_dim
from ntklab.engine.models import build_model, named_parameters

parse_model = TypeAdapter(ModelConfig).validate_python

CONFIGS = {
    "mlp": {"arch": "mlp", "depth": 2, "width": 16, "b_std": 0.1},
    "cnn_gap": {"arch": "cnn", "depth": 2, "channels": 4, "b_std": 0.1},
    "cnn_flatten_same": {"arch": "cnn", "depth": 2, "channels": 4, "padding": "SAME", "readout": "flatten"},
    "lenet5": {"arch": "lenet5", "activation": "tanh", "b_std": 0.1},
    "myrtle5": {"arch": "myrtle5", "channels": 4, "parameterization": "ntk", "activation": "gelu"},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_forward_on_digits_sized_inputs(name):
    model = build_model(parse_model(CONFIGS[name]), (8, 8, 1), 7, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
    logits = eqx.filter_jit(model)(x)
    assert logits.shape == (3, 7)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shape_on_cifar_sized_inputs(name):
    model = eqx.filter_eval_shape(build_model, parse_model(CONFIGS[name]), (32, 32, 3), 7, jax.random.PRNGKey(0))
    logits = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((3, 32, 32, 3), np.float32))
    assert logits.shape == (3, 7)


def test_mlp_takes_flat_inputs():
    model = build_model(parse_model(CONFIGS["mlp"]), (12,), 1, jax.random.PRNGKey(0))
    assert model(np.ones((4, 12), np.float32)).shape == (4, 1)


def test_init_is_a_pure_function_of_the_key():
    config = parse_model(CONFIGS["myrtle5"])
    first = named_parameters(build_model(config, (8, 8, 1), 10, jax.random.PRNGKey(3)))
    second = named_parameters(build_model(config, (8, 8, 1), 10, jax.random.PRNGKey(3)))
    other = named_parameters(build_model(config, (8, 8, 1), 10, jax.random.PRNGKey(4)))
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
        assert not np.array_equal(first[name], other[name])


def test_parameter_names_are_readable_and_in_forward_order():
    mlp = build_model(parse_model(CONFIGS["mlp"]), (8, 8, 1), 10, jax.random.PRNGKey(0))
    assert {name: p.shape for name, p in named_parameters(mlp).items()} == {
        "layers.0.weight": (64, 16),
        "layers.0.bias": (16,),
        "layers.1.weight": (16, 16),
        "layers.1.bias": (16,),
        "layers.2.weight": (16, 10),
        "layers.2.bias": (10,),
    }
    lenet = eqx.filter_eval_shape(build_model, parse_model({"arch": "lenet5"}), (32, 32, 3), 10, jax.random.PRNGKey(0))
    assert {name: p.shape for name, p in named_parameters(lenet).items()} == {
        "layers.0.weight": (5, 5, 3, 6),
        "layers.1.weight": (5, 5, 6, 16),
        "layers.2.weight": (8 * 8 * 16, 120),
        "layers.3.weight": (120, 84),
        "layers.4.weight": (84, 10),
    }


def test_myrtle5_pools_to_a_channel_readout():
    model = eqx.filter_eval_shape(build_model, parse_model(CONFIGS["myrtle5"]), (8, 8, 1), 10, jax.random.PRNGKey(0))
    assert [p.shape for p in named_parameters(model).values()] == [
        (3, 3, 1, 4),
        (3, 3, 4, 4),
        (3, 3, 4, 4),
        (3, 3, 4, 4),
        (4, 10),
    ]


def test_cnn_flatten_readout_sees_the_valid_output_size():
    config = parse_model({"arch": "cnn", "depth": 2, "channels": 4, "kernel_size": 3, "readout": "flatten"})
    model = eqx.filter_eval_shape(build_model, config, (8, 8, 1), 10, jax.random.PRNGKey(0))
    assert named_parameters(model)["layers.2.weight"].shape == (4 * 4 * 4, 10)


def test_too_small_inputs_are_rejected():
    with pytest.raises(ValueError, match="VALID"):
        build_model(parse_model({"arch": "cnn", "depth": 4, "kernel_size": 3}), (8, 8, 1), 10, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="height, width, channels"):
        build_model(parse_model({"arch": "myrtle5"}), (64,), 10, jax.random.PRNGKey(0))


def test_output_dim():
    assert output_dim("bce", 2) == 1
    assert output_dim("bce", 10) == 10
    assert output_dim("cross_entropy", 2) == 2
    assert output_dim("mse", 2) == 2
