"""The spiked-covariates generator and the transforms, against hand computations and scipy."""

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError
from scipy.interpolate import RegularGridInterpolator

from ntklab.data import spiked, transforms
from ntklab.data.config import DataConfig
from ntklab.data.sources import load_dataset

parse = TypeAdapter(DataConfig).validate_python


def test_paper_dimensions():
    assert spiked.spike_dimension(1024, 0.4) == 16
    config = parse({"dataset": "spiked"})
    assert (config.d, config.eta, config.n_train, config.n_test, config.degrees) == (1024, 0.4, 2**20, 10000, [2, 3, 4])
    assert (config.train_seed, config.test_seed, config.coefficient_seed) == (145, 2, 14)
    radii = [1024 ** ((0.4 + k) / 2) for k in spiked.GHORBANI_KAPPA_GRID]
    np.testing.assert_allclose(radii[:3], [4, 5.657, 8], rtol=1e-3)
    with pytest.raises(ValidationError, match="at most d0"):
        parse({"dataset": "spiked", "d": 64, "eta": 0.4, "degrees": [2, 6]})


def test_inputs_have_the_spiked_and_bulk_norms():
    d, eta, kappa = 256, 0.5, 0.3
    x = spiked.spiked_inputs(500, d, eta, kappa, seed=1)
    d0 = 16
    np.testing.assert_allclose(np.linalg.norm(x[:, :d0], axis=1), d ** ((eta + kappa) / 2), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x[:, d0:], axis=1), np.sqrt(d), rtol=1e-5)
    assert x.dtype == np.float32


def test_targets_have_unit_rms_per_degree_on_the_training_set():
    config = parse({"dataset": "spiked", "d": 256, "eta": 0.5, "kappa": 0.2, "n_train": 3000, "n_test": 500})
    data = load_dataset(config)
    assert data.num_classes == 0 and data.y_train.dtype == np.float32 and data.x_train.shape == (3000, 256)
    d0 = 16
    beta = spiked.spiked_coefficients(d0, [2, 3, 4], seed=14)
    assert [len(beta[k]) for k in (2, 3, 4)] == [15, 14, 13]
    x = data.x_train.astype(np.float64)
    by_hand = {k: np.array([sum(beta[k][i] * np.prod(row[i:i + k]) for i in range(d0 - k + 1)) for row in x])
               for k in (2, 3, 4)}
    rms = {k: np.sqrt(np.mean(g**2)) for k, g in by_hand.items()}
    for k in (2, 3, 4):
        assert np.sqrt(np.mean((by_hand[k] / rms[k]) ** 2)) == pytest.approx(1.0)
    np.testing.assert_allclose(data.y_train, sum(by_hand[k] / rms[k] for k in (2, 3, 4)), rtol=1e-4, atol=1e-4)
    x_test = data.x_test.astype(np.float64)
    test_parts = spiked.degree_components(x_test, d0, beta)
    np.testing.assert_allclose(data.y_test, sum(test_parts[k] / rms[k] for k in (2, 3, 4)), rtol=1e-4, atol=1e-4)
    again = load_dataset(config)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_test, data.y_test)


def test_grayscale_is_skimage_luma():
    pixels = np.array([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.2, 0.4, 0.6]]]])
    gray = transforms.grayscale(pixels)
    assert gray.shape == (1, 2, 2, 1)
    mixed = 0.2125 * 0.2 + 0.7154 * 0.4 + 0.0721 * 0.6
    np.testing.assert_allclose(gray[0, :, :, 0], [[0.2125, 0.7154], [0.0721, mixed]])


def test_per_image_normalization_and_channel_standardization():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 4, 4, 3)) * np.arange(1, 6)[:, None, None, None]
    x[2] = 0.7
    out = transforms.normalize_images(x)
    flat = out.reshape(5, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1)[[0, 1, 3, 4]], np.sqrt(48))
    np.testing.assert_array_equal(out[2], 0)
    train, test = transforms.standardize_channels(x, x[:2] + 1.0)
    np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1)
    np.testing.assert_allclose(test, train[:2] + 1.0 / x.std(axis=(0, 1, 2)))


def test_resize_to_32x32x3_is_half_pixel_bilinear_with_clamped_edges():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    out = transforms.to_rgb32(x)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    centres = np.clip((np.arange(32) + 0.5) * 28 / 32 - 0.5, 0, 27)
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), axis=-1)
    for image, resized in zip(x, out):
        reference = RegularGridInterpolator((np.arange(28), np.arange(28)), image[..., 0].astype(float))(grid)
        np.testing.assert_array_equal(resized[..., 1], np.floor(reference + 0.5))
        np.testing.assert_array_equal(resized[..., 0], resized[..., 2])


def test_stratified_subsample_keeps_shares_and_depends_on_the_seed():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    chosen = transforms.stratified_subsample(labels, 20, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(chosen, transforms.stratified_subsample(labels, 20, seed=0))
    assert not np.array_equal(chosen, transforms.stratified_subsample(labels, 20, seed=1))


def test_targets_with_the_seeds_centring():
    labels = np.array([2, 0, 9])
    plain = transforms.targets(labels, 10)
    np.testing.assert_array_equal(plain, np.eye(10)[labels])
    ghorbani = transforms.targets(labels, 10, centre="uniform")
    np.testing.assert_allclose(ghorbani, np.eye(10)[labels] - 0.1)
    assert ghorbani.dtype == np.float32
    binary = transforms.targets(np.array([1, 0, 1]), 2, encoding="binary", centre=0.5)
    np.testing.assert_allclose(binary, [[0.5], [-0.5], [0.5]])
    with pytest.raises(ValueError, match="two classes"):
        transforms.targets(labels, 10, encoding="binary")
