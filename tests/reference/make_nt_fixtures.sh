#!/usr/bin/env bash
# Regenerate tests/reference/nt_fixtures.npz from neural-tangents 0.6.5 in its pinned environment.
# fixture_plans.py (ntklab's .venv) writes the cases and their plans; make_nt_fixtures.py
# (bench/.venv-nt, made by bench/peers/make_nt_env.sh: Python 3.11, jax==jaxlib==0.4.25, numpy<2,
# scipy<1.13, ml_dtypes<0.5, neural-tangents installed with --no-deps) turns them into stax.
# Run by hand; commit the .npz it writes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/bench/peers/make_nt_env.sh" >&2
plans="$(mktemp)"
trap 'rm -f "$plans"' EXIT
"$root/.venv/bin/python" "$root/tests/reference/fixture_plans.py" > "$plans"
JAX_PLATFORMS=cpu "$root/bench/.venv-nt/bin/python" "$root/tests/reference/make_nt_fixtures.py" "$plans"
