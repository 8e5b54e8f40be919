"""Shared fixtures: isolated caches and tiny model folders built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# before torch loads: OpenMP threads that spin-wait slow a busy small machine by 10×+
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every cache (statistics, the default model's dequantized copy) goes to a temporary
    folder: tests never read what an earlier run left behind."""
    if "PRUNESTUDIO_CACHE" not in os.environ:
        os.environ["PRUNESTUDIO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ("llama", "opt", "gpt_neox",
                                                                   "gpt2")}
