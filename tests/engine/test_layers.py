import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntklab.engine.activations import activation
from ntklab.engine.plan import Init
from ntklab.engine.layers import Conv2d, Dense, avg_pool, flatten, global_avg_pool, max_pool, patch_conv


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("b_std", [None, 0.5])
def test_dense_preactivation_variance(parameterization, b_std):
    fan_in, width = 200, 4000
    init = Init(parameterization=parameterization, w_std=1.5, b_std=b_std)
    layer = Dense(fan_in, width, init, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).uniform(-2.0, 2.0, size=(8, fan_in)).astype(np.float32)
    preactivations = np.asarray(layer(x))
    expected = 1.5**2 * np.mean(x**2, axis=1) + (b_std or 0.0) ** 2
    np.testing.assert_allclose(preactivations.var(axis=1), expected, rtol=0.08)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_conv_preactivation_variance(parameterization):
    init = Init(parameterization=parameterization, w_std=2.0, b_std=0.3)
    layer = Conv2d(6, 1000, 3, "VALID", init, jax.random.PRNGKey(1))
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 6)).astype(np.float32)
    preactivations = np.asarray(layer(x))
    patches = np.stack([x[:, i : i + 3, j : j + 3, :] for i in range(3) for j in range(3)], axis=1)
    expected = 2.0**2 * np.mean(patches**2, axis=(2, 3, 4)) + 0.3**2
    np.testing.assert_allclose(preactivations.var(axis=-1).reshape(2, 9), expected, rtol=0.15)


def test_ntk_layer_is_the_standard_layer_with_rescaled_weights():
    ntk = Dense(30, 20, Init(parameterization="ntk", w_std=1.7, b_std=0.4), jax.random.PRNGKey(2))
    standard = Dense(30, 20, Init(parameterization="standard", w_std=1.7, b_std=0.4), jax.random.PRNGKey(3))
    rescaled = eqx.tree_at(
        lambda layer: (layer.weight, layer.bias), standard, (ntk.weight * 1.7 / math.sqrt(30), ntk.bias * 0.4)
    )
    x = np.random.default_rng(2).normal(size=(5, 30)).astype(np.float32)
    np.testing.assert_allclose(ntk(x), rescaled(x), rtol=1e-5, atol=1e-6)


def test_ntk_and_standard_layers_from_one_key_agree_at_init():
    key = jax.random.PRNGKey(4)
    ntk = Conv2d(3, 8, 3, "SAME", Init(parameterization="ntk", w_std=1.3, b_std=0.2), key)
    standard = Conv2d(3, 8, 3, "SAME", Init(parameterization="standard", w_std=1.3, b_std=0.2), key)
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(ntk(x), standard(x), rtol=1e-5, atol=1e-5)
    assert float(jnp.std(ntk.weight)) == pytest.approx(1.0, rel=0.15)
    assert float(jnp.std(standard.weight)) == pytest.approx(1.3 / math.sqrt(27), rel=0.15)


def test_no_bias_when_b_std_is_none():
    assert Dense(3, 4, Init(b_std=None), jax.random.PRNGKey(0)).bias is None
    assert Dense(3, 4, Init(b_std=0.1), jax.random.PRNGKey(0)).bias.shape == (4,)


def numpy_conv(x, kernel, padding):
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw)]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[3]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            patch = x[:, i : i + kh, j : j + kw, :]
            out[:, i, j, :] = np.einsum("nabc,abco->no", patch, kernel)
    return out


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel_size", [1, 2, 3])
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_conv_matches_brute_force(padding, kernel_size, parameterization):
    init = Init(parameterization=parameterization, w_std=1.2, b_std=0.5)
    layer = Conv2d(3, 4, kernel_size, padding, init, jax.random.PRNGKey(5))
    x = np.random.default_rng(4).normal(size=(2, 7, 6, 3)).astype(np.float32)
    effective_kernel = np.asarray(layer.weight) * layer.weight_multiplier
    expected = numpy_conv(x, effective_kernel, padding) + np.asarray(layer.bias) * layer.bias_multiplier
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_strided_pointwise_conv_matches_brute_force(padding):
    """A 1x1 convolution (a matrix product) with strides (2, 3) on 7 x 8 images reads rows 0, 2,
    4, 6 and columns 0, 3, 6 of the stride-1 result, with either padding."""
    layer = Conv2d(3, 5, 1, padding, Init(w_std=1.3, b_std=0.2), jax.random.PRNGKey(3), (2, 3))
    x = np.random.default_rng(6).normal(size=(2, 7, 8, 3)).astype(np.float32)
    expected = numpy_conv(x, np.asarray(layer.weight), "VALID")[:, ::2, ::3] + np.asarray(layer.bias)
    assert layer(x).shape == (2, 4, 3, 5)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_grouped_strided_conv_matches_brute_force():
    """groups = 2 on 4 input channels: output channels 0-2 see inputs 0-1, channels 3-5 inputs 2-3;
    strides (2, 1) keep every second row of the stride-1 result (VALID)."""
    layer = Conv2d(4, 6, (3, 2), "VALID", Init(w_std=1.1, b_std=0.2), jax.random.PRNGKey(1), (2, 1), groups=2)
    assert layer.weight.shape == (3, 2, 2, 6)
    x = np.random.default_rng(2).normal(size=(2, 7, 5, 4)).astype(np.float32)
    w = np.asarray(layer.weight)
    dense = np.zeros((3, 2, 4, 6), np.float32)
    dense[:, :, :2, :3], dense[:, :, 2:, 3:] = w[:, :, :, :3], w[:, :, :, 3:]
    expected = numpy_conv(x, dense, "VALID")[:, ::2] + np.asarray(layer.bias)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size, stride, padding", [((2, 2), 1, "SAME"), ((1, 3), 1, "SAME"), ((2, 3), 2, "SAME"),
                                                   ((3, 2), 1, "VALID")])
