"""The train task at expansion orders 0-4: one initialization, identical batches and augmentation,
function-space comparisons with the network's stored test logits, expansion around another run's
trained parameters, resume, and the upstream runs a config declares."""

import io

import numpy as np
import pytest
from pydantic import ValidationError

from ntklab.engine import training
from ntklab.identity import run_key
from ntklab.spec.load import load_spec
from ntklab.tasks import registry
from ntklab.tasks.context import RunInterrupted
from ntklab.tasks.train import TrainRunConfig, run


class FakeContext:
    """An in-memory run context with upstream runs (other FakeContexts, by name)."""

    run_key = "test"

    def __init__(self, upstream=None, checkpoint=None, stop_after=None):
        self.metrics: dict[int, dict[str, float]] = {}
        self.artifacts: dict[str, bytes] = {}
        self.upstream = upstream or {}
        self.upstream_reads: list[tuple[str, str]] = []
        self.checkpoint = checkpoint
        self.checkpoint_steps: list[int] = []
        self.progress_steps: list[int] = []
        self.stop_after = stop_after

    def log_metrics(self, step, values):
        assert step not in self.metrics
        self.metrics[step] = dict(values)

    def save_artifact(self, name, data, kind, metadata=None):
        self.artifacts[name] = data

    def load_checkpoint(self):
        return self.checkpoint

    def save_checkpoint(self, step, payload):
        self.checkpoint = payload
        self.checkpoint_steps.append(step)

    def progress(self, step, total):
        self.progress_steps.append(step)

    def should_stop(self):
        return self.progress_steps[-1] == self.stop_after

    def upstream_artifact(self, name, artifact):
        self.upstream_reads.append((name, artifact))
        return self.upstream[name].artifacts[artifact]


def config(order=0, **train) -> TrainRunConfig:
    return TrainRunConfig.model_validate(
        {
            "task": "train",
            "seed": 7,
            "data": {"dataset": "synthetic", "n_train": 40, "n_test": 24, "dim": 36, "image_shape": [6, 6, 1],
                     "num_classes": 3, "augment": "crop_flip"},
            "model": {"arch": "cnn", "depth": 1, "channels": 3, "activation": "gelu", "b_std": 0.1},
            "train": {
                "optimizer": {"name": "sgd", "lr": 0.5},
                "batch_size": 16,
                "epochs": 2,
                "eval_every_steps": 2,
                "expansion_order": order,
                **train,
            },
        }
    )


SPEC = """\
name: orders
defaults:
  seed: 7
  data: {dataset: synthetic, n_train: 40, n_test: 24, dim: 36, image_shape: [6, 6, 1], num_classes: 3,
         augment: crop_flip}
  model: {arch: cnn, depth: 1, channels: 3, activation: gelu, b_std: 0.1}
groups:
  taylor:
    task: train
    train: {optimizer: {name: sgd, lr: 0.5}, batch_size: 16, epochs: 2, eval_every_steps: 2}
    sweep: {grid: {train.expansion_order: [0, 1, 2, 3, 4]}}
"""


def logits(ctx: FakeContext, step: int) -> np.ndarray:
    return np.load(io.BytesIO(ctx.artifacts[f"test_logits/step_{step}"]))


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """Every order of one spec trained, with the batches each train step received."""
    import ntklab.engine.training as engine_training

    spec = tmp_path_factory.mktemp("spec") / "orders.yaml"
    spec.write_text(SPEC)
    planned = {run.config.train.expansion_order: run.config for run in load_spec(spec, tasks=registry).runs}
    assert sorted(planned) == [0, 1, 2, 3, 4], "the expansions' `full` upstream is the order-0 run itself"
    assert all(planned[k] == config(k) for k in planned)

    recorded: dict[int, list] = {}
    make = engine_training.make_train_step
    contexts: dict[int, FakeContext] = {}
    monkeypatch = pytest.MonkeyPatch()
    for order in range(5):
        batches = recorded.setdefault(order, [])

        def spying_make(loss, optimizer, forward=None, batches=batches):
            step = make(loss, optimizer, forward)

            def spy(state, x, y):
                batches.append((np.asarray(x).copy(), np.asarray(y).copy()))
                return step(state, x, y)

            return spy

        monkeypatch.setattr(engine_training, "make_train_step", spying_make)
        ctx = FakeContext(upstream={"full": contexts[0]} if order else None)
        run(planned[order], ctx)
        contexts[order] = ctx
    monkeypatch.undo()
    return contexts, recorded


def test_all_orders_start_from_one_initialization_and_see_identical_batches(orders):
    contexts, recorded = orders
    steps = sorted(contexts[0].metrics)
    assert steps == [0, 2, 4, 6]
    for order in range(1, 5):
        np.testing.assert_array_equal(logits(contexts[order], 0), logits(contexts[0], 0)), "one initial function"
        assert contexts[order].metrics[0]["test_loss"] == contexts[0].metrics[0]["test_loss"]
        assert len(recorded[order]) == len(recorded[0]) == 6
        for (x, y), (x0, y0) in zip(recorded[order], recorded[0]):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
    # the batches are augmented (not raw training images), differently at every step
    firsts = [x[0] for x, _ in recorded[0]]
    assert not any(np.array_equal(firsts[0], other) for other in firsts[1:])
    # different orders do end in different places
    assert not np.array_equal(logits(contexts[1], 6), logits(contexts[0], 6))


