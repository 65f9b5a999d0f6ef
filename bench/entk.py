"""Empirical NTK benchmark: ntklab against neural-tangents 0.6.5 and torch.func, same invocation.

Workloads:
  lenet  LeNet-5 (SAME padding, average pooling), 128 CIFAR-shaped inputs, full 10x10 blocks
  mlp    MLP 3072-512-512-10, 32 inputs, full 10x10 blocks

The weights are drawn once by ntklab (NTK parameterization, w_std 1, b_std 0.1) and handed to the
peers, which rebuild the same network and check its logits. neural-tangents runs in
bench/.venv-nt (bash bench/peers/make_nt_env.sh), torch.func in this venv
(pip install torch==2.13.0; not a project dependency). Each side runs in its own process, one
after the other. Times are the minimum over repeats after a warm-up call (compile time apart).
ntklab's implementations are timed in turn, round by round (bench/timing.py:timed_in_turn). `auto`
and the implementation it chooses build the same rules and the same compiled functions
(tests/kernels/test_entk.py); timed one after the other on a shared machine, whichever came first
read up to 1.6x slower or faster than the other, which is the machine, not the code.
Accuracy: max|K - K_ref| / max|K_ref| against ntklab's float64 Jacobian contraction.

    python bench/entk.py [--workloads lenet,mlp] [--repeats 3] [--skip nt_jacobian,torch]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from peer_runs import relative_error, run_peer
from timing import timed_in_turn

BENCH = Path(__file__).resolve().parent
NT_PYTHON = BENCH / ".venv-nt" / "bin" / "python"
TARGETS = {  # workload: (peer, minimum speedup of ntklab's auto over it)
    "lenet": [("nt structured", 1.5), ("torch jacobian", 15.0)],
    "mlp": [("nt structured", 1.0)],
}


def workload(name: str):
    from ntklab.engine.config import LeNet5Model, MLPModel

    if name == "lenet":
        return LeNet5Model(arch="lenet5", parameterization="ntk", w_std=1.0, b_std=0.1), (32, 32, 3), 128, 0
    if name == "mlp":
        return MLPModel(arch="mlp", depth=2, width=512, parameterization="ntk", w_std=1.0, b_std=0.1), (32, 32, 3), 32, 512
    raise SystemExit(f"unknown workload {name}")


def run_ntklab(name: str, impls: list[str], repeats: int, workdir: Path) -> tuple[list[dict], Path]:
    import jax
    import jax.numpy as jnp

    from ntklab.engine.entk import EmpiricalNTK
    from ntklab.engine.models import build_model

    config, shape, n, width = workload(name)
    model = build_model(config, shape, 10, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
    problem = workdir / f"{name}.npz"
    arrays = {}
    for i, layer in enumerate(model.layers):
        arrays[f"w{i}"] = np.asarray(layer.weight)
        arrays[f"b{i}"] = np.asarray(layer.bias)
    np.savez(problem, arch=name if name == "mlp" else "lenet5", x1=x, x2=x, layers=len(model.layers),
             w_std=config.w_std, b_std=config.b_std, out_dim=10, width=width,
             logits=np.asarray(model(jnp.asarray(x))), **arrays)
    rows = []
    with jax.enable_x64(True):
        reference = EmpiricalNTK(model, shape, "jacobian", dtype="float64", batch_size=n)(x.astype(np.float64))
    np.save(workdir / f"{name}_reference.npy", reference)
    kernels = {impl: EmpiricalNTK(model, shape, impl, batch_size=n) for impl in impls}
    timings = timed_in_turn({impl: (lambda kernel=kernel: kernel(x)) for impl, kernel in kernels.items()}, repeats)
    for impl, (first, best, k) in timings.items():
        label = f"ntklab {impl}" + (f" ({kernels[impl].chosen})" if impl == "auto" else "")
        rows.append({"side": label, "compile_s": first - best, "seconds": best, "error": relative_error(k, reference)})
    return rows, problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="lenet,mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--impls", default="auto,structured,jacobian,ntvp")
    parser.add_argument("--skip", default="", help="comma list of: nt, nt_jacobian, nt_ntvp, torch")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"# empirical NTK, {os.cpu_count()} CPU cores, repeats {args.repeats}; ratio = peer time / ntklab auto time")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.workloads.split(","):
            impls = args.impls.split(",")
            if name == "lenet" and "ntvp" in impls:
                impls.remove("ntvp")  # n^2 m forward passes: minutes, and not a contender here
            rows, problem = run_ntklab(name, impls, args.repeats, workdir)
            reference = np.load(workdir / f"{name}_reference.npy")
            if "nt" not in skip:
                if not NT_PYTHON.exists():
                    print("bench/.venv-nt is missing: bash bench/peers/make_nt_env.sh", file=sys.stderr)
                else:
                    nt_impls = [i for i in ("structured", "jacobian", "ntvp") if f"nt_{i}" not in skip]
                    rows += run_peer([str(NT_PYTHON), str(BENCH / "peers" / "nt_entk.py"), str(problem),
                                      ",".join(nt_impls), str(args.repeats), str(workdir / name)],
                                     "nt", reference)
            if "torch" not in skip:
                rows += run_peer([sys.executable, str(BENCH / "peers" / "torch_entk.py"), str(problem),
                                  str(max(1, args.repeats - 1)), str(workdir / name), str(args.torch_threads)],
                                 "torch", reference)
            print_table(name, rows)


def print_table(name: str, rows: list[dict]) -> None:
    ours = next(r for r in rows if r["side"].startswith("ntklab auto"))
    print(f"\n## {name}\n")
    print("| side | time (s) | compile (s) | peer / ntklab auto | rel. error vs fp64 |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = r["seconds"] / ours["seconds"]
        print(f"| {r['side']} | {r['seconds']:.4f} | {r['compile_s']:.2f} | {ratio:.2f}x | {r['error']:.1e} |")
    for peer, target in TARGETS.get(name, []):
        row = next((r for r in rows if r["side"] == peer), None)
        if row is not None:
            speedup = row["seconds"] / ours["seconds"]
            verdict = "met" if speedup >= target else "NOT met"
            print(f"\ntarget: {target}x faster than {peer}: {speedup:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
