import io

import equinox as eqx
import jax
import numpy as np
import pytest

from ntklab.data.sources import load_dataset
from ntklab.engine.losses import accuracy
from ntklab.engine.models import build_model
from ntklab.tasks.context import RunDiverged, RunInterrupted
from ntklab.tasks.train import TrainRunConfig, run


class FakeContext:
    """An in-memory run context that can ask the task to stop after chosen steps."""

    run_key = "test"

    def __init__(self, checkpoint: bytes | None = None, stop_after: int | None = None):
        self.metrics: dict[int, dict[str, float]] = {}
        self.artifacts: dict[str, tuple[bytes, str, dict]] = {}
        self.checkpoint = checkpoint
        self.checkpoint_steps: list[int] = []
        self.progress_steps: list[int] = []
        self.stop_after = stop_after

    def log_metrics(self, step, values):
        assert step not in self.metrics
        self.metrics[step] = dict(values)

    def save_artifact(self, name, data, kind, metadata=None):
        self.artifacts[name] = (data, kind, dict(metadata or {}))

    def load_checkpoint(self):
        return self.checkpoint

    def save_checkpoint(self, step, payload):
        self.checkpoint = payload
        self.checkpoint_steps.append(step)

    def progress(self, step, total):
        self.progress_steps.append(step)

    def should_stop(self):
        return self.progress_steps[-1] == self.stop_after


def make_config(**train) -> TrainRunConfig:
    return TrainRunConfig.model_validate(
        {
            "task": "train",
            "seed": 3,
            "data": {"dataset": "digits", "n_train": 90, "n_test": 60},
            "model": {"arch": "mlp", "depth": 1, "width": 32, "b_std": 0.1},
            "train": {
                "optimizer": {"name": "sgd", "lr": 0.2},
                "batch_size": 32,
                "epochs": 4,
                "eval_every_steps": 5,
                **train,
            },
        }
    )


def test_training_reduces_the_loss_and_logs_at_the_expected_steps():
    ctx = FakeContext()
    run(make_config(checkpoint_every_steps=4), ctx)
    assert sorted(ctx.metrics) == [0, 5, 10, 12]
    assert ctx.checkpoint_steps == [4, 8]
    assert ctx.progress_steps == list(range(13))
    assert ctx.metrics[12]["train_loss"] < 0.5 * ctx.metrics[0]["train_loss"]
    assert ctx.metrics[12]["train_accuracy"] > 0.8
    assert "batch_loss" not in ctx.metrics[0] and "grad_norm" not in ctx.metrics[0]
    assert ctx.metrics[0]["dist_init"] == 0.0
    assert ctx.metrics[10]["epoch"] == pytest.approx(10 / 3)
    assert ctx.metrics[12]["lr"] == pytest.approx(0.2)
    assert ctx.metrics[12]["dist_init/layers.1.weight"] > 0


def test_artifacts_are_the_final_model_and_its_test_logits():
    config = make_config()
    ctx = FakeContext()
    run(config, ctx)
    params, kind, metadata = ctx.artifacts["params"]
    assert kind == "equinox"
    assert metadata["parameter_count"] == 64 * 32 + 32 + 32 * 10 + 10
    assert metadata["leaves"]["layers.0.weight"] == {"shape": [64, 32], "dtype": "float32"}
    like = build_model(config.model, (8, 8, 1), 10, jax.random.PRNGKey(0))
    model = eqx.tree_deserialise_leaves(io.BytesIO(params), like)

    logits_bytes, kind, metadata = ctx.artifacts["test_logits"]
    logits = np.load(io.BytesIO(logits_bytes))
    assert kind == "npy" and metadata == {"shape": [60, 10], "dtype": "float32"}
    dataset = load_dataset(config.data)
    np.testing.assert_allclose(logits, model(dataset.x_test), rtol=1e-5, atol=1e-6)
    assert float(accuracy(logits, dataset.y_test)) == pytest.approx(ctx.metrics[12]["test_accuracy"])


