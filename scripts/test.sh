#!/usr/bin/env bash
# The test suite: set up, lint, then pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
# torch's OpenMP threads spin-wait by default: on a busy 2-core machine that slows tests by 10×+
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
