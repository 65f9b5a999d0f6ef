"""Dense and convolution layers in the standard and NTK parameterizations, and parameter-free pooling.

Both parameterizations draw the same standard normals from the same key, so a standard and an NTK
layer built from one key compute the same function at initialization:

    standard: weight = (w_std / sqrt(fan_in)) z_w, bias = b_std z_b; forward weight x + bias
    ntk:      weight = z_w, bias = z_b; forward (w_std / sqrt(fan_in)) weight x + b_std bias

They differ in the gradients, hence in training dynamics. Layers act on batches.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ntklab.engine.config import LayerInit


class _Scaled(eqx.Module):
    """Weight and optional bias with the multipliers the forward pass applies to them."""

    weight: jax.Array
    bias: jax.Array | None
    weight_multiplier: float = eqx.field(static=True)
    bias_multiplier: float = eqx.field(static=True)

    def __init__(self, weight_shape: tuple[int, ...], bias_size: int, fan_in: int, init: LayerInit, key: jax.Array):
        weight_key, bias_key = jax.random.split(key)
        z_weight = jax.random.normal(weight_key, weight_shape, jnp.float32)
        z_bias = None if init.b_std is None else jax.random.normal(bias_key, (bias_size,), jnp.float32)
        weight_scale = init.w_std / math.sqrt(fan_in)
        bias_scale = 0.0 if init.b_std is None else init.b_std
        if init.parameterization == "ntk":
            self.weight, self.bias = z_weight, z_bias
            self.weight_multiplier, self.bias_multiplier = weight_scale, bias_scale
        else:
            self.weight = weight_scale * z_weight
            self.bias = None if z_bias is None else bias_scale * z_bias
            self.weight_multiplier, self.bias_multiplier = 1.0, 1.0

    def _add_bias(self, y: jax.Array) -> jax.Array:
        return y if self.bias is None else y + self.bias_multiplier * self.bias


class Dense(_Scaled):
    """y = x @ weight + bias on (n, in_features) batches; weight is (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, init: LayerInit, key: jax.Array):
        super().__init__((in_features, out_features), out_features, in_features, init, key)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._add_bias(self.weight_multiplier * (x @ self.weight))


class Conv2d(_Scaled):
    """Stride-1 convolution of NHWC batches with an HWIO kernel; fan_in = in_channels * kh * kw."""

    padding: str = eqx.field(static=True)

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: str, init: LayerInit, key: jax.Array
    ):
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        super().__init__(shape, out_channels, in_channels * kernel_size * kernel_size, init, key)
        self.padding = padding

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x, self.weight, window_strides=(1, 1), padding=self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return self._add_bias(self.weight_multiplier * y)


def avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 average pooling with stride 2 and VALID padding of NHWC batches (odd sizes round down)."""
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return summed / 4.0


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of NHWC batches: (n, h, w, c) -> (n, c)."""
    return jnp.mean(x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)
