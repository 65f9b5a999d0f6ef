import numpy as np
import pytest

from ntklab.data.augment import augment_batch, crop_flip


def images(n=16, size=6, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype(np.float32)


def candidates(image: np.ndarray, pad: int):
    """Every crop of the zero-padded image, flipped or not: (dy, dx, flip) -> crop."""
    height, width, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + height, dx : dx + width]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def test_each_output_is_a_flipped_or_unflipped_crop_of_the_padded_input():
    batch = images()
    out = crop_flip(batch, seed=3, step=11)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    for image, result in zip(batch, out):
        matches = [params for params, crop in candidates(image, 4) if np.array_equal(crop, result)]
        assert matches, "not a crop of the padded image"


def test_augmentation_is_a_pure_function_of_seed_and_step():
    batch = images()
    first = crop_flip(batch, seed=5, step=7)
    np.testing.assert_array_equal(first, crop_flip(batch.copy(), seed=5, step=7))
    assert not np.array_equal(first, crop_flip(batch, seed=5, step=8))
    assert not np.array_equal(first, crop_flip(batch, seed=6, step=7))
    np.testing.assert_array_equal(augment_batch(batch, "crop_flip", 5, 7), first)
    assert augment_batch(batch, "none", 5, 7) is batch


def test_offsets_cover_the_padding_and_half_the_images_are_flipped():
    # one bright pixel in the corner of an otherwise empty 9x9 image locates the crop and the flip
    batch = np.zeros((4000, 9, 9, 1), np.float32)
    batch[:, 0, 0, 0] = 1.0
    out = crop_flip(batch, seed=1, step=0)
    seen_rows, seen_cols, flipped, unflipped = set(), set(), 0, 0
    for result in out:
        found = np.argwhere(result[..., 0] == 1.0)
        if len(found) == 0:
            continue  # the pixel was cropped away (offset beyond it)
        (row, col), = found
        seen_rows.add(row)
        seen_cols.add(col)
        flipped += col > 4  # unflipped, the pixel lands in columns 0..4; flipped, in 4..8
        unflipped += col < 4
    assert seen_rows == set(range(5)), "the pixel lands at rows 0..4 (offsets 4..0)"
    assert seen_cols == set(range(9))
    assert flipped / (flipped + unflipped) == pytest.approx(0.5, abs=0.05)
    assert np.sum(out == 1.0) == pytest.approx(4000 * (5 / 9) ** 2, rel=0.1), "visible when dy, dx <= 4: 25 of 81"


def test_non_image_batches_are_refused():
    with pytest.raises(ValueError, match="NHWC"):
        crop_flip(np.zeros((3, 5)), seed=0, step=0)
