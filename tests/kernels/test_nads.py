"""NADs against the SVD of the explicit mixed-derivative matrix (jacfwd of the parameter gradient)
on a small CNN and a closed form on a one-hidden-layer network; the NAD-separable datasets."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakectx import FakeContext
from jax.flatten_util import ravel_pytree

from ntklab.data.nad_separable import nad_separable
from ntklab.engine.entk import cast_floats
from ntklab.engine.models import build_model, partition_parameters
from ntklab.engine.nads import neural_anisotropy_directions
from ntklab.tasks.registry import RUN_CONFIG, run_function

CNN = {"arch": "cnn", "depth": 2, "channels": 3, "kernel_size": 3, "padding": "SAME", "activation": "gelu",
       "readout": "gap", "b_std": 0.1}
SHAPE = (5, 5, 1)


def network(config, shape=SHAPE, seed=0):
    model = build_model(RUN_CONFIG.validate_python({"task": "nads", "model": config}).model, shape, 1,
                        jax.random.PRNGKey(seed))
    return partition_parameters(cast_floats(model, jnp.float64))


def mixed_derivative(params, rest, points):
    """(P, D): jacfwd in x of the parameter gradient of the logit, averaged over the points."""
    import equinox as eqx

    flat, unravel = ravel_pytree(params)

    def gradient(x):
        return jax.grad(lambda p: eqx.combine(unravel(p), rest)(x[None])[0, 0])(flat)

    return np.mean([np.asarray(jax.jacfwd(gradient)(jnp.asarray(x))).reshape(flat.size, -1) for x in points], axis=0)


def assert_matches_svd(spectrum, matrix, k):
    _, singular, right = np.linalg.svd(matrix, full_matrices=False)
    np.testing.assert_allclose(spectrum.values, singular[:k] ** 2, rtol=1e-8)
    for got, expected in zip(spectrum.vectors, right[:k]):
        assert min(np.max(np.abs(got - expected)), np.max(np.abs(got + expected))) < 1e-6


@pytest.mark.parametrize("route", ["explicit", "krylov"])
@pytest.mark.parametrize("sigma, count", [(0.0, 1), (1.0, 3)])
def test_both_routes_match_the_svd_of_the_explicit_mixed_derivative(route, sigma, count):
    with jax.enable_x64(True):
        params, rest = network(CNN)
        points = sigma * np.random.default_rng(0).standard_normal((count, *SHAPE))
        matrix = mixed_derivative(params, rest, points)
        k = 8
        spectrum = neural_anisotropy_directions(lambda m, x: m(x), params, rest, points, k, route)
    assert spectrum.vectors.shape == (k, 25)
    assert_matches_svd(spectrum, matrix, k)


def test_one_hidden_layer_closed_form():
    """f(x) = φ(x W1) W2 without biases at x = 0: AᵀA = φ'(0)² (W1 W1ᵀ + |W2|² I), φ'(0) = 1/2 for GeLU."""
    with jax.enable_x64(True):
        model = build_model(RUN_CONFIG.validate_python(
            {"task": "nads", "model": {"arch": "mlp", "depth": 1, "width": 7, "activation": "gelu"}}).model,
            (3, 3, 1), 1, jax.random.PRNGKey(1))
        params, rest = partition_parameters(cast_floats(model, jnp.float64))
        spectrum = neural_anisotropy_directions(lambda m, x: m(x), params, rest, np.zeros((1, 3, 3, 1)), 9)
        w1, w2 = np.asarray(params.layers[0].weight), np.asarray(params.layers[1].weight)
    gram = 0.25 * (w1 @ w1.T + np.sum(w2**2) * np.eye(9))
    values, vectors = np.linalg.eigh(gram)
    np.testing.assert_allclose(spectrum.values, values[::-1], rtol=1e-10)
    for got, expected in zip(spectrum.vectors[:2], vectors[:, ::-1].T[:2]):  # the top two are simple
        assert min(np.max(np.abs(got - expected)), np.max(np.abs(got + expected))) < 1e-8


def test_the_nads_task_keeps_d_minus_one_by_default(tmp_path):
    config = RUN_CONFIG.validate_python({"task": "nads", "model": CNN, "shape": [4, 4, 1], "dtype": "float64"})
    ctx = FakeContext(tmp_path)
    run_function("nads")(config, ctx)
    nads = np.load(io.BytesIO(ctx.artifacts["nads"][0]))
    values = np.load(io.BytesIO(ctx.artifacts["values"][0]))
    assert nads.shape == (15, 16) and values.shape == (15,)
    np.testing.assert_allclose(np.linalg.norm(nads, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.diff(values) <= 0)
    assert ctx.series("nad_value") == pytest.approx(list(values))


def test_nad_separable_noise_is_orthogonal_labels_balanced_draws_deterministic():
    u = np.random.default_rng(3).standard_normal(16)
    first = nad_separable(u, (4, 4, 1), 3000, 1000, epsilon=1.0, sigma=1.0, seed=42)
    again = nad_separable(u, (4, 4, 1), 3000, 1000, epsilon=1.0, sigma=1.0, seed=42)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    x_train, y_train, x_test, y_test = first
    assert x_train.shape == (3000, 4, 4, 1) and x_test.shape == (1000, 4, 4, 1)
    unit = u / np.linalg.norm(u)
    x = np.concatenate([x_train, x_test]).reshape(4000, -1).astype(np.float64)
    y = np.concatenate([y_train, y_test])
    along = x @ unit
    np.testing.assert_allclose(along, 0.5 * (2 * y - 1), atol=1e-5)  # the only class signal, exactly ±ε/2
    noise = x - np.outer(along, unit)
    assert np.abs(noise @ unit).max() < 1e-5 and noise.std() == pytest.approx(1.0, rel=0.05)
    assert set(np.unique(y)) == {0, 1} and abs(y.mean() - 0.5) < 3 * 0.5 / np.sqrt(4000)
    other = nad_separable(u, (4, 4, 1), 3000, 1000, epsilon=1.0, sigma=1.0, seed=43)
    assert not np.array_equal(other[0], x_train)
