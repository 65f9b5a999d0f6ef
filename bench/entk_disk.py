"""Streaming a blocked empirical NTK to disk, with a kill and a resume.

LeNet-5 (SAME padding, average pooling, NTK parameterization) on 600 CIFAR-shaped inputs, full
10x10 output blocks: a 6000 x 6000 K(train, train), upper block triangle, float32 zarr chunks of
one block each. Three measurements, each in a fresh process:

  clean    the whole kernel in one go
  killed   the same, SIGKILLed (os._exit) after half of the blocks are written
  resumed  a new process finishing the killed store: it must compute only the missing blocks

Prints wall time (excluding process start and model construction), blocks computed, feature
(Jacobian) evaluations, MB written and MB/s, effective GFLOP/s against the dense J Jᵀ count, and
the largest difference between the resumed store and the clean one.

    python bench/entk_disk.py [--n 600] [--block 100] [--dtype float32]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, os, sys, time
import jax, numpy as np
from ntklab.engine.config import LeNet5Model
from ntklab.engine.entk import EmpiricalNTK
from ntklab.engine.models import build_model
from ntklab.kernelstore import KernelStore, fill

path, n, block, dtype, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
config = LeNet5Model(arch="lenet5", parameterization="ntk", w_std=1.0, b_std=0.1)
model = build_model(config, (32, 32, 3), 10, jax.random.PRNGKey(0))
x = np.random.default_rng(0).standard_normal((n, 32, 32, 3)).astype(np.float32)
kernel = EmpiricalNTK(model, (32, 32, 3), "auto", batch_size=block)
kernel(x[:2])  # compile outside the timed region
store = KernelStore.create(path, n_train=n, n_test=0, outputs=kernel.outputs, block_size=block,
                           storage_dtype=dtype, identity="bench", metadata={})
written = [0]
def after(part, i, j):
    written[0] += 1
    if written[0] == kill_after:
        print(json.dumps({"killed_after": written[0], "seconds": time.perf_counter() - start}), flush=True)
        os._exit(9)
start = time.perf_counter()
report = fill(store, kernel, x, None, on_block=after)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "computed": len(report.computed), "skipped": report.skipped,
                  "features": report.feature_evaluations, "seconds_features": report.seconds_features,
                  "seconds_blocks": report.seconds_blocks, "seconds_writing": report.seconds_writing,
                  "bytes": store.nbytes(), "parameters": kernel.parameters, "implementation": kernel.chosen}))
"""


def run(path: Path, n: int, block: int, dtype: str, kill_after: int = 0) -> dict:
    result = subprocess.run([sys.executable, "-c", WORKER, str(path), str(n), str(block), dtype, str(kill_after)],
                            check=False, capture_output=True, text=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"worker failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return {**lines[-1], "returncode": result.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    from ntklab.kernelstore import KernelStore

    nb = -(-args.n // args.block)
    total = nb * (nb + 1) // 2
    with tempfile.TemporaryDirectory() as tmp:
        clean = run(Path(tmp) / "clean", args.n, args.block, args.dtype)
        killed = run(Path(tmp) / "resumed", args.n, args.block, args.dtype, kill_after=total // 2)
        resumed = run(Path(tmp) / "resumed", args.n, args.block, args.dtype)
        a = KernelStore.open(Path(tmp) / "clean").read_train()
        b = KernelStore.open(Path(tmp) / "resumed").read_train()
        difference = float(abs(a - b).max() / abs(a).max())
    rows = args.n * 10
    dense_flops = 2.0 * rows * rows * clean["parameters"] / 2  # J Jᵀ on the upper triangle
    mb = clean["bytes"] / 2**20
    print(f"# LeNet-5 eNTK to disk: n={args.n}, 10 outputs, {rows}x{rows} {args.dtype}, block {args.block} "
          f"({total} blocks, upper triangle), P={clean['parameters']}, implementation {clean['implementation']}, "
          f"{os.cpu_count()} cores\n")
    print("| run | wall (s) | blocks computed | blocks reused | feature evals | MB on disk | MB/s | GFLOP/s (dense JJᵀ) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| clean | {clean['seconds']:.2f} | {clean['computed']} | {clean['skipped']} | {clean['features']} | "
          f"{mb:.1f} | {mb / clean['seconds']:.1f} | {dense_flops / clean['seconds'] / 1e9:.1f} |")
    print(f"| killed after {killed['killed_after']} blocks | {killed['seconds']:.2f} | {killed['killed_after']} | 0 | "
          "- | - | - | - |")
    print(f"| resumed | {resumed['seconds']:.2f} | {resumed['computed']} | {resumed['skipped']} | "
          f"{resumed['features']} | {resumed['bytes'] / 2**20:.1f} | - | - |")
    print(f"\nclean: features {clean['seconds_features']:.2f} s, blocks {clean['seconds_blocks']:.2f} s, "
          f"writing {clean['seconds_writing']:.2f} s ({mb / max(clean['seconds_writing'], 1e-9):.0f} MB/s while writing)")
    print(f"killed + resumed: {killed['seconds'] + resumed['seconds']:.2f} s; resumed recomputed "
          f"{resumed['computed']} = {total} - {resumed['skipped']} blocks; "
          f"max |K_resumed - K_clean| / max |K| = {difference:.1e}")
    assert resumed["computed"] + resumed["skipped"] == total and resumed["skipped"] == killed["killed_after"]


if __name__ == "__main__":
    main()
