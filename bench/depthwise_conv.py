"""Depthwise convolution (one input channel per group, MobileNet's): XLA's grouped convolution
against ntklab's shifted products (ntklab/engine/layers.py, depthwise_conv), which Conv2d uses on CPU.

Workloads, on n images of size x size x channels with a 3 x 3 kernel, stride 1, SAME padding:
  forward   the convolution
  jacobian  the per-example Jacobian of the spatially summed output in the weights, vmap(jacrev):
            what an empirical NTK's Jacobian path computes, and where the grouped convolution's
            transpose is slowest
Times are the minimum over repeats after a first call (compilation apart), the two sides in turn.
Target (CPU): the shifted products at least as fast as XLA's grouped convolution in both.

    python bench/depthwise_conv.py [--n 26] [--size 16] [--channels 96] [--repeats 3]
"""

import argparse

import jax
import jax.numpy as jnp
from timing import timed_in_turn

from ntklab.engine.layers import depthwise_conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=26)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    c = args.channels
    x = jax.random.normal(jax.random.PRNGKey(0), (args.n, args.size, args.size, c))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, c))

    def grouped(weight, images):
        return jax.lax.conv_general_dilated(images, weight, (1, 1), "SAME", feature_group_count=c,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def shifted(weight, images):
        return depthwise_conv(images, weight, (1, 1), "SAME")

    sides = {"xla grouped": grouped, "shifted": shifted}
    print(f"backend {jax.default_backend()}, {args.n} x {args.size}x{args.size}x{c}, 3x3 kernel")
    print(f"{'workload':<10} {'side':<12} {'first s':>9} {'best s':>9} {'vs xla':>8}")
    for workload in ("forward", "jacobian"):
        fns = {}
        for name, conv in sides.items():
            if workload == "forward":
                f = jax.jit(conv)
            else:
                f = jax.jit(jax.vmap(jax.jacrev(lambda w_, x_, conv=conv: conv(w_, x_[None]).sum(axis=(1, 2)).ravel()),
                                     (None, 0)))
            fns[name] = lambda f=f: f(w, x).block_until_ready()
        timings = timed_in_turn(fns, args.repeats)
        error = float(jnp.max(jnp.abs(timings["shifted"][2] - timings["xla grouped"][2])))
        for name, (first, best, _) in timings.items():
            ratio = timings["xla grouped"][1] / best
            print(f"{workload:<10} {name:<12} {first:>9.4f} {best:>9.4f} {ratio:>7.1f}x")
        print(f"{'':<10} max |shifted - xla| = {error:.2e}")


if __name__ == "__main__":
    main()
