"""Taylorized models: forward and gradient time of the order-k expansion (k = 1..4) relative to the
plain network, for ntklab's nested forward-mode expansion and two peers, on this CPU.

    python bench/taylor.py [--rounds 5] [--repeats 20] [--only mlp|cnn] [--skip-nt]

Workloads:
  mlp: MLP 784-512-512-10 with erf, batch 256 (neural-tangents' taylor_expand: 7.2x forward at
       order 4 on this machine; the FLOP-minimal cost is about 4.8x);
  cnn: Bai et al.'s CNN (4 VALID 3x3 convolutions of 128 channels, ReLU, global average pooling)
       on 32x32x3, batch 64.

Columns, each time relative to the plain network's forward pass or gradient:
  fwd, grad        ntklab (TaylorExpansion: one k-times nested jvp along theta0 + t delta; the
                   gradient through its custom JVP rule, the order-(k-1) expansion's derivative in
                   the expansion point);
  grad-nested      reverse mode straight through the nested jvp (no custom rule);
  sep fwd          the formulation of neural-tangents' taylor_expand: each derivative D^j f [delta^j]
                   by its own j-times nested jvp in parameter space, summed (XLA merges the common
                   work across them);
  jet fwd, grad    jax.experimental.jet with the parameter path's series [delta, 0, 0, 0]. jet
                   ignores custom-JVP rules and fails on jax.nn.relu (a custom-JVP function), so the
                   CNN's jet columns run on the same network with jnp.maximum(x, 0) as its ReLU; the
                   other columns run the model as ntklab builds it (jax.nn.relu).
  NT fwd, grad     neural-tangents 0.6.5's `taylor_expand` on the same network built with stax,
                   in its pinned environment (bench/.venv-nt, bash bench/peers/make_nt_env.sh; its
                   own jax 0.4.25), in a subprocess of the same invocation
                   (bench/peers/nt_taylor.py), relative to its own plain network.
Also the largest relative difference between ntklab's and jet's outputs.

XLA flags: on jaxlib 0.10.2 CPUs, float32 convolutions run 1.5-3x faster with YNNPACK fusions off,
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (see the README); the header prints XLA_FLAGS.

Timing: every function is compiled first; then `rounds` rounds, each timing every function
`repeats` times in turn; a function's time is the best round's median, which keeps the ratios
meaningful on a shared machine. Gradients are of a sum-of-squares loss of the logits with respect
to the parameters.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.experimental import jet

from ntklab.engine import activations
from ntklab.engine.config import CNNModel, MLPModel
from ntklab.engine.models import build_model, partition_parameters
from ntklab.engine.taylor import TaylorExpansion, _call_model, _polynomial_value

ORDERS = (1, 2, 3, 4)
BENCH = Path(__file__).resolve().parent
NT_PYTHON = BENCH / ".venv-nt" / "bin" / "python"
NT_PEER = BENCH / "peers" / "nt_taylor.py"


def plain_relu(x):
    return jnp.maximum(x, 0.0)


@contextlib.contextmanager
def relu_traced_as(fn):
    """Networks traced inside run `fn` where their plan says relu (jet cannot trace jax.nn.relu)."""
    saved = activations.ACTIVATIONS["relu"]
    activations.ACTIVATIONS["relu"] = fn
    try:
        yield
    finally:
        activations.ACTIVATIONS["relu"] = saved


def call_with_relu(fn, relu, *args):
    if relu is None:
        return fn(*args)
    with relu_traced_as(relu):
        return fn(*args)


def workloads(only: str | None):
    if only in (None, "mlp"):
        config = MLPModel(arch="mlp", depth=2, width=512, activation="erf", b_std=0.1)
        yield "mlp", "MLP 784-512-512-10 (erf), batch 256", config, (28, 28, 1), 256, None
    if only in (None, "cnn"):
        config = CNNModel(arch="cnn", depth=4, channels=128, padding="VALID", readout="gap", b_std=0.01)
        yield "cnn", "Bai's CNN 4x128 on 32x32x3 (ReLU), batch 64", config, (32, 32, 3), 64, plain_relu


def perturbed(model, scale=0.01, seed=1):
    params, rest = partition_parameters(model)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    moved = [p + scale * jnp.std(p) * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, moved), rest)


def jet_expansion(center, model, x, order):
    params0, rest = partition_parameters(center)
    leaves0, treedef = jax.tree_util.tree_flatten(params0)
    leaves = jax.tree_util.tree_leaves(partition_parameters(model)[0])
    deltas = [p - p0 for p, p0 in zip(leaves, leaves0)]

    def f(*flat):
        return _call_model(jax.tree_util.tree_unflatten(treedef, flat), rest, x)

    series = tuple([d] + [jnp.zeros_like(d)] * (order - 1) for d in deltas)
    y0, terms = jet.jet(f, tuple(leaves0), series)
    return y0 + sum(terms[j - 1] / math.factorial(j) for j in range(1, order + 1))


def nested_expansion(center, model, x, order):
    """The same polynomial without the custom derivative rule: reverse mode goes through the nesting."""
    params0, rest = partition_parameters(center)
    delta = jax.tree_util.tree_map(jnp.subtract, partition_parameters(model)[0], params0)
    return _polynomial_value(_call_model, order, True, params0, delta, (rest, x))


def separate_expansion(center, model, x, order):
    """neural-tangents' formulation: f_j = jvp of f_{j-1} along delta, each evaluated at theta0."""
    params0, rest = partition_parameters(center)
    delta = jax.tree_util.tree_map(jnp.subtract, partition_parameters(model)[0], params0)
    derivatives = [lambda p: _call_model(p, rest, x)]
    for _ in range(order):
        previous = derivatives[-1]
        derivatives.append(lambda p, previous=previous: jax.jvp(previous, (p,), (delta,))[1])
    return sum(f(params0) / math.factorial(j) for j, f in enumerate(derivatives))


