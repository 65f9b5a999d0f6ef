"""Taylor expansions of models: exactness on polynomials, the order of the error, the linearization
against an explicit JVP, the coefficients against brute-force derivatives, and the custom
derivative rule against reverse mode straight through the nested derivative."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from pydantic import TypeAdapter

from ntklab.engine.config import ModelConfig
from ntklab.engine.models import build_model, partition_parameters
from ntklab.engine.taylor import (
    Network,
    TaylorExpansion,
    _call_model,
    _polynomial_value,
    make_forward,
    taylor_coefficients,
    taylor_polynomial,
)

parse_model = TypeAdapter(ModelConfig).validate_python


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def f64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def model_and_inputs(config: dict, input_shape=(6,), out_dim=3, n=5, seed=0):
    model = f64(build_model(parse_model(config), input_shape, out_dim, jax.random.PRNGKey(seed)))
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (n, *input_shape), jnp.float64)
    return model, x


def moved(model, scale: float, seed=2, positive=False):
    """The model with every parameter moved by scale * N(0, 1) (or |N(0, 1)|)."""
    params, rest = partition_parameters(model)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noise = [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)]
    if positive:
        noise = [jnp.abs(z) for z in noise]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, [p + scale * z for p, z in zip(leaves, noise)]), rest)


@eqx.filter_jit
def expand(center, model, x, order: int, offset: bool = True):
    return TaylorExpansion(center, order, offset)(model, x)


@eqx.filter_jit
def forward(model, x):
    return model(x)


def relative_error(a, b) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


# ----------------------------------------------------------------------------------------------
# Exactness on polynomials


def cubic(p, x):
    """A polynomial of degree 3 in the parameters (a, b, c)."""
    return p["a"] ** 3 * x + p["a"] * p["b"] * x**2 + p["c"] + 2.0 * p["b"] ** 2


def cubic_taylor(p0, d, x, order):
    """Closed-form Taylor polynomials of `cubic` around p0 in direction d."""
    a, b = p0["a"], p0["b"]
    da, db, dc = d["a"], d["b"], d["c"]
    terms = [
        cubic(p0, x),
        3 * a**2 * da * x + (da * b + a * db) * x**2 + dc + 4 * b * db,
        3 * a * da**2 * x + da * db * x**2 + 2 * db**2,
        da**3 * x,
    ]
    return sum(terms[: order + 1])


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_expansion_of_a_cubic_matches_its_closed_form_and_is_exact_from_order_three(order):
    p0 = {"a": jnp.array([0.7, -1.2]), "b": jnp.array([0.3, 2.0]), "c": jnp.array([1.5, -0.5])}
    d = {"a": jnp.array([0.9, 0.4]), "b": jnp.array([-1.1, 0.6]), "c": jnp.array([2.0, 1.0])}
    x = jnp.array([1.3, -0.8])
    value = taylor_polynomial(cubic, p0, d, x, order=order)
    np.testing.assert_allclose(value, cubic_taylor(p0, d, x, order), rtol=1e-12)
    exact = cubic(jax.tree_util.tree_map(jnp.add, p0, d), x)
    if order >= 3:
        np.testing.assert_allclose(value, exact, rtol=1e-12)
    else:
        assert relative_error(value, exact) > 0.05


@pytest.mark.parametrize(
    "config",
    [
        {"arch": "rf", "width": 16},
        {"arch": "nt", "width": 16, "activation": "erf"},
        {"arch": "logistic", "b_std": 0.5, "parameterization": "ntk"},
    ],
)
def test_models_linear_in_their_parameters_are_their_own_linearization(config):
    model, x = model_and_inputs(config, input_shape=(4, 4, 1))
    far = moved(model, 3.0)
    np.testing.assert_allclose(TaylorExpansion(model, 1, True)(far, x), far(x), rtol=1e-10, atol=1e-10)
    assert relative_error(far(x), model(x)) > 0.5


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_relu_networks_in_one_activation_region_are_polynomials_of_their_depth(arch):
    """With positive inputs, weights and biases every ReLU is the identity, so a network with L
    weight layers is a polynomial of degree L in its parameters: exact from order L on."""
    config = {"arch": arch, "depth": 2, "b_std": 0.5, "activation": "relu"}
    config.update({"width": 8} if arch == "mlp" else {"channels": 3, "padding": "SAME"})
    input_shape = (6,) if arch == "mlp" else (4, 4, 2)
    model, x = model_and_inputs(config, input_shape=input_shape)
    params, rest = partition_parameters(model)
    model = eqx.combine(jax.tree_util.tree_map(jnp.abs, params), rest)
    x = jnp.abs(x)
    far = moved(model, 0.3, positive=True)
    orders = (1, 2, 3, 4) if arch == "mlp" else (2, 3)
    errors = {k: relative_error(expand(model, far, x, k), far(x)) for k in orders}
    assert all(errors[k] > 1e-4 for k in orders if k < 3)
    assert all(errors[k] < 1e-12 for k in orders if k >= 3)


# ----------------------------------------------------------------------------------------------
# The error of order k shrinks like |delta|^(k+1)


@pytest.mark.parametrize(
    "config,input_shape,orders",
    [
        ({"arch": "mlp", "depth": 2, "width": 16, "activation": "erf", "b_std": 0.3}, (6,), (1, 2, 3, 4)),
        ({"arch": "cnn", "depth": 2, "channels": 4, "activation": "swish", "b_std": 0.2, "padding": "SAME"},
         (5, 5, 2), (1, 2)),
    ],
)
def test_error_of_order_k_shrinks_like_delta_to_the_k_plus_one(config, input_shape, orders):
    model, x = model_and_inputs(config, input_shape=input_shape)
    scales = np.array([0.02, 0.04, 0.08])
    for order in orders:
        errors = []
        for scale in scales:
            far = moved(model, scale)
            errors.append(float(jnp.linalg.norm(expand(model, far, x, order) - forward(far, x))))
        slope = np.polyfit(np.log(scales), np.log(errors), 1)[0]
        assert slope == pytest.approx(order + 1, abs=0.25), (order, errors)


# ----------------------------------------------------------------------------------------------
# Against independent derivatives


def test_linearization_is_f0_plus_an_explicit_jvp():
    model, x = model_and_inputs({"arch": "mlp", "depth": 2, "width": 12, "activation": "gelu", "b_std": 0.2})
    far = moved(model, 0.1)
    params0, rest = partition_parameters(model)
    delta = jax.tree_util.tree_map(jnp.subtract, partition_parameters(far)[0], params0)
    f0, jvp = jax.jvp(lambda p: eqx.combine(p, rest)(x), (params0,), (delta,))
    np.testing.assert_allclose(TaylorExpansion(model, 1, True)(far, x), f0 + jvp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(TaylorExpansion(model, 1, False)(far, x), jvp, rtol=1e-12, atol=1e-12)
    # and it is not the network
    assert relative_error(f0 + jvp, far(x)) > 1e-4


def test_coefficients_match_nested_jacfwd_and_the_hessian():
    model, x = model_and_inputs({"arch": "mlp", "depth": 1, "width": 7, "activation": "tanh", "b_std": 0.4})
    far = moved(model, 0.2)
    params0, rest = partition_parameters(model)
    delta = jax.tree_util.tree_map(jnp.subtract, partition_parameters(far)[0], params0)
    coefficients = taylor_coefficients(_call_model, params0, delta, (rest, x), 4)

    def along(t):
        return _call_model(jax.tree_util.tree_map(lambda p, d: p + t * d, params0, delta), rest, x)

    derivative = along
    for j in range(5):
        expected = jax.jit(derivative)(0.0) / math.factorial(j)
        np.testing.assert_allclose(coefficients[j], expected, rtol=1e-10, atol=1e-12)
        derivative = jax.jacfwd(derivative)

    flat0, unravel = ravel_pytree(params0)
    flat_delta, _ = ravel_pytree(delta)
    hessian = jax.hessian(lambda p: _call_model(unravel(p), rest, x))(flat0)  # (n, out, P, P), by reverse mode
    np.testing.assert_allclose(coefficients[2], 0.5 * hessian @ flat_delta @ flat_delta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("order,offset", [(1, True), (3, True), (2, False)])
def test_custom_derivative_matches_reverse_mode_through_the_nested_jvp(order, offset):
    model, x = model_and_inputs({"arch": "cnn", "depth": 2, "channels": 3, "activation": "erf", "b_std": 0.1},
                                input_shape=(5, 5, 2))
    far = moved(model, 0.15)
    params0, rest = partition_parameters(model)
    params_far = partition_parameters(far)[0]
    weights = jax.random.normal(jax.random.PRNGKey(9), (5, 3), jnp.float64)

    def loss(values):
        return jnp.sum(jnp.sin(values) * weights)

    def expansion(center_params, params, xs):
        """Through TaylorExpansion and its custom derivative rule."""
        return TaylorExpansion(eqx.combine(center_params, rest), order, offset)(eqx.combine(params, rest), xs)

    def plain(center_params, params, xs):
        """Straight through the nested forward-mode derivative."""
        delta = jax.tree_util.tree_map(jnp.subtract, params, center_params)
        return _polynomial_value(_call_model, order, offset, center_params, delta, (rest, xs))

    tangent = partition_parameters(moved(model, 1.0, seed=5))[0]

    def all_derivatives(fn):
        return (
            jax.grad(lambda p: loss(fn(params0, p, x)))(params_far),  # reverse mode in the parameters
            jax.grad(lambda c: loss(fn(c, params_far, x)))(params0),  # ... in the expansion point
            jax.jvp(lambda p: fn(params0, p, x), (params_far,), (tangent,))[1],  # forward mode
            jax.jvp(lambda xs: fn(params0, params_far, xs), (x,), (jnp.ones_like(x),))[1],  # in the inputs
        )

    got = jax.jit(lambda: all_derivatives(expansion))()
    want = jax.jit(lambda: all_derivatives(plain))()
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_order_zero_is_the_network_and_expansions_equal_it_at_the_expansion_point():
    model, x = model_and_inputs({"arch": "mlp", "depth": 2, "width": 8, "activation": "softplus", "b_std": 0.1})
    assert isinstance(make_forward(model, 0), Network)
    far = moved(model, 0.1)
    np.testing.assert_array_equal(make_forward(model, 0)(far, x), far(x))
    for order in (1, 2, 4):
        np.testing.assert_allclose(expand(model, model, x, order), model(x), rtol=1e-13)
        np.testing.assert_allclose(expand(model, model, x, order, False), 0.0, atol=1e-13)
    assert taylor_polynomial(cubic, {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, 2.0,
                             order=0) == pytest.approx(cubic({"a": 1.0, "b": 2.0, "c": 3.0}, 2.0))


def test_batchnorm_networks_expand_with_their_running_statistics():
    with jax.enable_x64(False):
        model = build_model(parse_model({"arch": "resnet18", "width": 1}), (4, 4, 3), 3, jax.random.PRNGKey(0))
        x = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 4, 3))
        # running statistics that differ from the batch's: the expansion must use the frozen ones
        model = eqx.tree_at(lambda m: m.stem_bn.running_mean.value, model, jnp.full((1,), 0.3))
        trained_mode = eqx.filter_jit(lambda m, xs: m.forward_train(xs)[0])(model, x)
        evaluation = forward(model, x)
        assert relative_error(trained_mode, evaluation) > 1e-3
        np.testing.assert_allclose(expand(model, model, x, 1), evaluation, rtol=1e-5)
