"""Random-features Gram matrices: seeded, chunking-invariant, and converging like N^(-1/2)."""

import numpy as np
import pytest

from ntklab.engine.random_features import limit_kernel, random_features_gram


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(24, 30)) * rng.uniform(0.2, 3.0, size=(24, 1)), rng.normal(size=(5, 30))


@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_error_falls_like_inverse_square_root_of_features(activation):
    x, _ = data()
    limit = limit_kernel(x, activation=activation)
    widths = np.array([2**8, 2**10, 2**12, 2**14])
    errors = []
    for n in widths:
        runs = [random_features_gram(x, features=int(n), activation=activation, seed=s) for s in range(3)]
        errors.append(np.mean([np.linalg.norm(k - limit) / np.linalg.norm(limit) for k in runs]))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.65 < slope < -0.35, (slope, errors)
    assert errors[-1] < 0.05


def test_seeded_nested_and_independent_of_the_chunk_size():
    x, z = data()
    a = random_features_gram(x, z, features=3000, seed=7, chunk=1024)
    b = random_features_gram(x, z, features=3000, seed=7, chunk=100_000)
    np.testing.assert_array_equal(a, b)  # bit for bit
    assert not np.array_equal(a, random_features_gram(x, z, features=3000, seed=8))
    # the first N features of a wider model are the narrower model's: the unnormalized sums nest
    wide = random_features_gram(x, z, features=3100, seed=7, normalize=False)
    narrow = random_features_gram(x, z, features=3000, seed=7, normalize=False)
    assert np.all(wide >= narrow - 1e-9)  # ReLU features are non-negative: adding features only adds


def test_intercept_unnormalized_and_resume():
    x, _ = data()
    plain = random_features_gram(x, features=2048, seed=1, normalize=False)
    with_one = random_features_gram(x, features=2048, seed=1, normalize=False, intercept=True)
    np.testing.assert_allclose(with_one - plain, 1.0, rtol=0, atol=1e-9)
    checkpoints = []
    stop = iter([False, True])
    assert random_features_gram(x, features=2048, seed=1, chunk=1024, should_stop=lambda: next(stop),
                                on_chunk=lambda done, g: checkpoints.append((done, g))) is None
    resumed = random_features_gram(x, features=2048, seed=1, chunk=1024, normalize=False, state=checkpoints[-1])
    np.testing.assert_array_equal(resumed, plain)