def loss_of(forward):
    def loss(model, center, x):
        return jnp.sum(forward(center, model, x) ** 2)

    return loss


def functions(order: int | None):
    """name -> jitted (model, center, x) -> array, for one order (None: the plain network)."""
    if order is None:
        plain = lambda center, model, x: model(x)
        return {
            "fwd": eqx.filter_jit(lambda m, c, x: plain(c, m, x)),
            "grad": eqx.filter_jit(eqx.filter_grad(loss_of(plain))),
        }
    ours = lambda center, model, x: TaylorExpansion(center, order, True)(model, x)
    nested = lambda center, model, x: nested_expansion(center, model, x, order)
    jets = lambda center, model, x: jet_expansion(center, model, x, order)
    separate = lambda center, model, x: separate_expansion(center, model, x, order)
    return {
        "fwd": eqx.filter_jit(lambda m, c, x: ours(c, m, x)),
        "sep fwd": eqx.filter_jit(lambda m, c, x: separate(c, m, x)),
        "grad": eqx.filter_jit(eqx.filter_grad(loss_of(ours))),
        "grad-nested": eqx.filter_jit(eqx.filter_grad(loss_of(nested))),
        "jet fwd": eqx.filter_jit(lambda m, c, x: jets(c, m, x)),
        "jet grad": eqx.filter_jit(eqx.filter_grad(loss_of(jets))),
    }


