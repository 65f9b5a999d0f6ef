import numpy as np
import pytest

from ntklab.engine.losses import accuracy, mean_loss

LOGITS = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 4.0, 0.0], [0.3, 0.3, -2.0]], np.float32)
LABELS = np.array([0, 2, 0, 1], np.int32)
ONE_HOT = np.eye(3)[LABELS]


def log_sigmoid(z):
    return -np.log1p(np.exp(-z))


def test_mse():
    expected = np.mean(0.5 * np.sum((LOGITS - ONE_HOT) ** 2, axis=1))
    assert float(mean_loss("mse", LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_mse_single_output():
    logits = np.array([[0.3], [-0.2], [1.5]], np.float32)
    labels = np.array([1, 0, 1], np.int32)
    expected = np.mean(0.5 * (logits[:, 0] - labels) ** 2)
    assert float(mean_loss("mse", logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy():
    z = LOGITS.astype(np.float64)
    log_softmax = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(4), LABELS])
    assert float(mean_loss("cross_entropy", LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_bce_one_hot_sums_over_outputs():
    z = LOGITS.astype(np.float64)
    per_output = -(ONE_HOT * log_sigmoid(z) + (1 - ONE_HOT) * log_sigmoid(-z))
    expected = np.mean(np.sum(per_output, axis=1))
    assert float(mean_loss("bce", LOGITS, LABELS)) == pytest.approx(expected, rel=1e-6)


def test_bce_single_output():
    logits = np.array([[0.3], [-0.2], [1.5]], np.float32)
    labels = np.array([1, 0, 0], np.int32)
    z = logits[:, 0].astype(np.float64)
    expected = -np.mean(labels * log_sigmoid(z) + (1 - labels) * log_sigmoid(-z))
    assert float(mean_loss("bce", logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_accuracy():
    assert float(accuracy(LOGITS, LABELS)) == pytest.approx(0.5)
    single = np.array([[0.3], [-0.2], [1.5], [-4.0]], np.float32)
    assert float(accuracy(single, np.array([1, 0, 0, 1], np.int32))) == pytest.approx(0.5)
