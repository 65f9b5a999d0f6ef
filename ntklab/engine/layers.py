"""Dense and convolution layers in the standard, NTK and Taylor-k parameterizations, BatchNorm,
frozen arrays, and parameter-free pooling: the finite meaning of the ops of engine/plan.py.

Every parameterization draws the same standard normals from the same key, so layers built from one
key compute the same function at initialization whatever their parameterization:

    weight = store_w z_w, bias = store_b z_b; forward mult_w (weight x) + mult_b bias
    standard: store_w = w_std / sqrt(fan_in), mult_w = 1;   store_b = b_std, mult_b = 1
    ntk:      store_w = 1, mult_w = w_std / sqrt(fan_in);   store_b = 1, mult_b = b_std
    taylor k: store_w = fan_in^(-(k-1)/(2(k+1))), mult_w = w_std fan_in^(-1/(k+1)); bias as ntk

They differ in the gradients, hence in training dynamics. Layers act on batches. A layer may carry
gradient multipliers (the mean-field parameterization's per-variable learning-rate scaling), which
`scale_gradients` applies to a gradient of the model.
"""

import functools
import math
import operator

import equinox as eqx
import jax
import jax.numpy as jnp

from ntklab.engine.plan import Init, Scales


def parameterization_scales(init: Init, fan_in: int) -> Scales:
    """The scales of a layer of fan-in `fan_in` in the standard, ntk or taylor parameterization."""
    b_std = 0.0 if init.b_std is None else init.b_std
    if init.parameterization == "ntk":
        return Scales(1.0, init.w_std / math.sqrt(fan_in), 1.0, b_std)
    if init.parameterization == "taylor":
        k = init.param_order
        return Scales(fan_in ** (-(k - 1) / (2 * (k + 1))), init.w_std * fan_in ** (-1 / (k + 1)), 1.0, b_std)
    if init.parameterization == "standard":
        return Scales(init.w_std / math.sqrt(fan_in), 1.0, b_std, 1.0)
    raise ValueError(f"the {init.parameterization} parameterization is set by the architecture, not per layer")


class _Scaled(eqx.Module):
    """Weight and optional bias with the multipliers the forward pass applies to them."""

    weight: jax.Array
    bias: jax.Array | None
    weight_multiplier: float = eqx.field(static=True)
    bias_multiplier: float = eqx.field(static=True)
    weight_grad_scale: float = eqx.field(static=True)
    bias_grad_scale: float = eqx.field(static=True)

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        bias_size: int,
        fan_in: int,
        init: Init,
        key: jax.Array,
        scales: Scales | None = None,
    ):
        scales = scales if scales is not None else parameterization_scales(init, fan_in)
        weight_key, bias_key = jax.random.split(key)
        store = scales.store_weight / math.sqrt(fan_in) if scales.per_sqrt_fan_in else scales.store_weight
        self.weight = store * jax.random.normal(weight_key, weight_shape, jnp.float32)
        if init.b_std is None:
            self.bias = None
        elif scales.constant_bias:
            self.bias = jnp.full((bias_size,), scales.store_bias, jnp.float32)
        else:
            self.bias = scales.store_bias * jax.random.normal(bias_key, (bias_size,), jnp.float32)
        self.weight_multiplier = scales.weight_multiplier
        self.bias_multiplier = scales.bias_multiplier
        self.weight_grad_scale = scales.weight_grad_scale
        self.bias_grad_scale = scales.bias_grad_scale

    def _scale_weight_product(self, y: jax.Array) -> jax.Array:
        return y if self.weight_multiplier == 1.0 else self.weight_multiplier * y

    def _add_bias(self, y: jax.Array) -> jax.Array:
        if self.bias is None:
            return y
        return y + (self.bias if self.bias_multiplier == 1.0 else self.bias_multiplier * self.bias)


class Dense(_Scaled):
    """y = x @ weight + bias on (n, in_features) batches; weight is (in_features, out_features)."""

    def __init__(
        self, in_features: int, out_features: int, init: Init, key: jax.Array, scales: Scales | None = None
    ):
        super().__init__((in_features, out_features), out_features, in_features, init, key, scales)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._add_bias(self._scale_weight_product(x @ self.weight))


