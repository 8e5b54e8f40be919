"""TUI fixtures: the demo store (written through the store's write API with fixed
timestamps) and an app factory with a frozen clock and frozen machine figures."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_store import DEMO_NOW, build_demo_store
from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.feed import StoreReader
from prunestudio.tui.machine import FrozenSampler
from tui_helpers import FROZEN_MACHINE


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times are shown in local time: pin it so snapshots do not depend on the host."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def demo_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_store(tmp_path_factory.mktemp("demo") / "demo.db")


@pytest.fixture
def demo_db(demo_master: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store (tests may write to it)."""
    target = tmp_path / "demo.db"
    shutil.copyfile(demo_master, target)
    return target


@pytest.fixture
def make_app(demo_db: Path) -> Iterator[Callable[..., PruneStudioApp]]:
    readers: list[StoreReader] = []

    def make(path: Path | None = None, **kwargs: Any) -> PruneStudioApp:
        reader = StoreReader(path or demo_db)
        readers.append(reader)
        kwargs.setdefault("interval", 3600.0)  # polls happen when the test asks for them
        kwargs.setdefault("machine_interval", 0)
        kwargs.setdefault("clock", lambda: DEMO_NOW)
        kwargs.setdefault("sampler", FrozenSampler(FROZEN_MACHINE))
        kwargs.setdefault("store_label", "demo.db")
        return PruneStudioApp(reader, **kwargs)

    yield make
    for r in readers:
        r.close()
