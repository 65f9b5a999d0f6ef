#!/usr/bin/env bash
# Set up .venv, start a local PostgreSQL server for the PostgreSQL tests, and run the test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
source scripts/postgres.sh
.venv/bin/python -m pytest -n 2 -q "$@"
