"""`--quiet` before anything heavy is imported (torch-free, imports nothing).

Libraries read some switches once, when they are imported (tqdm's `TQDM_DISABLE`, the hub's
progress-bar switch): the CLI sets these variables before a handler imports the engine, and
`engine.models.loading.quiet_libraries` silences loggers and warnings later.
"""

from __future__ import annotations

import os

QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DATASETS_VERBOSITY": "error",
              "HF_HUB_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
              "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}


def quiet_environment() -> None:
    """Set the quieting variables (the user's own settings win)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
