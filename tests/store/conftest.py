from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prunestudio.store import Store, open_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "studio.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    with open_store(db_path) as s:
        yield s


@pytest.fixture
def study(store: Store) -> int:
    return store.create_study(name="s1", kind="grid", model="smollm2-135m", config={"a": 1})
