"""Engine test fixtures: an isolated statistics cache per test, offline hub, tiny models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before transformers / huggingface_hub are imported: they read this once, at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))  # engine_testlib

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _engine_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Statistics and model caches go to this test's own folder, never ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNESTUDIO_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="session")
def byte_tok():
    from engine_testlib import byte_tokenizer

    return byte_tokenizer()
