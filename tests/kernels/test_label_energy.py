"""label_energy: the share of the centred one-hot labels' energy in a kernel's top eigenvectors,
against projections onto numpy's eigh eigenvectors with targets laid out row by row here, and a
closed form (a kernel made of the labels holds all their energy in its top C - 1 vectors)."""

import io

import numpy as np
import pytest
from fakectx import FakeContext

from ntklab.data.sources import load_dataset
from ntklab.engine.eigen import label_energy, label_targets
from ntklab.kernelstore import KernelStore
from ntklab.tasks.registry import RUN_CONFIG, run_function

CLASSES = 3
DATA = {"dataset": "synthetic", "n_train": 30, "n_test": 10, "dim": 16, "num_classes": CLASSES}


def centred_one_hot_rows(labels, classes, outputs):
    """The targets over the kernel's rows, written out row by row: (n·outputs, 1) sample-major, or
    (n, classes) for one output."""
    n = len(labels)
    share = [sum(1 for y in labels if y == c) / n for c in range(classes)]
    if outputs == 1:
        return np.array([[float(y == c) - share[c] for c in range(classes)] for y in labels])
    return np.array([[float(labels[i] == c) - share[c]] for i in range(n) for c in range(classes)])


def projected_shares(kernel, targets, k):
    """‖P_k Y‖² / ‖Y‖² for the projection P_k onto the top k + 1 eigenvectors of eigh, for each k."""
    _, vectors = np.linalg.eigh(kernel)
    vectors = vectors[:, ::-1]
    shares = []
    for top in range(1, k + 1):
        projection = vectors[:, :top] @ vectors[:, :top].T
        shares.append(np.sum((projection @ targets) ** 2) / np.sum(targets**2))
    return np.array(shares)


def test_a_kernel_made_of_the_labels_holds_their_energy_in_its_top_classes_minus_one_vectors():
    labels = np.random.default_rng(0).integers(0, CLASSES, 40)
    targets = label_targets(labels, CLASSES, 1)
    noise = np.random.default_rng(1).standard_normal((40, 40)) * 1e-3
    kernel = targets @ targets.T + noise @ noise.T
    values, vectors = np.linalg.eigh(kernel)
    energy = label_energy(vectors[:, ::-1].T, targets)
    assert energy[CLASSES - 2] == pytest.approx(1.0, abs=1e-6)
    assert energy[0] < 1 - 1e-3  # two centred classes' directions, not one
    assert np.all(np.diff(energy) >= -1e-12) and energy[-1] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("outputs", [1, CLASSES])
def test_label_targets_are_the_kernels_rows(outputs):
    labels = np.array([0, 2, 2, 1, 0, 2])
    np.testing.assert_allclose(label_targets(labels, CLASSES, outputs), centred_one_hot_rows(labels, CLASSES, outputs))


@pytest.mark.parametrize("labels, message", [(np.array([0.5, 1.0]), "integer class labels"),
                                             (np.array([0, 1]), "has no rows for the labels")])
def test_label_targets_refuse_what_has_no_rows(labels, message):
    with pytest.raises(ValueError, match=message):
        label_targets(labels, CLASSES, 2)


@pytest.mark.parametrize("outputs", [1, CLASSES])
def test_the_eigen_task_logs_the_label_energy_of_the_training_labels(tmp_path, outputs):
    kernel = {"task": "kernel", "seed": 0, "data": DATA, "points": "train", "outputs": outputs,
              "kernel": {"kind": "empirical", "model": {"arch": "mlp", "depth": 1, "width": 16}, "dtype": "float64"},
              "storage_dtype": "float64"}
    kernel_config = RUN_CONFIG.validate_python(kernel)
    run_function("kernel")(kernel_config, FakeContext(tmp_path, run_key="kernel"))
    ctx = FakeContext(tmp_path, run_key="eigen", upstream_dirs={("kernel", "kernel"): tmp_path / "kernel" / "kernel"})
    run_function("eigen")(RUN_CONFIG.validate_python({"task": "eigen", "kernel": kernel, "method": "dense", "k": 8,
                                                      "vectors_dtype": "float64"}), ctx)
    stored = KernelStore.open(tmp_path / "kernel" / "kernel").read_train()
    assert stored.shape == (30 * outputs, 30 * outputs)
    labels = load_dataset(kernel_config.data).y_train
    expected = projected_shares(stored, centred_one_hot_rows(labels, CLASSES, outputs), 8)
    np.testing.assert_allclose(ctx.series("label_energy"), expected, rtol=1e-8, atol=1e-12)
    vectors = np.load(io.BytesIO(ctx.artifacts["eigenvectors"][0]))
    assert vectors.shape == (8, 30 * outputs)
