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
# Three test processes on CI's two cores: many tests mostly wait (Slurm jobs, leases, live views),
# and a third process computes meanwhile; worksteal keeps the last long tests from queueing behind one another.
.venv/bin/python -m pytest -n 3 --dist worksteal -q "$@"
