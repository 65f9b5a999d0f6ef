"""Training to a threshold (`train.stop_when`) and the running training accuracy it usually watches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError
from test_train_task import FakeContext, make_config
from test_training import MLP, X, Y, small_model

from ntklab.engine.config import TrainConfig
from ntklab.engine.models import build_model
from ntklab.engine.optim import make_optimizer
from ntklab.engine.training import init_train_state, make_train_step, reset_running_sums, running_means
from ntklab.tasks.context import RunInterrupted
from ntklab.tasks.train import run

RECIPE = {"optimizer": {"name": "sgd", "lr": 0.2}, "epochs": 8, "eval_every_steps": 3, "checkpoint_every_steps": 4}


def test_running_accuracy_counts_the_batches_before_each_update():
    optimizer = make_optimizer(TrainConfig.model_validate({"optimizer": {"name": "sgd", "lr": 0.5}}), 1, 10)
    step = make_train_step("cross_entropy", optimizer)
    state = init_train_state(small_model(), optimizer)
    correct = 0
    for _ in range(3):
        correct += int(np.sum(np.argmax(np.asarray(state.model(X)), axis=1) == Y))  # the model the step sees
        state, _ = step(state, X, Y)
    assert running_means(state)["running_accuracy"] == correct / (3 * len(Y))
    state = reset_running_sums(state)
    assert int(state.correct_sum) == 0 and int(state.seen_sum) == 0
    regression = make_train_step("mse", optimizer)
    one_output = build_model(MLP, (5,), 1, jax.random.PRNGKey(0))
    state, _ = regression(init_train_state(one_output, optimizer), X, jnp.ones(len(X), jnp.float32))
    assert "running_accuracy" not in running_means(state)


def first_step_above(metrics: dict[int, dict[str, float]], name: str, threshold: float) -> int:
    return min(t for t, values in metrics.items() if t > 0 and values[name] > threshold)


@pytest.fixture(scope="module")
def full_run():
    ctx = FakeContext()
    run(make_config(**RECIPE), ctx)
    return ctx


def test_training_stops_at_the_first_evaluation_that_meets_the_threshold(full_run):
    series = {t: m["running_accuracy"] for t, m in full_run.metrics.items() if t > 0}
    threshold = (min(series.values()) + max(series.values())) / 2
    expected = first_step_above(full_run.metrics, "running_accuracy", threshold)
    assert 0 < expected < max(series)  # the threshold stops the run early
    ctx = FakeContext()
    run(make_config(**RECIPE, stop_when={"metric": "running_accuracy", "above": threshold}), ctx)
    assert max(ctx.metrics) == expected
    assert ctx.metrics[expected]["stopped_at_step"] == expected
    for t in ctx.metrics:  # the same trajectory as the run without a threshold, up to the stop
        assert {k: v for k, v in ctx.metrics[t].items() if k != "stopped_at_step"} == full_run.metrics[t]
    reason = ctx.artifacts["params"][2]["stopped"]
    assert reason.startswith("running_accuracy ") and reason.endswith(f"> {threshold:g} at step {expected}")


def test_a_run_killed_before_the_threshold_resumes_and_stops_at_the_same_step(full_run):
    threshold = full_run.metrics[max(full_run.metrics)]["test_accuracy"] - 1e-6
    expected = first_step_above(full_run.metrics, "test_accuracy", threshold)
    config = make_config(**RECIPE, stop_when={"metric": "test_accuracy", "above": threshold})
    uninterrupted = FakeContext()
    run(config, uninterrupted)
    assert max(uninterrupted.metrics) == expected
    killed = FakeContext(stop_after=4)
    with pytest.raises(RunInterrupted):
        run(config, killed)
    assert 4 < expected
    resumed = FakeContext(checkpoint=killed.checkpoint)
    run(config, resumed)
    assert max(resumed.metrics) == expected
    assert {**killed.metrics, **resumed.metrics} == uninterrupted.metrics
    assert resumed.artifacts["params"] == uninterrupted.artifacts["params"]


def test_an_unknown_metric_fails_at_step_zero_naming_the_metrics():
    with pytest.raises(ValueError, match=r"'test_acc' is not a metric of this run; .*running_accuracy.*test_accuracy"):
        run(make_config(**RECIPE, stop_when={"metric": "test_acc", "above": 0.9}), FakeContext())


def test_stop_when_takes_exactly_one_bound():
    for bounds in ({}, {"above": 0.9, "below": 0.1}):
        with pytest.raises(ValidationError, match="exactly one of `above` and `below`"):
            make_config(**RECIPE, stop_when={"metric": "test_loss", **bounds})
    below = make_config(**RECIPE, stop_when={"metric": "test_loss", "below": 0.5}).train.stop_when
    assert below.reason(0.4) == "test_loss 0.4 < 0.5" and below.reason(0.6) is None
