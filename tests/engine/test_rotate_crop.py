"""ntkgen's MNIST-family augmentation: a random rotation in [-20°, 20°], then a random crop."""

import numpy as np
import pytest

from ntklab.data.augment import augment_batch, rotate, rotate_crop


def images(n=8, size=8, channels=1, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype(np.float32)


@pytest.mark.parametrize("size", [7, 8])
def test_rotation_by_right_angles_is_exact(size):
    batch = images(n=3, size=size)
    np.testing.assert_array_equal(rotate(batch, np.zeros(3)), batch)
    np.testing.assert_array_equal(rotate(batch, np.full(3, 90.0)), np.rot90(batch, k=1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate(batch, np.full(3, 180.0)), batch[:, ::-1, ::-1])


def test_rotation_leaves_zeros_where_no_pixel_comes_from():
    ones = np.ones((1, 9, 9, 1), np.float32)
    rotated = rotate(ones, np.array([45.0]))
    assert rotated[0, 4, 4, 0] == 1 and rotated[0, 0, 0, 0] == 0 and rotated[0, 0, 4, 0] == 1


def test_each_output_is_a_crop_of_the_input_rotated_by_at_most_20_degrees():
    batch = images()
    out = rotate_crop(batch, seed=3, step=11)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    angles = np.linspace(-20, 20, 8001)
    pad = 4
    for image, result in zip(batch, out):
        rotations = rotate(np.repeat(image[None], len(angles), axis=0), angles)
        padded = np.pad(rotations, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        found = any(
            np.any(np.all(padded[:, dy:dy + 8, dx:dx + 8] == result, axis=(1, 2, 3)))
            for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
        )
        assert found, "not a crop of a rotation within 20 degrees"
    assert not np.array_equal(rotate(batch, np.full(len(batch), 25.0)), rotate(batch, np.full(len(batch), 20.0)))


def test_rotate_crop_is_a_pure_function_of_seed_and_step():
    batch = images()
    first = augment_batch(batch, "rotate_crop", 5, 7)
    np.testing.assert_array_equal(first, rotate_crop(batch.copy(), seed=5, step=7))
    assert not np.array_equal(first, rotate_crop(batch, seed=5, step=8))
    assert not np.array_equal(first, rotate_crop(batch, seed=6, step=7))
