"""Empirical NTK of the zoo's big CIFAR networks: ntklab against ntkgen's method and cached torch.func.

Workloads (10 outputs, full 10x10 blocks, the whole n x n kernel of n CIFAR-shaped inputs):
  resnet18     ResNet-18 (basic blocks, 1x1 strided projections, BatchNorm), width 16 (--width)
  mobilenetv2  MobileNet v2, CIFAR strides (inverted residuals, depthwise 3x3, 1x1 expansions)
  vgg11        VGG-11 (conv-BN-ReLU with biases, max pools, 512 -> 10)

The networks are the zoo's (engine/zoo.py; ResNet-18 at width 64: 11.2M parameters, MobileNet v2:
2.3M, VGG-11: 9.2M, the seed's), standard parameterization, He-scaled weights, biases only in
VGG (b_std 0.1), BatchNorm in evaluation mode with non-trivial running statistics. Sides:

  ntklab <impl>   EmpiricalNTK (auto and the implementations it chooses between), timed in turn
  torch seed      ntkgen's own method (bench/peers/torch_zoo.py): vmap(jacrev) per parameter
                  tensor, per-tensor einsum, column Jacobians recomputed per block row, blocks of
                  2·memory / (P·10·8·3) examples (ntkgen's float32 batch)
  torch cached    the same with every batch's Jacobians computed once

Every side gets the same memory budget (--memory-gb). torch runs in this venv
(pip install "torch>=2.13"; not a project dependency) in its own process, after ntklab. Times are
the minimum over repeats after a first call (compile time apart; the torch sides' first call is
a full run). Accuracy: max|K - K_ref| / max|K_ref| against ntklab's float64 structured kernel.
Targets: ntklab auto >= 10x torch seed and >= 2x torch cached.

    python bench/entk_zoo.py [--models resnet18:64,mobilenetv2:64,vgg11:64] [--width 16]
                             [--impls auto,structured,jacobian] [--repeats 2] [--memory-gb 4]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from peer_runs import relative_error, run_peer
from timing import timed_in_turn

BENCH = Path(__file__).resolve().parent
TARGETS = [("torch seed", 10.0), ("torch cached", 2.0)]


def build(name: str, width: int):
    import jax
    import jax.numpy as jnp

    from ntklab.engine.config import parse_model_config
    from ntklab.engine.models import build_model
    from ntklab.engine.presets import plan_of

    arch = {"resnet18": {"arch": "resnet", "depth": 18, "width": width}, "mobilenetv2": {"arch": "mobilenetv2"},
            "vgg11": {"arch": "vgg", "depth": 11, "b_std": 0.1}}[name]  # the seed's VGG convolutions have biases
    config = parse_model_config({**arch, "parameterization": "standard", "w_std": 2**0.5})
    model = build_model(config, (32, 32, 3), 10, jax.random.PRNGKey(0))
    rng = np.random.default_rng(1)
    # BatchNorm statistics and affine parameters away from their initial values
    model = jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a) + 0.2 * np.abs(rng.standard_normal(a.shape, np.float32)))
        if isinstance(a, jax.Array) and a.ndim == 1 and a.dtype == jnp.float32 else a, model)
    return model, plan_of(config, 10)


def export(model, plan, x: np.ndarray, path: Path) -> None:
    """The problem file of bench/peers/torch_zoo.py: the plan's layer list and its parameters in order."""
    import jax.numpy as jnp

    from ntklab.engine.plan import BatchNorm, layers_with_parameters, to_layers

    arrays = {}
    for i, op in enumerate(layers_with_parameters(plan)):
        layer = model
        for part in op.path.split("."):
            layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
        if isinstance(op, BatchNorm):
            arrays.update({f"p{i}_scale": layer.scale, f"p{i}_offset": layer.offset,
                           f"p{i}_mean": layer.running_mean.value, f"p{i}_var": layer.running_var.value})  # fmt: skip
            continue
        arrays[f"p{i}_weight"] = layer.weight
        arrays[f"p{i}_mult"] = np.array([layer.weight_multiplier, layer.bias_multiplier])
        if layer.bias is not None:
            arrays[f"p{i}_bias"] = layer.bias
    arrays = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    np.savez(path, layers=json.dumps(to_layers(plan.ops)), x=x, logits=np.asarray(model(jnp.asarray(x))), **arrays)


