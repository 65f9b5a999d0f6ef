import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.engine.config import ModelConfig, TrainConfig
from ntklab.engine.losses import mean_loss
from ntklab.engine.models import build_model
from ntklab.engine.optim import make_optimizer
from ntklab.engine.training import (
    distance_to_init,
    evaluate,
    init_train_state,
    make_train_step,
    reset_running_sums,
    running_means,
    state_from_bytes,
    state_to_bytes,
)

MLP = TypeAdapter(ModelConfig).validate_python({"arch": "mlp", "depth": 1, "width": 8, "b_std": 0.1})
RNG = np.random.default_rng(0)
X = RNG.normal(size=(13, 5)).astype(np.float32)
Y = RNG.integers(0, 3, size=13).astype(np.int32)


def small_model(seed=0):
    return build_model(MLP, (5,), 3, jax.random.PRNGKey(seed))


def test_train_step_records_the_unclipped_gradient_norm_and_applies_the_clipped_update():
    model = small_model()
    config = TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 1.0}, "clip_grad_norm": 1e-3})
    optimizer = make_optimizer(config, 1, 10)
    state = init_train_state(model, optimizer)
    state, loss = make_train_step("cross_entropy", optimizer)(state, X, Y)

    grads = jax.grad(lambda m: mean_loss("cross_entropy", m(X), Y))(model)
    expected_norm = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree_util.tree_leaves(grads)))
    assert expected_norm > 1e-2
    assert float(loss) == pytest.approx(float(mean_loss("cross_entropy", model(X), Y)), rel=1e-6)
    expected_accuracy = float(np.mean(np.argmax(np.asarray(model(X)), axis=1) == Y))
    assert running_means(state) == pytest.approx(
        {"batch_loss": float(loss), "grad_norm": expected_norm, "running_accuracy": expected_accuracy}, rel=1e-5)
    assert int(state.step) == 1
    assert distance_to_init(state.model, model)["dist_init"] == pytest.approx(1e-3, rel=1e-3)


def test_running_sums_average_over_steps_and_reset():
    optimizer = make_optimizer(TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 0.1}}), 1, 10)
    step = make_train_step("mse", optimizer)
    state = init_train_state(small_model(), optimizer)
    losses = []
    for _ in range(3):
        state, loss = step(state, X, Y)
        losses.append(float(loss))
    assert running_means(state)["batch_loss"] == pytest.approx(np.mean(losses), rel=1e-6)
    assert losses[2] < losses[0]
    state = reset_running_sums(state)
    assert int(state.summed_steps) == 0 and float(state.batch_loss_sum) == 0.0
    assert int(state.step) == 3


def test_evaluate_matches_the_whole_array_computation():
    model = small_model()
    logits = model(X)
    expected_loss = float(mean_loss("cross_entropy", logits, Y))
    expected_accuracy = float(np.mean(np.argmax(logits, axis=1) == Y))
    for batch_size in (4, 13, 32):
        result = evaluate(model, X, Y, "cross_entropy", batch_size)
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
        assert result["accuracy"] == pytest.approx(expected_accuracy)


def test_distance_to_init():
    model0 = small_model()
    shift = {"weight": 0.5, "bias": -0.2}
    model = eqx.tree_at(
        lambda m: (m.layers[1].weight, m.layers[1].bias),
        model0,
        (model0.layers[1].weight + shift["weight"], model0.layers[1].bias + shift["bias"]),
    )
    distances = distance_to_init(model, model0)
    weight_shift = 0.5 * np.sqrt(8 * 3)
    bias_shift = 0.2 * np.sqrt(3)
    assert distances["dist_init/layers.0.weight"] == 0.0
    assert distances["dist_init/layers.1.weight"] == pytest.approx(weight_shift, rel=1e-5)
    assert distances["dist_init/layers.1.bias"] == pytest.approx(bias_shift, rel=1e-5)
    assert distances["dist_init_rel/layers.1.bias"] == pytest.approx(
        bias_shift / np.linalg.norm(model0.layers[1].bias), rel=1e-5
    )
    assert distances["dist_init"] == pytest.approx(np.hypot(weight_shift, bias_shift), rel=1e-5)
    total_norm = np.sqrt(sum(float(jnp.sum(p**2)) for p in jax.tree_util.tree_leaves(model0)))
    assert distances["dist_init_rel"] == pytest.approx(np.hypot(weight_shift, bias_shift) / total_norm, rel=1e-5)
    per_parameter = [f"layers.{i}.{leaf}" for i in (0, 1) for leaf in ("weight", "bias")]
    assert set(distances) == {
        "dist_init",
        "dist_init_rel",
        *(f"dist_init/{name}" for name in per_parameter),
        *(f"dist_init_rel/{name}" for name in per_parameter),
    }


def test_state_round_trips_through_bytes():
    config = TrainConfig.model_validate({"optimizer": {"name": "adam", "lr": 0.01}})
    optimizer = make_optimizer(config, 1, 10)
    state, _ = make_train_step("cross_entropy", optimizer)(init_train_state(small_model(), optimizer), X, Y)
    template = init_train_state(small_model(seed=1), optimizer)
    restored = state_from_bytes(state_to_bytes(state), template)
    original_leaves, original_tree = jax.tree_util.tree_flatten(state)
    restored_leaves, restored_tree = jax.tree_util.tree_flatten(restored)
    assert original_tree == restored_tree
    for a, b in zip(original_leaves, restored_leaves):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert int(restored.step) == 1
