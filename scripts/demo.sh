#!/usr/bin/env bash
# The main job on the embedded default model, offline: set up, then run the default study.
# Extra arguments go to `prunestudio run` (e.g. --store runs/demo.db).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/prunestudio run "$@"
