"""Eigenfunction datasets (labels by the sign rule, the seed's slicing) and the alignment metrics of
a train run against the explicit empirical NTK at the trained point."""

import io

import equinox as eqx
import jax
import numpy as np
import pytest
from fakectx import FakeContext, fast_compile

from ntklab.data.eigenfunction import eigenfunction_labels, split_labels
from ntklab.data.sources import load_dataset
from ntklab.engine.entk import reference_ntk
from ntklab.engine.models import build_model
from ntklab.tasks.registry import RUN_CONFIG, run_function

KERNEL = {
    "task": "kernel",
    "seed": 3,
    "data": {"dataset": "synthetic", "n_train": 30, "n_test": 14, "dim": 16, "image_shape": [4, 4, 1]},
    "kernel": {"kind": "empirical", "model": {"arch": "mlp", "depth": 1, "width": 24, "b_std": 0.1}},
    "points": "train+test",
    "outputs": 1,
    "block_size": 16,
}
EIGEN = {"task": "eigen", "kernel": KERNEL, "k": 8}
MODEL = KERNEL["kernel"]["model"]


def test_sign_rule_maps_zeros_to_zero_and_slices_train_then_test():
    vector = np.array([0.3, -0.1, 0.0, 2.0, -0.0, -5.0])
    labels = eigenfunction_labels(vector)
    np.testing.assert_array_equal(labels, [1, 0, 0, 1, 0, 0])
    assert labels.dtype == np.int32
    indices = np.array([[0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1]])
    y_train, y_test = split_labels(labels, indices, 4, 2)
    np.testing.assert_array_equal(y_train, [1, 0, 0, 1])
    np.testing.assert_array_equal(y_test, [0, 0])
    with pytest.raises(ValueError, match="do not cover every test point"):
        split_labels(labels[:4], indices[:4], 4, 2)


@pytest.fixture(scope="module")
def eigen_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("eigenfunction")
    run_function("kernel")(RUN_CONFIG.validate_python(KERNEL), FakeContext(root, run_key="kernel"))
    ctx = FakeContext(root, run_key="eigen", upstream_dirs={("kernel", "kernel"): root / "kernel" / "kernel"})
    run_function("eigen")(RUN_CONFIG.validate_python(EIGEN), ctx)
    return {("data", name): ctx.artifacts[name][0] for name in ("eigenvalues", "eigenvectors", "indices")}


def train_config(index, **fields):
    return RUN_CONFIG.validate_python({
        "task": "train", "seed": 3,
        "data": {"dataset": "ntk_eigenfunction", "eigen": EIGEN, "index": index},
        "model": MODEL,
        "train": {"loss": "bce", "optimizer": {"name": "momentum", "lr": 0.05}, "schedule": {"name": "linear"},
                  "batch_size": 16, "epochs": 3, "eval_every_steps": 3},
        **fields,
    })


def test_the_eigenfunction_dataset_labels_train_and_test_by_one_eigenvector(eigen_artifacts):
    config = train_config(2)
    assert config.upstream_runs() == {"data": RUN_CONFIG.validate_python(EIGEN)}
    dataset = config.data.load(FakeContext(".", upstream_bytes=eigen_artifacts))
    vector = np.load(io.BytesIO(eigen_artifacts[("data", "eigenvectors")]))[2]
    np.testing.assert_array_equal(dataset.y_train, (vector[:30] > 0).astype(np.int32))
    np.testing.assert_array_equal(dataset.y_test, (vector[30:] > 0).astype(np.int32))
    base = load_dataset(RUN_CONFIG.validate_python(KERNEL).data)
    np.testing.assert_array_equal(dataset.x_train, base.x_train)
    np.testing.assert_array_equal(dataset.x_test, base.x_test)
    assert dataset.num_classes == 2 and 0 < dataset.y_train.mean() < 1


def test_eigenfunction_data_needs_a_transductive_scalar_kernel():
    from pydantic import ValidationError

    for kernel, message in (({**KERNEL, "points": "train"}, "points: train\\+test"),
                            ({k: v for k, v in KERNEL.items() if k != "outputs"}, "outputs: 1")):
        with pytest.raises(ValidationError, match=message):
            RUN_CONFIG.validate_python({"task": "train", "data": {"dataset": "ntk_eigenfunction",
                                        "eigen": {**EIGEN, "kernel": kernel}, "index": 0},
                                        "model": MODEL, "train": {"optimizer": {"name": "sgd", "lr": 0.1}}})
    with pytest.raises(ValidationError, match="index 8 is not among"):
        train_config(8)


