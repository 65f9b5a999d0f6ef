import numpy as np
import pytest
from pydantic import TypeAdapter
from sklearn.svm import LinearSVC

from ntklab.data.config import DataConfig
from ntklab.data.sources import load_dataset
from ntklab.data.transforms import stratified_subsample

parse_data = TypeAdapter(DataConfig).validate_python


def assert_same(a, b):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_digits_shapes_and_standardization():
    data = load_dataset(parse_data({"dataset": "digits"}))
    assert data.x_train.shape == (1347, 8, 8, 1) and data.x_test.shape == (450, 8, 8, 1)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert abs(float(data.x_train.mean())) < 1e-5
    assert float(data.x_train.std()) == pytest.approx(1.0, rel=1e-5)
    assert set(np.unique(data.y_test)) == set(range(10))


def test_digits_unstandardized_pixels_are_in_unit_interval():
    data = load_dataset(parse_data({"dataset": "digits", "standardize": False}))
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0


def test_digits_split_is_deterministic_and_stratified():
    config = parse_data({"dataset": "digits", "split_seed": 3})
    first, second = load_dataset(config), load_dataset(config)
    assert_same(first, second)
    other = load_dataset(parse_data({"dataset": "digits", "split_seed": 4}))
    assert not np.array_equal(first.y_train, other.y_train)
    train_shares = np.bincount(first.y_train) / len(first.y_train)
    test_shares = np.bincount(first.y_test) / len(first.y_test)
    np.testing.assert_allclose(train_shares, test_shares, atol=0.01)


def test_digits_subsample_is_stratified_and_deterministic():
    config = parse_data({"dataset": "digits", "n_train": 100, "n_test": 50})
    data = load_dataset(config)
    assert len(data.y_train) == 100 and len(data.y_test) == 50
    assert np.bincount(data.y_train, minlength=10).min() >= 9
    assert np.bincount(data.y_test, minlength=10).min() >= 4
    assert_same(data, load_dataset(config))
    assert abs(float(data.x_train.mean())) < 1e-5


def test_subsample_larger_than_split_is_an_error():
    with pytest.raises(ValueError, match="cannot subsample 2000 samples from a split of 1347"):
        load_dataset(parse_data({"dataset": "digits", "n_train": 2000}))


def test_stratified_subsample_keeps_class_shares():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    chosen = stratified_subsample(labels, 20, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [12, 6, 2]
    assert len(set(chosen.tolist())) == 20


def test_synthetic_is_deterministic_and_shaped():
    config = parse_data({"dataset": "synthetic", "n_train": 64, "n_test": 32, "dim": 12, "image_shape": [2, 2, 3]})
    data = load_dataset(config)
    assert data.x_train.shape == (64, 2, 2, 3) and data.x_test.shape == (32, 2, 2, 3)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32
    assert_same(data, load_dataset(config))
    flat = load_dataset(parse_data({"dataset": "synthetic", "n_train": 64, "n_test": 32, "dim": 12}))
    assert flat.input_shape == (12,)
    np.testing.assert_array_equal(flat.x_train.reshape(64, 2, 2, 3), data.x_train)


def test_synthetic_labels_come_from_a_linear_teacher():
    data = load_dataset(parse_data({"dataset": "synthetic", "n_train": 300, "dim": 8, "num_classes": 2}))
    classifier = LinearSVC(C=1e4, max_iter=100000).fit(data.x_train, data.y_train)
    assert classifier.score(data.x_train, data.y_train) == 1.0
    assert 0.2 < np.mean(data.y_train) < 0.8


def test_synthetic_label_noise_corrupts_the_training_labels_only():
    fields = {"dataset": "synthetic", "n_train": 1000, "num_classes": 4}
    clean = load_dataset(parse_data(fields))
    noisy = load_dataset(parse_data({**fields, "label_noise": 0.4}))
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)
    changed = np.mean(clean.y_train != noisy.y_train)
    assert changed == pytest.approx(0.4 * 3 / 4, abs=0.05)
