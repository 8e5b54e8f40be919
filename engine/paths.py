"""Where Prune Studio keeps caches and stores on disk (overridable by environment)."""

from __future__ import annotations

import os
from pathlib import Path

from prunestudio.schema import default_store_path  # the one definition (re-exported)

__all__ = ["cache_dir", "cache_root", "default_store_path", "home_dir"]


def home_dir() -> Path:
    """`$PRUNESTUDIO_HOME`, default `~/.cache/prunestudio`."""
    return Path(os.environ.get("PRUNESTUDIO_HOME", Path.home() / ".cache" / "prunestudio"))


def cache_root() -> Path:
    """`$PRUNESTUDIO_CACHE`, default `$PRUNESTUDIO_HOME/cache` (not created here)."""
    return Path(os.environ.get("PRUNESTUDIO_CACHE", home_dir() / "cache"))


def cache_dir(kind: str) -> Path:
    """A cache folder of one kind (models, stats, text), created on demand."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
