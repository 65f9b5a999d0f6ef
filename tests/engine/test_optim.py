import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntklab.engine.config import TrainConfig
from ntklab.engine.optim import make_optimizer, make_schedule


def train_config(**fields) -> TrainConfig:
    return TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 0.4}, **fields})


def schedule_values(schedule, steps):
    return [float(schedule(s)) for s in steps]


def test_constant():
    schedule = make_schedule(train_config(), 10, 100)
    assert schedule_values(schedule, [0, 50, 99]) == pytest.approx([0.4] * 3)


def test_step_milestones():
    config = train_config(schedule={"name": "step", "milestones_epochs": [1, 2.5], "factor": 0.5})
    schedule = make_schedule(config, 4, 40)
    steps = [0, 3, 4, 9, 10, 39]
    assert schedule_values(schedule, steps) == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])


def test_step_milestones_rounding_to_one_step_compound():
    config = train_config(schedule={"name": "step", "milestones_epochs": [1.0, 1.1], "factor": 0.5})
    schedule = make_schedule(config, 2, 20)
    assert schedule_values(schedule, [1, 2]) == pytest.approx([0.4, 0.1])


def test_linear():
    schedule = make_schedule(train_config(schedule={"name": "linear"}), 10, 100)
    steps = [0, 25, 70, 100]
    assert schedule_values(schedule, steps) == pytest.approx([0.4 * (1 - s / 100) for s in steps], abs=1e-7)


def test_cosine():
    schedule = make_schedule(train_config(schedule={"name": "cosine", "final_fraction": 0.1}), 10, 80)
    steps = [0, 20, 40, 79, 80]
    expected = [0.4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 80))) for s in steps]
    assert schedule_values(schedule, steps) == pytest.approx(expected, rel=1e-5)


def test_cosine_per_epoch_is_pytorch_s_annealing_stepped_each_epoch():
    """lr_e = lr (1 + cos(pi e / E)) / 2 for every step of epoch e (CosineAnnealingLR, T_max = E)."""
    schedule = make_schedule(train_config(schedule={"name": "cosine", "per_epoch": True}), 10, 80)
    steps = [0, 9, 10, 19, 45, 79]
    expected = [0.4 * 0.5 * (1 + math.cos(math.pi * (s // 10) / 8)) for s in steps]
    assert schedule_values(schedule, steps) == pytest.approx(expected, rel=1e-5)


def test_warmup_cosine():
    config = train_config(
        schedule={
            "name": "warmup_cosine",
            "warmup_epochs": 1.5,
            "initial_fraction": 0.1,
            "peak_factor": 2.0,
            "final_fraction": 1 / 15,
        }
    )
    schedule = make_schedule(config, 10, 100)
    warmup = 15

    def closed_form(s):
        if s <= warmup:
            return 0.4 * (0.1 + (2.0 - 0.1) * s / warmup)
        floor = 0.4 / 15
        return floor + (0.8 - floor) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (100 - warmup)))

    steps = [0, 5, 15, 16, 50, 99, 100]
    assert schedule_values(schedule, steps) == pytest.approx([closed_form(s) for s in steps], rel=1e-5)


def test_warmup_longer_than_training_is_rejected():
    config = train_config(schedule={"name": "warmup_cosine", "warmup_epochs": 3})
    with pytest.raises(ValueError, match="warm-up"):
        make_schedule(config, 10, 30)


def updates_for(config: TrainConfig, gradients, params, steps_per_epoch=10, total_steps=100):
    optimizer = make_optimizer(config, steps_per_epoch, total_steps)
    state = optimizer.init(params)
    updates = []
    for gradient in gradients:
        update, state = optimizer.update(gradient, state, params)
        updates.append(np.asarray(update["w"]))
    return updates


def test_the_optimizer_follows_its_schedule():
    config = train_config(schedule={"name": "step", "milestones_epochs": [0.2], "factor": 0.1})
    gradient = {"w": jnp.ones(3)}
    updates = updates_for(config, [gradient] * 3, {"w": jnp.zeros(3)})
    np.testing.assert_allclose([u[0] for u in updates], [-0.4, -0.4, -0.04], rtol=1e-6)


def test_clipping_bounds_the_update():
    config = TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 1.0}, "clip_grad_norm": 0.5})
    gradient = {"w": jnp.array([30.0, -40.0])}
    (update,) = updates_for(config, [gradient], {"w": jnp.zeros(2)})
    assert np.linalg.norm(update) <= 0.5 + 1e-6
    np.testing.assert_allclose(update, [-0.3, 0.4], rtol=1e-6)


def test_small_gradients_are_not_clipped():
    config = TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 1.0}, "clip_grad_norm": 10.0})
    (update,) = updates_for(config, [{"w": jnp.array([3.0, -4.0])}], {"w": jnp.zeros(2)})
    np.testing.assert_allclose(update, [-3.0, 4.0], rtol=1e-6)


def test_weight_decay_is_added_to_the_clipped_gradient():
    config = TrainConfig.model_validate(
        {"optimizer": {"name": "sgd", "lr": 0.1}, "weight_decay": 0.01, "clip_grad_norm": 1.0}
    )
    (update,) = updates_for(config, [{"w": jnp.array([0.0, 20.0])}], {"w": jnp.array([2.0, -3.0])})
    np.testing.assert_allclose(update, -0.1 * (np.array([0.0, 1.0]) + 0.01 * np.array([2.0, -3.0])), rtol=1e-6)


def test_momentum_nesterov_adam():
    g = {"w": jnp.array([2.0, -1.0])}
    params = {"w": jnp.zeros(2)}
    momentum = updates_for(TrainConfig.model_validate({"optimizer": {"name": "momentum", "lr": 0.1}}), [g, g], params)
    np.testing.assert_allclose(momentum[1], -0.1 * 1.9 * np.array([2.0, -1.0]), rtol=1e-6)
    nesterov = updates_for(TrainConfig.model_validate({"optimizer": {"name": "nesterov", "lr": 0.1}}), [g], params)
    np.testing.assert_allclose(nesterov[0], -0.1 * 1.9 * np.array([2.0, -1.0]), rtol=1e-6)
    adam = updates_for(TrainConfig.model_validate({"optimizer": {"name": "adam", "lr": 0.1}}), [g], params)
    np.testing.assert_allclose(adam[0], [-0.1, 0.1], rtol=1e-5)
    assert isinstance(make_optimizer(train_config(), 1, 1), optax.GradientTransformation)
