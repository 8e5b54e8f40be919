"""Where a store lives by default (the CLI, the TUI and the web app agree)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STORE_ENV", "default_store_path"]

STORE_ENV = "PRUNESTUDIO_STORE"


def default_store_path() -> Path:
    """`$PRUNESTUDIO_STORE`, default `./prunestudio.db` in the working directory."""
    return Path(os.environ.get(STORE_ENV, "prunestudio.db"))
