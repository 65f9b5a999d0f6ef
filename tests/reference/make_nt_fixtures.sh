#!/usr/bin/env bash
# Regenerate tests/reference/nt_fixtures.npz from neural-tangents 0.6.5 in its pinned environment.
# bench/peers/make_nt_env.sh creates that environment (bench/.venv-nt: Python 3.11,
# jax==jaxlib==0.4.25, numpy<2, scipy<1.13, ml_dtypes<0.5, neural-tangents installed with
# --no-deps). Run by hand; commit the .npz it writes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/bench/peers/make_nt_env.sh" >&2
JAX_PLATFORMS=cpu "$root/bench/.venv-nt/bin/python" "$root/tests/reference/make_nt_fixtures.py"
