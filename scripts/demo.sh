#!/usr/bin/env bash
# The main job on the embedded default model, offline: set up, run the default study (the
# baselines), then a short Pruner-Zero GP search over symbolic metrics next to them.
# Extra arguments go to both `prunestudio run` calls (e.g. --store runs/demo.db).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/prunestudio run "$@"
.venv/bin/prunestudio run configs/gp-demo.toml "$@"