class Conv2d(_Scaled):
    """Convolution of NHWC batches with an HWIO kernel, strides and channel groups;
    fan_in = in_channels / groups * kh * kw. SAME padding follows XLA (with stride 2 on even sizes:
    none before, one after)."""

    padding: str = eqx.field(static=True)
    strides: tuple[int, int] = eqx.field(static=True)
    groups: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        padding: str,
        init: Init,
        key: jax.Array,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
    ):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        shape = (kh, kw, in_channels // groups, out_channels)
        super().__init__(shape, out_channels, in_channels // groups * kh * kw, init, key)
        self.padding = padding
        self.strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
        self.groups = groups

    @property
    def depthwise(self) -> bool:
        """One input channel per group."""
        return self.groups > 1 and self.weight.shape[2] == 1

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.weight.shape[:2]
        cpu = jax.default_backend() == "cpu"
        if self.depthwise and cpu:
            y = depthwise_conv(x, self.weight, self.strides, self.padding)
        elif kernel == (1, 1) and self.groups == 1:
            y = pointwise_conv(x, self.weight, self.strides)
        elif cpu and self.groups == 1 and (kernel[0] > x.shape[1] or kernel[1] > x.shape[2]):
            y = patch_conv(x, self.weight, self.strides, self.padding)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                self.weight,
                window_strides=self.strides,
                padding=self.padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.groups,
            )
        return self._add_bias(self._scale_weight_product(y))


def strided_pixels(x: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """The pixels of NHWC images a 1 x 1 kernel with these strides reads: SAME pads nothing for a
    1 x 1 kernel, so SAME and VALID read the same ones."""
    return x[:, :: strides[0], :: strides[1], :]


def pointwise_conv(x: jax.Array, weight: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """A 1 x 1 convolution (`weight` (1, 1, in, out)) as the matrix product it is. XLA's CPU
    backend computes it as a generic convolution: for 220 images of 32 x 32 x 24 to 144 channels
    (MobileNet v2's expansions, a chunk of its empirical NTK's cotangents), 122 ms forward and
    141 ms for the input gradient, against 70 ms and 28 ms as a product (a 2-core CPU); most of
    MobileNet v2's convolutions are 1 x 1."""
    return jnp.einsum("nhwc,co->nhwo", strided_pixels(x, strides), weight[0, 0])


def patch_conv(x: jax.Array, weight: jax.Array, strides: tuple[int, int], padding: str) -> jax.Array:
    """A convolution as the product of its patches (the kernel's shifted windows, tap-major as the
    HWIO kernel's rows) with the kernel. For a kernel larger than the image, XLA's CPU backend
    takes a path ~100x slower than the product: 160 images of 2 x 2 x 512, a 3 x 3 kernel to 512
    channels (VGG's last convolutions on CIFAR), 1.33 s forward and 1.18 s for the input gradient,
    against 13 ms and 11 ms so (a 2-core CPU); from 4 x 4 images on, its own path is as fast or
    faster."""
    kh, kw, fan_in, out = weight.shape
    patches = jnp.concatenate(shifted_windows(x, (kh, kw), strides, padding), axis=-1)
    return patches @ weight.reshape(kh * kw * fan_in, out)


def depthwise_conv(x: jax.Array, weight: jax.Array, strides: tuple[int, int], padding: str) -> jax.Array:
    """A convolution with one input channel per group (MobileNet's depthwise convolutions; `weight`
    is (kh, kw, 1, channels · multiplier)) as kh · kw shifted products of the padded input, which is
    what it is: no sum over channels. XLA's CPU backend computes a grouped convolution, and above
    all its transposes in a Jacobian, through a generic path: for 26 images of 16 x 16 x 96 and a
    3 x 3 kernel, 19 ms forward and 5.8 s for the per-example weight Jacobian, against 1.4 ms and
    0.25 s this way (bench/depthwise_conv.py, a 2-core CPU), which is what made MobileNet v2's
    empirical NTK take half an hour where the other models of the zoo took seconds. GPUs have
    dedicated depthwise kernels."""
    kh, kw, _, out = weight.shape
    if out != x.shape[-1]:
        x = jnp.repeat(x, out // x.shape[-1], axis=-1)  # output channel o reads input channel o // multiplier
    windows = shifted_windows(x, (kh, kw), strides, padding)
    terms = (window * weight[i // kw, i % kw, 0] for i, window in enumerate(windows))
    return functools.reduce(operator.add, terms)


def shifted_windows(x: jax.Array, kernel_size: tuple[int, int], strides: tuple[int, int],
                    padding: str) -> list[jax.Array]:
    """The kh · kw strided slices of the padded NHWC images x that a kernel's taps (i, j) read, in
    row-major tap order: window i·kw + j holds at output position p the pixel tap (i, j) sees."""
    (kh, kw), (sh, sw) = kernel_size, strides
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, padding)
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    h, w = x.shape[1:3]
    rows, cols = (h - kh) // sh + 1, (w - kw) // sw + 1
    return [x[:, i : i + (rows - 1) * sh + 1 : sh, j : j + (cols - 1) * sw + 1 : sw, :]
            for i in range(kh) for j in range(kw)]  # fmt: skip


class Frozen(eqx.Module):
    """An array a model holds but does not train: BatchNorm running statistics, fixed random
    features. Optimizers, gradients, parameter counts and distances leave it out."""

    value: jax.Array


def is_frozen(node) -> bool:
    return isinstance(node, Frozen)


class BatchNorm(eqx.Module):
    """Per-channel normalization over all axes but the last, with a trained scale and offset.

    `__call__` uses the running statistics (evaluation mode); `train_call` normalizes with the
    batch's statistics and returns the layer with updated running statistics (PyTorch convention:
    running = (1 - momentum) running + momentum batch, the running variance unbiased).
    """

    scale: jax.Array
    offset: jax.Array
    running_mean: Frozen
    running_var: Frozen
    momentum: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        self.scale = jnp.ones((channels,), jnp.float32)
        self.offset = jnp.zeros((channels,), jnp.float32)
        self.running_mean = Frozen(jnp.zeros((channels,), jnp.float32))
        self.running_var = Frozen(jnp.ones((channels,), jnp.float32))
        self.momentum = momentum
        self.eps = eps

    def _normalize(self, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        return (x - mean) * (self.scale * jax.lax.rsqrt(var + self.eps)) + self.offset

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._normalize(x, self.running_mean.value, self.running_var.value)

    def train_call(self, x: jax.Array) -> tuple[jax.Array, "BatchNorm"]:
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
        count = math.prod(x.shape[:-1])
        unbiased = jax.lax.stop_gradient(var * (count / max(count - 1, 1)))
        m = self.momentum
        updated = eqx.tree_at(
            lambda bn: (bn.running_mean.value, bn.running_var.value),
            self,
            (
                (1 - m) * self.running_mean.value + m * jax.lax.stop_gradient(mean),
                (1 - m) * self.running_var.value + m * unbiased,
            ),
        )
        return self._normalize(x, mean, var), updated


def scale_gradients(model: eqx.Module, grads):
    """`grads` (a gradient of `model`, same structure) with each layer's weight and bias gradients
    multiplied by the layer's gradient multipliers."""

    def visit(node, grad):
        if not isinstance(node, _Scaled) or (node.weight_grad_scale == 1.0 and node.bias_grad_scale == 1.0):
            return grad
        scaled = eqx.tree_at(lambda g: g.weight, grad, grad.weight * node.weight_grad_scale)
        if grad.bias is not None:
            scaled = eqx.tree_at(lambda g: g.bias, scaled, grad.bias * node.bias_grad_scale)
        return scaled

    return jax.tree_util.tree_map(visit, model, grads, is_leaf=lambda node: isinstance(node, _Scaled))


def has_gradient_scales(model: eqx.Module) -> bool:
    layers = jax.tree_util.tree_leaves(model, is_leaf=lambda node: isinstance(node, _Scaled))
    return any(
        isinstance(layer, _Scaled) and (layer.weight_grad_scale != 1.0 or layer.bias_grad_scale != 1.0)
        for layer in layers
    )


def avg_pool(x: jax.Array, window: tuple[int, int] = (2, 2), strides: tuple[int, int] = (2, 2)) -> jax.Array:
    """Average pooling of NHWC batches with VALID padding (odd sizes round down)."""
    summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *window, 1), (1, *strides, 1), "VALID")
    return summed / float(window[0] * window[1])


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int], padding: str) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), padding)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of NHWC batches: (n, h, w, c) -> (n, c)."""
    return jnp.mean(x, axis=(1, 2))


def flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)