def test_alignment_equals_v_k_v_of_the_explicit_ntk_at_the_trained_point(eigen_artifacts, tmp_path, monkeypatch):
    fast_compile(monkeypatch)
    config = train_config(1, alignment={"eigen": EIGEN, "top": 5, "every_eval": True, "target_samples": 20})
    assert set(config.upstream_runs()) == {"data", "alignment"}
    upstream = {**eigen_artifacts, **{("alignment", name): eigen_artifacts[("data", name)] for _, name in eigen_artifacts}}
    ctx = FakeContext(tmp_path, upstream_bytes=upstream)
    run_function("train")(config, ctx)

    dataset = config.data.load(ctx)
    like = build_model(config.model, dataset.input_shape, 1, jax.random.PRNGKey(0))
    trained = eqx.tree_deserialise_leaves(io.BytesIO(ctx.artifacts["params"][0]), like)
    x = np.concatenate([dataset.x_train, dataset.x_test])
    kernel = reference_ntk(trained, x, x).astype(np.float64)
    vectors = np.load(io.BytesIO(eigen_artifacts[("data", "eigenvectors")]))[:5].astype(np.float64)
    for i, v in enumerate(vectors):
        parts = {"train": slice(0, 30), "test": slice(30, 44), "all": slice(0, 44)}
        for name, rows in parts.items():
            expected = v[rows] @ kernel[rows, rows] @ v[rows] / (v[rows] @ v[rows])
            assert ctx.metrics[(f"alignment_{name}", i)] == pytest.approx(expected, rel=2e-4)
    eigenvalues = np.load(io.BytesIO(eigen_artifacts[("data", "eigenvalues")]))
    for i in range(5):
        assert ctx.metrics[("alignment_gain", i)] == pytest.approx(ctx.metrics[("alignment_all", i)] / eigenvalues[i])
    final = max(step for (name, step) in ctx.metrics if name == "test_accuracy")
    table = np.load(io.BytesIO(ctx.artifacts[f"alignment/step_{final}"][0]))
    np.testing.assert_allclose(table[2], [ctx.metrics[("alignment_all", i)] for i in range(5)], rtol=1e-6)
    # kernel-target alignment on the first 20 training examples, targets 2y - 1
    y = 2.0 * dataset.y_train[:20] - 1.0
    k20 = kernel[:20, :20]
    expected = y @ k20 @ y / (np.linalg.norm(k20) * (y @ y))
    assert ctx.metrics[("kernel_target_alignment", final)] == pytest.approx(expected, rel=2e-4)
    assert ctx.metrics[("alignment_peak_index", final)] == float(np.argmax(table[2]))
    assert ("kernel_target_alignment", 0) in ctx.metrics  # at initialization too


def test_the_pretrained_linearization_starts_at_zero_with_the_init_batchnorm_state(tmp_path, monkeypatch):
    """Linearized around a trained ResNet-18's end point without the f(θ0) offset and with the
    BatchNorm statistics reset to the initialization's: its logits are exactly 0 at step 0 and its
    frozen arrays are the init's (not the trained network's) before and after training."""
    from ntklab.engine.models import named_frozen

    fast_compile(monkeypatch)
    data = {"dataset": "synthetic", "n_train": 24, "n_test": 8, "dim": 48, "image_shape": [4, 4, 3]}
    resnet = {"arch": "resnet18", "width": 2, "activation": "gelu"}
    recipe = {"loss": "bce", "optimizer": {"name": "momentum", "lr": 0.05}, "schedule": {"name": "linear"},
              "batch_size": 8, "epochs": 1, "eval_every_steps": 3}
    network = {"task": "train", "seed": 5, "data": data, "model": resnet, "train": recipe}
    upstream = FakeContext(tmp_path, run_key="network")
    run_function("train")(RUN_CONFIG.validate_python(network), upstream)
    config = RUN_CONFIG.validate_python({**network, "expansion_point": network, "reset_frozen": True,
                                         "train": {**recipe, "expansion_order": 1, "linearize_offset": False,
                                                   "compare_to_full": False}})
    ctx = FakeContext(tmp_path, run_key="pretrained", upstream_bytes={("expansion_point", "params"):
                                                                       upstream.artifacts["params"][0]})
    run_function("train")(config, ctx)
    np.testing.assert_array_equal(np.load(io.BytesIO(ctx.artifacts["test_logits/step_0"][0])), 0.0)
    like = build_model(config.model, (4, 4, 3), 1, jax.random.PRNGKey(5))
    trained = eqx.tree_deserialise_leaves(io.BytesIO(upstream.artifacts["params"][0]), like)
    final = eqx.tree_deserialise_leaves(io.BytesIO(ctx.artifacts["params"][0]), like)
    init_state, trained_state, final_state = (named_frozen(m) for m in (like, trained, final))
    assert init_state and any(not np.array_equal(trained_state[k], init_state[k]) for k in init_state)
    for name, value in init_state.items():
        np.testing.assert_array_equal(final_state[name], value)
    assert np.any(np.load(io.BytesIO(ctx.artifacts["test_logits"][0])) != 0), "the linearization did not train"
