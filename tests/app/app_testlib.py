"""Helpers of the web app's AppTest tests: what a rendered page shows (texts, charts, graphs,
page links, data frames) and that it shows no error. (Fixtures: ``conftest.py``.)"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

Run = Callable[..., AppTest]
RUN_TIMEOUT = 60.0  # seconds one script run may take (a busy 2-core machine)


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