def time_all(calls: dict, rounds: int, repeats: int) -> dict[str, float]:
    for call in calls.values():
        jax.block_until_ready(call())
    best = {name: math.inf for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(call())
                samples.append(time.perf_counter() - start)
            best[name] = min(best[name], statistics.median(samples))
    return best


def run_nt(arch: str, input_shape, batch: int, rounds: int, repeats: int) -> dict:
    spec = {"arch": arch, "input_shape": list(input_shape), "batch": batch, "rounds": rounds, "repeats": repeats}
    proc = subprocess.run([str(NT_PYTHON), str(NT_PEER), json.dumps(spec)], check=False, capture_output=True,
                          text=True, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"neural-tangents peer failed on {arch}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(arch, title, config, input_shape, batch, jet_activation, rounds, repeats, with_nt):
    key = jax.random.PRNGKey(0)
    center = build_model(config, input_shape, 10, key)
    model = perturbed(center)
    x = jax.random.normal(jax.random.PRNGKey(2), (batch, *input_shape), jnp.float32)

    calls = {}
    for order in (None, *ORDERS):
        for name, fn in functions(order).items():
            relu = jet_activation if name.startswith("jet") else None
            calls[(order, name)] = (lambda fn=fn, relu=relu: call_with_relu(fn, relu, model, center, x))
    compile_start = time.perf_counter()
    for call in calls.values():
        jax.block_until_ready(call())
    compile_seconds = time.perf_counter() - compile_start
    times = time_all(calls, rounds, repeats)
    nt = run_nt(arch, input_shape, batch, rounds, repeats) if with_nt else None

    differences = {
        order: float(jnp.max(jnp.abs(calls[(order, "fwd")]() - calls[(order, "jet fwd")]()))
                     / jnp.max(jnp.abs(calls[(order, "fwd")]())))
        for order in ORDERS
    }
    plain_fwd, plain_grad = times[(None, "fwd")], times[(None, "grad")]
    print(f"\n{title}: plain forward {plain_fwd * 1e3:.2f} ms, plain gradient {plain_grad * 1e3:.2f} ms "
          f"(compiling everything: {compile_seconds:.0f} s)")
    if nt is not None:
        print(f"neural-tangents (jax {nt['jax']}): plain forward {nt['plain']['fwd'] * 1e3:.2f} ms, "
              f"plain gradient {nt['plain']['grad'] * 1e3:.2f} ms")
    header = ["order", "fwd ms", "fwd x", "grad ms", "grad x", "grad-nested x", "sep fwd x", "jet fwd x",
              "jet grad x", "vs jet"] + (["NT fwd x", "NT grad x"] if nt is not None else [])
    rows = []
    for order in ORDERS:
        rows.append([
            str(order),
            f"{times[(order, 'fwd')] * 1e3:.2f}",
            f"{times[(order, 'fwd')] / plain_fwd:.2f}",
            f"{times[(order, 'grad')] * 1e3:.2f}",
            f"{times[(order, 'grad')] / plain_grad:.2f}",
            f"{times[(order, 'grad-nested')] / plain_grad:.2f}",
            f"{times[(order, 'sep fwd')] / plain_fwd:.2f}",
            f"{times[(order, 'jet fwd')] / plain_fwd:.2f}",
            f"{times[(order, 'jet grad')] / plain_grad:.2f}",
            f"{differences[order]:.1e}",
        ] + ([f"{nt[str(order)]['fwd'] / nt['plain']['fwd']:.2f}", f"{nt[str(order)]['grad'] / nt['plain']['grad']:.2f}"]
             if nt is not None else []))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return times


def check_jet_fails_on_custom_jvp_relu():
    """jet on a model with jax.nn.relu, as Equinox models use it: does it run?"""
    center = build_model(CNNModel(arch="cnn", depth=1, channels=4), (8, 8, 3), 10, jax.random.PRNGKey(0))
    x = jnp.ones((2, 8, 8, 3))
    try:
        jet_expansion(center, perturbed(center), x, 2)
    except Exception as error:  # noqa: BLE001 - reporting whatever jet raises
        return f"fails: {type(error).__name__}"
    return "runs"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", choices=["mlp", "cnn"])
    parser.add_argument("--skip-nt", action="store_true", help="leave neural-tangents out")
    args = parser.parse_args()
    if not args.skip_nt and not NT_PYTHON.exists():
        raise SystemExit(f"{NT_PYTHON} is missing: run bash bench/peers/make_nt_env.sh (or pass --skip-nt)")
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {jax.device_count()} device(s), "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"jax.experimental.jet on an Equinox CNN with jax.nn.relu: {check_jet_fails_on_custom_jvp_relu()}")
    for arch, title, config, input_shape, batch, jet_activation in workloads(args.only):
        bench(arch, title, config, input_shape, batch, jet_activation, args.rounds, args.repeats, not args.skip_nt)


if __name__ == "__main__":
    main()
