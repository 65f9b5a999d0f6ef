#!/usr/bin/env bash
# Create bench/.venv-nt: neural-tangents 0.6.5 in the environment it still works in
# Python 3.11, jax/jaxlib 0.4.25, numpy<2, scipy<1.13,
# ml_dtypes<0.5, and neural-tangents installed without its dependencies (tensorflow etc.).
# `neural_tangents.experimental` imports tensorflow: peers stub it before importing
# neural_tangents (see bench/peers/nt_import.py). Used by the benchmarks only; git-ignored.
# Usage: bash bench/peers/make_nt_env.sh [python3.11]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3.11}"
VENV=.venv-nt
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'PY' 2>/dev/null
import sys, unittest.mock as m
sys.modules["neural_tangents.experimental"] = m.MagicMock()
import jax, neural_tangents
assert jax.__version__ == "0.4.25" and neural_tangents.__version__ == "0.6.5"
PY
then
  echo "bench/$VENV is ready"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "jax==0.4.25" "jaxlib==0.4.25" "numpy<2" "scipy<1.13" \
  "ml_dtypes<0.5" frozendict absl-py
"$VENV/bin/python" -m pip install --quiet --no-deps "neural-tangents==0.6.5"
"$VENV/bin/python" - <<'PY'
import sys, unittest.mock as m
sys.modules["neural_tangents.experimental"] = m.MagicMock()
import jax, neural_tangents
print("bench/.venv-nt: jax", jax.__version__, "neural-tangents", neural_tangents.__version__)
PY