def run_ntklab(model, x, impls, repeats, memory):
    import jax

    from ntklab.engine.entk import EmpiricalNTK

    shape = x.shape[1:]
    kernels = {impl: EmpiricalNTK(model, shape, impl, batch_size=len(x), memory_bytes=memory) for impl in impls}
    timings = timed_in_turn({impl: (lambda kernel=kernel: kernel(x)) for impl, kernel in kernels.items()}, repeats)
    with jax.enable_x64(True):
        reference = EmpiricalNTK(model, shape, "structured", dtype="float64", batch_size=len(x),
                                 memory_bytes=2 * memory)(x.astype(np.float64))  # fmt: skip
    rows = []
    for impl, (first, best, k) in timings.items():
        kernel = kernels[impl]
        label = f"ntklab {impl}" + (f" ({kernel.chosen})" if impl == "auto" else "")
        rows.append({"side": label, "seconds": best, "compile_s": first - best, "error": relative_error(k, reference),
                     "note": f"chunk {kernel.chunk}"})  # fmt: skip
    return rows, reference, kernels[impls[0]].parameters


def run_torch(problem: Path, repeats: int, prefix: Path, threads: int, memory: int, reference) -> list[dict]:
    command = [sys.executable, str(BENCH / "peers" / "torch_zoo.py"), str(problem), "seed,cached", str(repeats),
               str(prefix), str(threads), str(memory)]  # fmt: skip
    return run_peer(command, "torch", reference, note=lambda record: f"batch {record['batch']}")


def print_table(name: str, n: int, parameters: int, rows: list[dict]) -> None:
    ours = next(r for r in rows if r["side"].startswith("ntklab auto"))
    print(f"\n## {name}: {parameters:,} parameters, n = {n}, kernel {n * 10} x {n * 10}\n")
    print("| side | time (s) | first call - best (s) | time / ntklab auto | rel. error vs fp64 | blocks |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['seconds']:.2f} | {r['compile_s']:.2f} | {r['seconds'] / ours['seconds']:.2f}x "
              f"| {r['error']:.1e} | {r['note']} |")  # fmt: skip
    for peer, target in TARGETS:
        row = next((r for r in rows if r["side"] == peer), None)
        if row is not None:
            speedup = row["seconds"] / ours["seconds"]
            print(f"\ntarget: {target:g}x faster than {peer}: {speedup:.2f}x, {'met' if speedup >= target else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18:64,mobilenetv2:64,vgg11:64", help="name[:n], comma-separated")
    parser.add_argument("--width", type=int, default=16, help="ResNet-18 base width (the seed's: 64)")
    parser.add_argument("--impls", default="auto,structured,jacobian")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="memory budget of every side")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    memory = int(args.memory_gb * 2**30)
    print(f"# empirical NTK of zoo networks, {os.cpu_count()} CPU cores, repeats {args.repeats}, "
          f"memory budget {args.memory_gb:g} GiB; ratio = side time / ntklab auto time")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.models.split(","):
            name, _, n = entry.partition(":")
            n = int(n or 64)
            model, plan = build(name, args.width)
            x = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
            impls = args.impls.split(",")
            rows, reference, parameters = run_ntklab(model, x, impls, args.repeats, memory)
            if not args.skip_torch:
                problem = Path(tmp) / f"{name}.npz"
                export(model, plan, x, problem)
                rows += run_torch(problem, args.repeats, Path(tmp) / name, args.torch_threads, memory, reference)
            print_table(name, n, parameters, rows)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
