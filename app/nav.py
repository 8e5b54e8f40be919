"""Navigation of the web app: the store path, query parameters (deep links), links between
pages, selections that become links, and live refresh."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st
from prunestudio.app import PAGE_SCRIPTS

from prunestudio.schema import default_store_path

__all__ = [
    "DEFAULT_LIVE_SECONDS",
    "link_candidate",
    "link_compare",
    "link_study",
    "live_interval",
    "qp_ids",
    "qp_int",
    "qp_text",
    "run_live",
    "selection_links",
    "store_path",
]

DEFAULT_LIVE_SECONDS = 2.0
MIN_LIVE_SECONDS = 0.5


def store_path() -> str:
    """The store this app shows: ``-- --store PATH`` after the script (what ``prunestudio
    web`` passes), else ``$PRUNESTUDIO_STORE`` / ``./prunestudio.db``."""
    argv = sys.argv[1:]
    if "--store" in argv and argv.index("--store") + 1 < len(argv):
        return argv[argv.index("--store") + 1]
    return str(default_store_path())


def qp_text(name: str) -> str | None:
    value = st.query_params.get(name)
    return None if value in (None, "") else str(value)


def qp_int(name: str) -> int | None:
    """An integer query parameter (None when missing or not a number)."""
    value = qp_text(name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def parse_ids(text: str | None) -> list[int]:
    """``"3, 5,7"`` -> [3, 5, 7]; anything that is not a number is skipped; no repeats."""
    out: list[int] = []
    for part in (text or "").replace(";", ",").replace(" ", ",").split(","):
        if part.strip().lstrip("#").isdigit():
            value = int(part.strip().lstrip("#"))
            if value not in out:
                out.append(value)
    return out


def qp_ids(name: str) -> list[int]:
    return parse_ids(qp_text(name))


def link_study(study_id: int, label: str, **kwargs: Any) -> None:
    st.page_link(PAGE_SCRIPTS["study"], label=label, query_params={"study": str(study_id)},
                 **kwargs)


def link_candidate(candidate_id: int, label: str, **kwargs: Any) -> None:
    st.page_link(PAGE_SCRIPTS["candidate"], label=label,
                 query_params={"candidate": str(candidate_id)}, **kwargs)


def link_compare(ids: Sequence[int], label: str, **kwargs: Any) -> None:
    st.page_link(PAGE_SCRIPTS["compare"], label=label,
                 query_params={"compare": ",".join(str(i) for i in ids)}, **kwargs)


def selection_links(ids: Sequence[int], labels: dict[int, str] | None = None,
                    limit: int = 8) -> None:
    """Links for the candidates a chart selection picked: each one's page (the first
    ``limit``) and, for several, a comparison of them."""
    if not ids:
        return
    labels = labels or {}
    cols = st.columns([3, 2])
    with cols[0]:
        for cid in ids[:limit]:
            link_candidate(cid, f"Open candidate {cid}: {labels.get(cid, '')}".strip(": "),
                           icon=":material/open_in_new:")
        if len(ids) > limit:
            st.caption(f"… and {len(ids) - limit} more")
    with cols[1]:
        if len(ids) > 1:
            link_compare(ids[:50], f"Compare these {min(len(ids), 50)}",
                         icon=":material/compare_arrows:")


def live_interval(active: bool) -> float | None:
    """Seconds between live refreshes, or None: the sidebar's pause toggle (default on while
    something runs); ``?live=0`` turns it off, ``?live=SECONDS`` sets the period."""
    asked = qp_text("live")
    seconds = DEFAULT_LIVE_SECONDS
    default = active
    if asked is not None:
        try:
            seconds = float(asked)
        except ValueError:
            seconds = DEFAULT_LIVE_SECONDS
        default = seconds > 0
        seconds = max(MIN_LIVE_SECONDS, seconds) if seconds > 0 else DEFAULT_LIVE_SECONDS
    on = st.sidebar.toggle("Live refresh", value=default, key="live",
                           help=f"re-read the store every {seconds:g} s (only what changed); "
                                "?live=0 in the URL starts paused")
    return seconds if on else None


def run_live(render: Callable[[], None], interval: float | None) -> None:
    """Run ``render`` in a fragment that re-runs every ``interval`` seconds (only it, not the
    whole page), or once when ``interval`` is None."""
    if interval is None:
        render()
    else:
        st.fragment(run_every=interval)(render)()
