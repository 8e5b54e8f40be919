"""Web app fixtures: stores written through the store's write API (``app_store.py``) and a
runner of the real app script under ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_store import build_app_store, build_empty_store
from app_testlib import RUN_TIMEOUT, Run
from prunestudio.app import MAIN_SCRIPT
from streamlit.testing.v1 import AppTest


@pytest.fixture(scope="session")
def app_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_app_store(tmp_path_factory.mktemp("app") / "app.db")


@pytest.fixture(scope="session")
def app_db(app_master: Path) -> Path:
    """The six-study store (read only: tests that write use ``app_db_copy``)."""
    return app_master


@pytest.fixture
def app_db_copy(app_master: Path, tmp_path: Path) -> Path:
    target = tmp_path / "app.db"
    shutil.copyfile(app_master, target)
    return target


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_empty_store(tmp_path_factory.mktemp("empty") / "empty.db")




@pytest.fixture
def run_app(monkeypatch: pytest.MonkeyPatch, app_db: Path) -> Run:
    """``run_app(store=None, page=None, live="0", **query)``: the app's entry script run once
    on ``store`` (default: the six-study store) with these query parameters; ``page`` (a key
    of ``PAGE_SCRIPTS``) switches to that page after a first run."""

    def run(store: Path | None = None, page: str | None = None, live: str | None = "0",
            **query: str) -> AppTest:
        monkeypatch.setenv("PRUNESTUDIO_STORE", str(store or app_db))
        at = AppTest.from_file(str(MAIN_SCRIPT), default_timeout=RUN_TIMEOUT)
        if live is not None:
            at.query_params["live"] = live
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        if page is not None:
            from prunestudio.app import PAGE_SCRIPTS

            at.switch_page(PAGE_SCRIPTS[page]).run()
        return at

    return run