@pytest.mark.parametrize("stops", [[2, 5], [3, 9]])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(stops):
    config = make_config(
        optimizer={"name": "momentum", "lr": 0.1},
        schedule={"name": "cosine", "final_fraction": 0.1},
        weight_decay=1e-3,
        clip_grad_norm=2.0,
        eval_train_samples=50,
        checkpoint_every_steps=4,
    )
    uninterrupted = FakeContext()
    run(config, uninterrupted)

    logged: dict[int, dict[str, float]] = {}
    checkpoint = None
    for stop in stops:
        ctx = FakeContext(checkpoint=checkpoint, stop_after=stop)
        with pytest.raises(RunInterrupted):
            run(config, ctx)
        assert ctx.checkpoint_steps[-1] == stop
        assert "params" not in ctx.artifacts and "test_logits" not in ctx.artifacts
        for name, artifact in ctx.artifacts.items():  # the per-evaluation logits are those of an uninterrupted run
            assert artifact == uninterrupted.artifacts[name]
        logged.update(ctx.metrics)
        checkpoint = ctx.checkpoint
    resumed = FakeContext(checkpoint=checkpoint)
    run(config, resumed)
    assert resumed.progress_steps[0] == stops[-1]
    logged.update(resumed.metrics)

    assert logged == uninterrupted.metrics
    assert resumed.artifacts["params"] == uninterrupted.artifacts["params"]
    assert resumed.artifacts["test_logits"] == uninterrupted.artifacts["test_logits"]


def test_divergence_raises_and_keeps_the_metrics_before_it():
    ctx = FakeContext()
    with pytest.raises(RunDiverged) as raised:
        run(make_config(loss="mse", optimizer={"name": "sgd", "lr": 1e6}, eval_every_steps=1), ctx)
    step = raised.value.step
    assert step > 1
    assert f"step {step}" in str(raised.value)
    assert sorted(ctx.metrics) == list(range(step + 1))
    assert not np.isfinite(ctx.metrics[step]["batch_loss"])
    assert np.isfinite(ctx.metrics[step - 1]["batch_loss"])
    assert set(ctx.artifacts) == {f"test_logits/step_{t}" for t in range(step)}


def test_a_linear_teacher_is_learned_to_the_noise_floor_by_a_linear_model():
    """Spiked inputs with a degree-1 target (a linear teacher on the d0 spiked coordinates) plus
    Gaussian noise: a linear model trained with the squared loss reaches the test risk of the
    least-squares fit (computed here with numpy) and the noise floor (the teacher's own risk)."""
    data = {"dataset": "spiked", "d": 32, "eta": 0.4, "n_train": 2048, "n_test": 1024, "degrees": [1],
            "target_noise": 0.3}
    config = TrainRunConfig.model_validate({
        "task": "train", "seed": 0, "data": data, "model": {"arch": "logistic", "b_std": 0.0},
        "train": {"loss": "mse", "optimizer": {"name": "adam", "lr": 0.02}, "schedule": {"name": "cosine"},
                  "batch_size": 128, "epochs": 30, "eval_every_steps": 160},
    })
    ctx = FakeContext()
    run(config, ctx)
    final = ctx.metrics[max(ctx.metrics)]
    assert "test_accuracy" not in final and "train_accuracy" not in final

    noisy = load_dataset(config.data)
    clean = load_dataset(config.data.model_copy(update={"target_noise": 0.0}))
    floor = float(np.mean((noisy.y_test - clean.y_test) ** 2))  # the teacher's test risk
    assert floor == pytest.approx(0.09, rel=0.15)
    design = np.c_[noisy.x_train, np.ones(len(noisy.x_train))]
    w, *_ = np.linalg.lstsq(design, noisy.y_train, rcond=None)
    least_squares = float(np.mean((np.c_[noisy.x_test, np.ones(len(noisy.x_test))] @ w - noisy.y_test) ** 2))
    assert final["test_mse"] == pytest.approx(least_squares, rel=0.03)
    assert floor <= final["test_mse"] < 1.1 * floor
    assert final["test_r2"] == pytest.approx(1 - final["test_mse"] / np.var(noisy.y_test), abs=1e-5)
    assert final["test_r2"] > 0.9
    assert ctx.metrics[0]["test_mse"] > 10 * final["test_mse"]  # it started far from the teacher
    assert final["test_loss"] == pytest.approx(final["test_mse"] / 2, rel=1e-5)  # loss is ½ (f - y)²


def test_regression_targets_need_the_squared_loss():
    with pytest.raises(ValueError, match="regression targets: train with loss: mse"):
        TrainRunConfig.model_validate({
            "task": "train", "data": {"dataset": "spiked", "d": 32, "n_train": 64, "n_test": 32},
            "model": {"arch": "logistic"}, "train": {"optimizer": {"name": "sgd", "lr": 0.1}},
        })
