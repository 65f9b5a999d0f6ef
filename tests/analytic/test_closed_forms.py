"""Ghorbani's closed-form kernels equal the analytic kernels of the two-layer networks they describe."""

import numpy as np
from pydantic import TypeAdapter

from ntklab.engine import analytic as A
from ntklab.engine import closed_form as C
from ntklab.engine.config import ModelConfig
from ntklab.engine.presets import plan_of

D = 9


def inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, D)) * rng.uniform(0.05, 20.0, size=(7, 1))  # any norm
    x[5] = -3.0 * x[0]  # antipodal: u = -1
    x[6] = 0.0  # the zero input
    return x, rng.normal(size=(4, D))


def two_layer_relu(x, z):
    """mlp, depth 1, ReLU, w_std 1, no bias, NTK parameterization: the network of NTK2 and RFK2."""
    config = TypeAdapter(ModelConfig).validate_python(
        {"arch": "mlp", "depth": 1, "activation": "relu", "parameterization": "ntk", "w_std": 1.0})
    return A.analytic_kernels(plan_of(config), x, z, dtype="float64")


def test_ntk2_and_rf2_are_the_two_layer_relu_kernels():
    x, z = inputs()
    for second in (None, z):
        analytic = two_layer_relu(x, second)
        np.testing.assert_allclose(C.ntk2(x, second), D * analytic["ntk"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(C.rf2(x, second), D * analytic["nngp"], rtol=1e-12, atol=1e-12)


def test_closed_forms_on_known_values():
    x = np.array([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    ntk = C.ntk2(x)
    rf = C.rf2(x)
    np.testing.assert_allclose(np.diag(ntk), [9.0, 4.0, 1.0], rtol=1e-15)  # u = 1: |x|^2
    np.testing.assert_allclose(np.diag(rf), [4.5, 2.0, 0.5], rtol=1e-15)  # u = 1: |x|^2 / 2
    np.testing.assert_allclose(ntk[0, 1], 6.0 / (2 * np.pi), rtol=1e-15)  # u = 0: |x||z| / (2 pi)
    np.testing.assert_allclose(rf[0, 1], 6.0 / (2 * np.pi), rtol=1e-15)
    assert ntk[0, 2] == 0.0 and rf[0, 2] == 0.0  # u = -1


def test_polynomial_kernel():
    x, z = inputs()
    k = C.polynomial(x, z, degree=3, c=0.5)
    i, j = 2, 3
    assert np.isclose(k[i, j], (0.5 + np.dot(x[i], z[j]) / np.sqrt(D)) ** 3, rtol=1e-14)
    np.testing.assert_allclose(C.closed_form_kernel("polynomial", x, degree=1, c=0.0), x @ x.T / np.sqrt(D))