def test_a_kernel_larger_than_the_image_matches_xlas_convolution(size, stride, padding):
    """On CPU a 3 x 3 kernel on images smaller than it (VGG's 2 x 2 layers on CIFAR) is the product
    of its patches with the kernel (layers.py's patch_conv); its values and weight gradients are
    XLA's convolution's, strides and SAME padding included."""
    assert jax.default_backend() == "cpu"
    layer = Conv2d(4, 6, 3, padding, Init(w_std=1.3, b_std=0.0), jax.random.PRNGKey(2), stride)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, *size, 4)), jnp.float32)

    def xla(weight):
        return jax.lax.conv_general_dilated(x, weight, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def patches(weight):
        return patch_conv(x, weight, (stride, stride), padding)

    assert patches(layer.weight).shape == xla(layer.weight).shape
    np.testing.assert_array_equal(layer(x), layer.weight_multiplier * patches(layer.weight))  # the layer's path
    np.testing.assert_allclose(patches(layer.weight), xla(layer.weight), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jacrev(lambda w: patches(w).sum(axis=(1, 2)))(layer.weight),
                               jax.jacrev(lambda w: xla(w).sum(axis=(1, 2)))(layer.weight), rtol=1e-5, atol=1e-4)


def test_max_pool():
    x = np.random.default_rng(5).normal(size=(2, 5, 4, 3)).astype(np.float32)
    expected = x[:, :4, :4, :].reshape(2, 2, 2, 2, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(max_pool(x, (2, 2), (2, 2), "VALID"), expected)
    assert max_pool(x, (3, 3), (2, 2), "SAME").shape == (2, 3, 2, 3)


def test_pooling():
    x = np.random.default_rng(5).normal(size=(2, 5, 4, 3)).astype(np.float32)
    expected = x[:, :4, :4, :].reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(avg_pool(x), expected, rtol=1e-6)
    np.testing.assert_allclose(global_avg_pool(x), x.mean(axis=(1, 2)), rtol=1e-6)
    assert flatten(x).shape == (2, 60)


def test_activations():
    x = jnp.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    np.testing.assert_allclose(activation("relu")(x), np.maximum(x, 0))
    np.testing.assert_allclose(activation("tanh")(x), np.tanh(x), rtol=1e-6)
    erf_values = np.array([math.erf(v) for v in np.asarray(x)])
    np.testing.assert_allclose(activation("erf")(x), erf_values, rtol=1e-6, atol=1e-7)
    exact_gelu = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in np.asarray(x)])
    np.testing.assert_allclose(activation("gelu")(x), exact_gelu, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("size, stride, padding", [(8, 2, "SAME"), (7, 2, "SAME"), (7, 1, "SAME"), (7, 2, "VALID")])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_matches_xlas_grouped_convolution(size, stride, padding, multiplier):
    """On CPU a convolution with one input channel per group is shifted products (layers.py's
    depthwise_conv); its values and weight gradients are XLA's grouped convolution's, strides
    and SAME padding of odd and even sizes included."""
    assert jax.default_backend() == "cpu"
    layer = Conv2d(5, 5 * multiplier, 3, padding, Init(w_std=1.3, b_std=0.0), jax.random.PRNGKey(3), stride, groups=5)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(2, size, size, 5)), jnp.float32)

    def xla(weight):
        return jax.lax.conv_general_dilated(x, weight, (stride, stride), padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)

    def shifted(weight):
        return eqx.tree_at(lambda c: c.weight, layer, weight)(x) / layer.weight_multiplier

    np.testing.assert_allclose(shifted(layer.weight), xla(layer.weight), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jacrev(lambda w: shifted(w).sum(axis=(1, 2)))(layer.weight),
                               jax.jacrev(lambda w: xla(w).sum(axis=(1, 2)))(layer.weight), rtol=1e-5, atol=1e-4)
