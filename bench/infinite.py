"""Infinite-width kernels: ntklab's analytic NNGP/NTK against neural-tangents 0.6.5, same invocation.

Workloads: the NNGP and NTK (NTK parameterization, w_std 1.414, b_std 0.1)
of N inputs with themselves:

  fc3, fc5, fc10   ReLU MLPs of depth 3/5/10 on 2000 inputs of dimension 3072
  cntk8, cntk16    CNTK with GAP, 5 ReLU 3x3 SAME convolutions, on 48 8x8x3 / 16 16x16x3 inputs
  myrtle8          Myrtle-5 on 48 8x8x3 inputs

neural-tangents runs in bench/.venv-nt (bash bench/peers/make_nt_env.sh), in a subprocess per
workload, through `nt.batch`; ntklab in this process through `analytic_kernels` (its own tiling).
Per workload the two sides run one after the other, each timed as the minimum over `--repeats`
calls after a first (compile) call. Per-entry times divide by the N (N + 1) / 2 distinct entries.
Accuracy: max|K_ntklab - K_nt| / max|K_nt| over both kernels, in the same precision, off the
diagonal and on it: on the diagonal (x with itself) the ReLU angle is exactly 0, which ntklab
computes exactly and neural-tangents as atan2(sqrt(rounding error), k) ~ 1e-8, so there the two
differ by about 1e-9 per ReLU layer in float64 (tests/analytic/test_analytic_fixtures.py).

    python bench/infinite.py [--workloads cntk8,cntk16,myrtle8,fc3,fc5,fc10] [--dtype float64] [--repeats 3]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import timed

BENCH = Path(__file__).resolve().parent
NT_PYTHON = BENCH / ".venv-nt" / "bin" / "python"
PEER = BENCH / "peers" / "nt_infinite.py"

# name: (arch, depth, input shape, N, nt.batch batch size, target speedup over neural-tangents)
WORKLOADS = {
    "cntk8": ("cnn", 5, (8, 8, 3), 48, 8, 2.0),
    "cntk16": ("cnn", 5, (16, 16, 3), 16, 4, 2.0),
    "myrtle8": ("myrtle5", 5, (8, 8, 3), 48, 8, None),
    "fc3": ("mlp", 3, (3072,), 2000, 500, None),
    "fc5": ("mlp", 5, (3072,), 2000, 500, None),
    "fc10": ("mlp", 10, (3072,), 2000, 500, None),
}
W_STD, B_STD = 1.414, 0.1


def config_of(arch: str, depth: int):
    from ntklab.engine.config import CNNModel, MLPModel, Myrtle5Model

    common = {"parameterization": "ntk", "w_std": W_STD, "b_std": B_STD, "activation": "relu"}
    if arch == "mlp":
        return MLPModel(arch="mlp", depth=depth, width=512, **common)
    if arch == "cnn":
        return CNNModel(arch="cnn", depth=depth, channels=128, padding="SAME", readout="gap", **common)
    return Myrtle5Model(arch="myrtle5", channels=128, **common)


def run_nt(name: str, x: np.ndarray, dtype: str, repeats: int, workdir: Path) -> dict:
    arch, depth, _, _, batch, _ = WORKLOADS[name]
    spec = {"arch": arch, "depth": depth, "activation": "relu", "w_std": W_STD, "b_std": B_STD, "dtype": dtype,
                "batch_size": batch, "repeats": repeats}  # fmt: skip
    problem, out = workdir / f"{name}_problem.npz", workdir / f"{name}_nt.npz"
    np.savez(problem, spec=np.array(json.dumps(spec)), x=x)
    proc = subprocess.run([str(NT_PYTHON), str(PEER), str(problem), str(out)], check=False, capture_output=True, text=True,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"neural-tangents peer failed on {name}:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    kernels = np.load(out)
    result["nngp"], result["ntk"] = kernels["nngp"], kernels["ntk"]
    return result


def run_ntklab(name: str, x: np.ndarray, dtype: str, repeats: int, tile: int | None) -> dict:
    from ntklab.engine.analytic import analytic_kernels
    from ntklab.engine.presets import plan_of

    arch, depth, _, _, _, _ = WORKLOADS[name]
    plan = plan_of(config_of(arch, depth))

    def compute():
        return analytic_kernels(plan, x, dtype=dtype, tile=tile)

    compile_s, seconds, k = timed(compute, repeats)
    return {"compile_s": compile_s, "seconds": seconds, "nngp": k["nngp"], "ntk": k["ntk"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tile", type=int, default=None, help="ntklab's tile side (default: its own choice)")
    parser.add_argument("--skip-nt", action="store_true", help="time ntklab only")
    args = parser.parse_args()
    if not args.skip_nt and not NT_PYTHON.exists():
        raise SystemExit(f"{NT_PYTHON} is missing: run bash bench/peers/make_nt_env.sh (or pass --skip-nt)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            arch, _depth, shape, n, _, target = WORKLOADS[name]
            x = np.random.default_rng(0).normal(size=(n, *shape))
            if arch != "mlp":
                x = x / np.sqrt(np.mean(x * x))
            entries = n * (n + 1) // 2
            ours = run_ntklab(name, x, args.dtype, args.repeats, args.tile)
            row = {"workload": name, "n": n, "ntklab_ms_entry": 1e3 * ours["seconds"] / entries,
                       "ntklab_s": ours["seconds"], "ntklab_compile_s": ours["compile_s"]}  # fmt: skip
            if not args.skip_nt:
                peer = run_nt(name, x, args.dtype, args.repeats, Path(tmp))
                off = ~np.eye(n, dtype=bool)
                err = max(np.max(np.abs(ours[w] - peer[w])[off]) / np.max(np.abs(peer[w])) for w in ("nngp", "ntk"))
                err_diag = max(
                    np.max(np.abs(np.diag(ours[w] - peer[w]))) / np.max(np.abs(peer[w])) for w in ("nngp", "ntk")
                )
                row.update(nt_ms_entry=1e3 * peer["seconds"] / entries, nt_s=peer["seconds"],
                           nt_compile_s=peer["compile_s"], speedup=peer["seconds"] / ours["seconds"],
                           rel_err=float(err), rel_err_diag=float(err_diag), target=target)  # fmt: skip
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    print(f"\nInfinite-width NNGP + NTK, {args.dtype}, min of {args.repeats} after a first call; "
          "ms per distinct entry N(N+1)/2\n")  # fmt: skip
    head = ("| workload | N | ntklab ms/entry | ntklab s | NT ms/entry | NT s | speedup | target "
            "| max rel. diff off-diag | on diag |")  # fmt: skip
    print(head)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "nt_s" in r:
            target = "-" if r["target"] is None else f">= {r['target']:.0f}x"
            print(f"| {r['workload']} | {r['n']} | {r['ntklab_ms_entry']:.4f} | {r['ntklab_s']:.3f} | "
                  f"{r['nt_ms_entry']:.4f} | {r['nt_s']:.3f} | {r['speedup']:.1f}x | {target} | {r['rel_err']:.1e} "
                  f"| {r['rel_err_diag']:.1e} |")
        else:
            print(f"| {r['workload']} | {r['n']} | {r['ntklab_ms_entry']:.4f} | {r['ntklab_s']:.3f} | - | - | - | - | - | - |")
    print("\nCompile (first call) seconds: " + ", ".join(
        f"{r['workload']} ntklab {r['ntklab_compile_s']:.1f}"
        + (f" / NT {r['nt_compile_s']:.1f}" if "nt_s" in r else "") for r in rows))  # fmt: skip


if __name__ == "__main__":
    main()
