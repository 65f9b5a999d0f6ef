#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install the [cuda] extra into .venv-gpu, then, in under
# 8 minutes, run the GPU-relevant tests and the GPU variants of the entk, infinite and taylor
# benchmarks (ntklab only: the peers need their own environments), and print one table with
# each step's wall time and exit code, the benchmarks' own tables, and the measured matmul rate
# as a fraction of the GPU's nominal dense peak.
#
#     bash bench/gpu.sh            # from the repository root
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: no NVIDIA GPU here (nvidia-smi -L fails)" >&2
  exit 2
fi
out=$(mktemp -d /tmp/ntklab-gpu.XXXXXX)
python3 -m venv .venv-gpu
.venv-gpu/bin/python -m pip install --quiet --upgrade pip
.venv-gpu/bin/python -m pip install --quiet -e ".[cuda,test]" || { echo "gpu.sh: installing .[cuda] failed" >&2; exit 1; }
export JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_PREALLOCATE=false
py=.venv-gpu/bin/python
rows=()

step() {  # step NAME SECONDS_LIMIT COMMAND...: run with a time limit, keep its output, record a row
  local name=$1 limit=$2 began code
  shift 2
  began=$(date +%s.%N)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  code=$?
  rows+=("$(printf '%-22s %9.1f %6s' "$name" "$(echo "$(date +%s.%N) - $began" | bc)" "$code")")
}

step devices 60 "$py" -c 'import jax; d = jax.devices(); assert d[0].platform == "gpu", d; print(d)'
step matmul 60 "$py" - <<'EOF'
"""Dense matmul rate on the first GPU, against the nominal dense peak of known models (TFLOP/s)."""
import time

import jax
import jax.numpy as jnp

PEAKS = {"H200": {"bfloat16": 989, "float32": 67}, "H100": {"bfloat16": 989, "float32": 67},
         "A100": {"bfloat16": 312, "float32": 19.5}, "V100": {"bfloat16": 125, "float32": 15.7},
         "L40S": {"bfloat16": 362, "float32": 91.6}, "A10": {"bfloat16": 125, "float32": 31.2}}
name = jax.devices()[0].device_kind
peak = next((v for k, v in PEAKS.items() if k in name), None)
n = 8192
for dtype in ("bfloat16", "float32"):
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(10):
        began = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - began)
    best = min(times)
    rate = 2 * n**3 / best / 1e12
    fraction = f"{rate / peak[dtype]:.2f} of {peak[dtype]} nominal" if peak else "peak unknown for this model"
    print(f"matmul {dtype:<9} {name}: {rate:7.1f} TFLOP/s, {fraction}")
EOF
step tests 240 "$py" -m pytest -q -p no:xdist tests/kernels tests/analytic tests/engine/test_taylor.py tests/engine/test_training.py
step bench-entk 120 "$py" bench/entk.py --repeats 2 --skip nt,nt_jacobian,nt_ntvp,torch
step bench-infinite 90 "$py" bench/infinite.py --repeats 2 --skip-nt
step bench-taylor 90 "$py" bench/taylor.py --rounds 2 --repeats 5 --skip-nt

echo
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
printf '%-22s %9s %6s\n' step seconds exit
printf '%s\n' "${rows[@]}"
echo
grep -h "^matmul" "$out/matmul.log"
tail -n 3 "$out/tests.log"
for b in bench-entk bench-infinite bench-taylor; do
  echo "--- $b"
  tail -n 25 "$out/$b.log"
done
echo "logs: $out"