def test_expansions_log_their_distance_to_the_network_from_its_stored_logits(orders):
    contexts, _ = orders
    assert "fn_distance" not in contexts[0].metrics[6]
    for order in range(1, 5):
        ctx = contexts[order]
        assert ("full", "test_logits/step_6") in ctx.upstream_reads
        for step, metrics in ctx.metrics.items():
            mine, full = logits(ctx, step).astype(np.float64), logits(contexts[0], step).astype(np.float64)
            assert metrics["fn_distance"] == pytest.approx(np.linalg.norm(mine - full) / np.linalg.norm(full), rel=1e-9)
            assert metrics["fn_rms_distance"] == pytest.approx(np.sqrt(np.mean((mine - full) ** 2)), rel=1e-9)
            assert metrics["agreement"] == pytest.approx(np.mean(mine.argmax(1) == full.argmax(1)))
            assert any(name.startswith("dist_init/") for name in metrics)
        assert ctx.metrics[0]["fn_distance"] == 0.0 and ctx.metrics[0]["agreement"] == 1.0
    assert contexts[1].metrics[6]["fn_distance"] > 1e-4
    np.testing.assert_array_equal(np.load(io.BytesIO(contexts[2].artifacts["test_logits"])), logits(contexts[2], 6))


def test_function_distance_of_known_logits():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    metrics = training.function_distance(np.array([[0.0, 1.0], [0.0, 2.0]]), reference)
    assert metrics == pytest.approx({"fn_distance": np.sqrt(2 / 5), "fn_rms_distance": np.sqrt(0.5), "agreement": 0.5})
    with pytest.raises(ValueError, match="cannot be compared"):
        training.function_distance(np.zeros((2, 3)), reference)


def test_an_interrupted_and_resumed_expansion_matches_an_uninterrupted_one(orders):
    contexts, _ = orders
    cfg = config(2, checkpoint_every_steps=3)
    uninterrupted = contexts[2]
    first = FakeContext(upstream={"full": contexts[0]}, stop_after=3)
    with pytest.raises(RunInterrupted):
        run(cfg, first)
    resumed = FakeContext(upstream={"full": contexts[0]}, checkpoint=first.checkpoint)
    run(cfg, resumed)
    assert resumed.progress_steps[0] == 3
    assert {**first.metrics, **resumed.metrics} == uninterrupted.metrics
    assert resumed.artifacts["params"] == uninterrupted.artifacts["params"]
    for name, data in {**first.artifacts, **resumed.artifacts}.items():
        assert data == uninterrupted.artifacts[name], name


def test_expansion_around_a_trained_checkpoint(orders):
    contexts, _ = orders
    pretrained = contexts[0]
    base = config(1, compare_to_full=False).model_dump()
    cfg = TrainRunConfig.model_validate({**base, "seed": 8, "expansion_point": config(0).model_dump()})
    assert cfg.upstream_runs() == {"expansion_point": config(0)}
    ctx = FakeContext(upstream={"expansion_point": pretrained})
    run(cfg, ctx)
    assert ctx.upstream_reads[0] == ("expansion_point", "params")
    np.testing.assert_allclose(logits(ctx, 0), np.load(io.BytesIO(pretrained.artifacts["test_logits"])), rtol=1e-5,
                               atol=1e-6)
    assert ctx.metrics[0]["dist_init"] == 0.0
    assert ctx.metrics[6]["dist_init"] > 0.0
    assert not np.allclose(logits(ctx, 0), logits(contexts[1], 0)), "not the initialization"


def test_upstream_runs_and_the_identity_of_the_full_network():
    assert config(0).upstream_runs() == {}
    assert config(3, compare_to_full=False).upstream_runs() == {}
    full = config(3, linearize_offset=False).upstream_runs()["full"]
    assert full.train.expansion_order == 0
    assert run_key(full) == run_key(config(0)), "the network an expansion compares to is the order-0 run"
    normalized = config(0, linearize_offset=False, compare_to_full=False)
    assert normalized.train.linearize_offset and normalized.train.compare_to_full
    assert run_key(normalized) == run_key(config(0))
    with_point = TrainRunConfig.model_validate({**config(2).model_dump(), "expansion_point": config(0).model_dump()})
    assert set(with_point.upstream_runs()) == {"expansion_point", "full"}
    assert with_point.upstream_runs()["full"].expansion_point == config(0)


def test_an_expansion_point_must_have_the_same_model():
    other = config(0).model_dump()
    other["model"]["channels"] = 4
    with pytest.raises(ValidationError, match="expansion_point.model differs"):
        TrainRunConfig.model_validate({**config(1).model_dump(), "expansion_point": other})
    with pytest.raises(ValidationError):
        config(5)
