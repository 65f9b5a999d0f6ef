"""Ghorbani's DCT perturbations against independent references: an explicit DCT-II matrix, the
noise recovered from the output, and training statistics that pin the replacement down exactly."""

import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.data import perturb
from ntklab.data.config import DataConfig
from ntklab.data.sources import load_dataset

parse = TypeAdapter(DataConfig).validate_python


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II: C[k, j] = a_k cos(pi (2j + 1) k / 2n), a_0 = sqrt(1/n), a_k = sqrt(2/n)."""
    k, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def reference_dct(x: np.ndarray) -> np.ndarray:
    """C X C^T per image and channel: a DCT along the rows, then along the columns."""
    rows, cols = dct_matrix(x.shape[1]), dct_matrix(x.shape[2])
    return np.einsum("ah,nhwc,bw->nabc", rows, x, cols)


def images(n=6, h=8, w=8, c=1, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)) + 3.0


def test_dct_matches_the_explicit_matrix_and_inverts():
    x = images(n=3, h=8, w=6, c=2)
    np.testing.assert_allclose(perturb.dct2(x), reference_dct(x), atol=1e-12)
    np.testing.assert_allclose(perturb.idct2(perturb.dct2(x)), x, atol=1e-12)


@pytest.mark.parametrize("side,count", [(28, 600), (32, 782), (8, 45)])
def test_mask_is_the_quarter_disc_at_the_highest_frequency_corner(side, count):
    mask = perturb.high_frequency_mask(side, side)
    assert mask.sum() == count
    assert mask[side - 1, side - 1] == 1 and mask[0, 0] == 0 and mask[0, side - 1] == 1 and mask[side - 1, 0] == 1
    assert mask[1, 1] == 0


def test_high_frequency_noise_at_tau_zero_is_centring_and_normalization():
    x = images(h=28, w=28)
    out = perturb.add_high_frequency_noise(x, 0.0, seed=5, stream=0)
    centred = x - x.mean(axis=(1, 2, 3), keepdims=True)
    expected = centred * 28 / np.linalg.norm(centred.reshape(len(x), -1), axis=1)[:, None, None, None]
    np.testing.assert_allclose(out, expected, atol=1e-10)


@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_added_noise_has_the_requested_norm_and_lies_in_the_mask(tau):
    x = images(n=5, h=28, w=28)
    out = perturb.add_high_frequency_noise(x, tau, seed=7, stream=0)
    d = 28 * 28
    np.testing.assert_allclose(np.linalg.norm(out.reshape(5, -1), axis=1), np.sqrt(d), rtol=1e-10)
    signal = reference_dct(x - x.mean(axis=(1, 2, 3), keepdims=True))[..., 0]
    noisy = reference_dct(out)[..., 0]
    outside = perturb.high_frequency_mask(28, 28) == 0
    for i in range(5):
        # outside the mask the output is the signal rescaled: recover the scale, then the noise
        scale = np.sum(noisy[i][outside] * signal[i][outside]) / np.sum(signal[i][outside] ** 2)
        np.testing.assert_allclose(noisy[i][outside], scale * signal[i][outside], atol=1e-9)
        noise = noisy[i] / scale - signal[i]
        np.testing.assert_allclose(noise[outside], 0, atol=1e-9)
        assert np.linalg.norm(noise) == pytest.approx(tau * np.linalg.norm(signal[i]), rel=1e-9)
        assert np.count_nonzero(np.abs(noise) > 1e-9) > 0.95 * 600


def test_high_frequency_noise_is_deterministic_for_a_seed():
    x = images(h=8, w=8)
    first = perturb.add_high_frequency_noise(x, 1.0, seed=3, stream=0)
    np.testing.assert_array_equal(first, perturb.add_high_frequency_noise(x, 1.0, seed=3, stream=0))
    assert not np.allclose(first, perturb.add_high_frequency_noise(x, 1.0, seed=4, stream=0))
    assert not np.allclose(first, perturb.add_high_frequency_noise(x, 1.0, seed=3, stream=1))


def low_frequency(x_train, x_test, t, seed=1):
    mean, covariance = perturb.dct_statistics(x_train)
    root = perturb.psd_sqrt(covariance)
    return (perturb.replace_low_frequencies(x_train, t, mean, root, seed, 0),
            perturb.replace_low_frequencies(x_test, t, mean, root, seed, 1))


def test_low_frequency_replacement_keeps_the_coefficients_outside_the_block():
    x_train, x_test = images(n=40, h=8, w=8, c=3, seed=1), images(n=10, h=8, w=8, c=3, seed=2)
    out_train, out_test = low_frequency(x_train, x_test, t=3)
    block = np.zeros((8, 8), dtype=bool)
    block[:3, :3] = True
    for before, after in ((x_train, out_train), (x_test, out_test)):
        old, new = reference_dct(before), reference_dct(after)
        np.testing.assert_allclose(new[:, ~block, :], old[:, ~block, :], atol=1e-10)
        assert np.all(np.abs(new[:, block, :] - old[:, block, :]) > 1e-12)
    unchanged, _ = low_frequency(x_train, x_test, t=0)
    np.testing.assert_array_equal(unchanged, x_train)
    again_train, again_test = low_frequency(x_train, x_test, t=3)
    np.testing.assert_array_equal(again_train, out_train)
    np.testing.assert_array_equal(again_test, out_test)
    assert not np.allclose(low_frequency(x_train, x_test, t=3, seed=2)[0], out_train)


def test_low_frequency_block_comes_from_the_training_statistics():
    # every training image has the same 2x2 block, so the block's covariance is zero and the test
    # images' new block must be exactly the training images' block
    rng = np.random.default_rng(0)
    train_dct = rng.normal(size=(30, 6, 6, 1))
    train_dct[:, :2, :2, :] = [[[4.0], [-1.0]], [[2.5], [0.5]]]
    x_train = perturb.idct2(train_dct)
    x_test = images(n=5, h=6, w=6, seed=9)
    _, out_test = low_frequency(x_train, x_test, t=2)
    expected = np.broadcast_to(train_dct[0, :2, :2, 0], (5, 2, 2))
    np.testing.assert_allclose(reference_dct(out_test)[:, :2, :2, 0], expected, atol=1e-9)


def test_replaced_block_has_the_training_mean_and_covariance():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(16, 16))
    x_train = perturb.idct2((rng.normal(size=(20000, 16)) @ mixing + np.arange(16.0)).reshape(-1, 4, 4, 1))
    out, _ = low_frequency(x_train, x_train[:2], t=4)  # the whole image is resampled
    samples = reference_dct(out).reshape(len(out), -1)
    np.testing.assert_allclose(samples.mean(axis=0), np.arange(16.0), atol=0.15)
    np.testing.assert_allclose(np.cov(samples.T), mixing.T @ mixing, atol=0.06 * np.abs(mixing.T @ mixing).max())


def test_digits_with_high_frequency_noise_through_the_config():
    clean = load_dataset(parse({"dataset": "digits"}))
    at_zero = load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": 0.0}}))
    centred = clean.x_train - clean.x_train.mean(axis=(1, 2, 3), keepdims=True)
    norms = np.linalg.norm(centred.reshape(len(centred), -1), axis=1)[:, None, None, None]
    np.testing.assert_allclose(at_zero.x_train, centred * 8 / norms, atol=1e-5)
    noisy = load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": 2.0}}))
    assert noisy.x_train.shape == (1347, 8, 8, 1) and noisy.x_train.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(noisy.x_test.reshape(450, -1), axis=1), 8, rtol=1e-5)
    np.testing.assert_array_equal(noisy.y_train, clean.y_train)
    again = load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_high", "tau": 2.0}}))
    np.testing.assert_array_equal(again.x_train, noisy.x_train)


def test_low_frequency_threshold_larger_than_the_image_is_an_error():
    with pytest.raises(ValueError, match="threshold 9 exceeds the 8x8 image"):
        load_dataset(parse({"dataset": "digits", "noise": {"kind": "dct_low", "threshold": 9}}))


def test_paper_grids():
    assert len(perturb.GHORBANI_TAU_GRID) == 15
    assert perturb.GHORBANI_TAU_GRID[0] == 0.0 and perturb.GHORBANI_TAU_GRID[-1] == 3.0
    assert perturb.GHORBANI_TAU_GRID[1] == pytest.approx(3 / 14)
    assert perturb.FMNIST_LOW_FREQUENCY_THRESHOLDS == tuple(range(1, 28, 2))
