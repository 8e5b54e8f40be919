"""Web app fixtures: stores written through the store's write API (``app_store.py``) and a
runner of the real app script under ``streamlit.testing.v1.AppTest``."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_store import build_app_store, build_empty_store
from prunestudio.app import MAIN_SCRIPT
from streamlit.testing.v1 import AppTest

RUN_TIMEOUT = 60.0  # seconds one script run may take (a busy 2-core machine)


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


Run = Callable[..., AppTest]


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


def assert_clean(at: AppTest) -> None:
    """No exception element and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def texts(at: AppTest) -> str:
    """Every markdown, caption, title, header, info and warning text of the page."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                 "error", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def _plain(value: Any) -> Any:
    """Plotly's typed arrays (``{"dtype": "f8", "bdata": base64}``) as lists, recursively."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            if "shape" in value:
                shape = [int(n) for n in str(value["shape"]).split(",")]
                array = array.reshape(shape)
            return array.tolist()
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """The Plotly figures of the page by widget key (or position), as their JSON specs (typed
    arrays decoded)."""
    out = {}
    for i, el in enumerate(at.get("plotly_chart")):
        spec = _plain(json.loads(el.proto.spec))
        parts = el.proto.id.split("-", 2)  # "$$ID-<hash>-<key>"
        out[parts[2] if len(parts) == 3 else str(i)] = spec
    return out


def graphs(at: AppTest) -> list[str]:
    """The DOT sources of the page's Graphviz charts."""
    return [el.proto.spec for el in at.get("graphviz_chart")]


def page_links(at: AppTest) -> list[tuple[str, str, str]]:
    """(label, page, query string) of every page link."""
    out = []
    for el in at.get("page_link"):
        p = el.proto
        out.append((p.label, p.page, getattr(p, "query_string", "")))
    return out


def frames(at: AppTest) -> list[Any]:
    """The pandas DataFrames of the page's st.dataframe elements."""
    return [d.value for d in at.dataframe]
