#!/usr/bin/env bash
# Set up .venv, install chromium (for the report test) if missing, start a local PostgreSQL server
# and a single-node Slurm cluster for the PostgreSQL and Slurm tests, and run the test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/chromium.sh
source scripts/postgres.sh
source scripts/slurm.sh
.venv/bin/python -m pytest -n 2 -q "$@"
