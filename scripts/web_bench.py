"""Benchmark of the web app on a big store:
``.venv/bin/python scripts/web_bench.py [--n 10000] [--add 100] [--repeat 3] [--no-browser]``.

1. Writes a store with the six demo studies plus one running GP study of ``n`` candidates
   (``tests/app/app_store.build_big_store``, through the store's write API).
2. Streamlit's ``AppTest`` (the real entry script and pages, in this process, ``?live=0``),
   for every page — Studies, the big study's Study page (every view, 10k points), Compare
   (10 of its candidates), Candidate: the **first render** with cold caches (every
   ``st.cache_*`` cleared: a new server), a **rerun** with nothing changed, and a **refresh
   after ``add`` new candidates** (``app_store.add_search_candidates``, written between two
   runs, as a live study would) — medians of ``repeat`` tries, and the refresh's ratio to the
   first render.
3. Unless ``--no-browser``: ``prunestudio web`` on the store and Debian's Chromium
   (``/usr/bin/chromium``, Playwright): each page's first load in a new server until the
   app is idle and its charts drawn, a reload after ``add`` new candidates, and the Study
   page's live fragment (``?live=1``): seconds from the write until the new count shows
   (includes up to one 1 s period).

Prints one table; not a test (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunestudio.store import open_store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "app"))
from app_store import add_search_candidates, build_big_store  # noqa: E402

__all__ = ["main"]

RUN_TIMEOUT = 600.0


class Writer:
    """Adds GP-like candidates to the big study, as its runner would."""

    def __init__(self, store: Path, study_id: int, start: int) -> None:
        self.store, self.study_id, self.next = store, study_id, start
        self.rng = random.Random(1)

    def add(self, count: int) -> None:
        with open_store(self.store) as s:
            add_search_candidates(s, self.study_id, self.next, count, self.rng)
        self.next += count

    def done(self) -> int:
        with open_store(self.store, readonly=True) as s:
            return len(s.candidates(self.study_id, status="done"))


def _pages(store: Path, study_id: int) -> dict[str, dict[str, str]]:
    with open_store(store, readonly=True) as s:
        ids = [c["id"] for c in s.candidates(study_id, status="done")]
    return {
        "studies": {},
        "study": {"study": str(study_id)},
        "compare (10 candidates)": {"compare": ",".join(map(str, ids[:: len(ids) // 10][:10]))},
        "candidate": {"candidate": str(ids[-1])},
    }


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) + " s"


def _load(page: Any, go: Callable[[], Any]) -> tuple[float, float]:
    """Seconds until the app's script is done (connected, not running, no skeleton) and until
    every Plotly chart is drawn as well."""
    from app_browser import IDLE_JS, plotly_drawn

    start = time.perf_counter()
    go()
    page.wait_for_function(IDLE_JS, timeout=RUN_TIMEOUT * 1000)
    script = time.perf_counter() - start
    plotly_drawn(page, RUN_TIMEOUT)
    return script, time.perf_counter() - start


def _check(at: Any, page: str) -> None:
    if at.exception:
        raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")


def apptest(store: Path, pages: dict[str, dict[str, str]], writer: Writer, add: int,
            repeat: int) -> dict[str, dict[str, float]]:
    import streamlit as st
    from prunestudio.app import MAIN_SCRIPT
    from streamlit.testing.v1 import AppTest

    os.environ["PRUNESTUDIO_STORE"] = str(store)
    out: dict[str, dict[str, float]] = {}
    for page, query in pages.items():
        first, rerun, refresh = [], [], []
        for _ in range(repeat):
            logging.disable(logging.WARNING)  # outside a script run: "no ScriptRunContext"
            st.cache_data.clear()
            st.cache_resource.clear()
            at = AppTest.from_file(str(MAIN_SCRIPT), default_timeout=RUN_TIMEOUT)
            logging.disable(logging.NOTSET)
            at.query_params["live"] = "0"
            for key, value in query.items():
                at.query_params[key] = value
            first.append(_timed(at.run))
            _check(at, page)
            rerun.append(_timed(at.run))
            writer.add(add)
            refresh.append(_timed(at.run))
            _check(at, page)
        out[page] = {"first": statistics.median(first), "rerun": statistics.median(rerun),
                     "refresh": statistics.median(refresh)}
        print(f"  AppTest {page}: first {_list(first)}, rerun {_list(rerun)}, refresh "
              f"{_list(refresh)}", flush=True)
    return out


def browser(store: Path, pages: dict[str, dict[str, str]], writer: Writer, add: int
            ) -> dict[str, dict[str, float]]:
    import re
    from urllib.parse import urlencode

    from app_browser import chromium, web_server
    from playwright.sync_api import expect

    paths = {"studies": "/studies", "study": "/study",
             "compare (10 candidates)": "/compare", "candidate": "/candidate"}
    out: dict[str, dict[str, float]] = {}
    with web_server(store) as url, chromium() as ctx:
        page = ctx.new_page()
        for name, query in pages.items():
            target = f"{url}{paths[name]}?{urlencode({**query, 'live': '0'})}"
            first = _load(page, lambda t=target: page.goto(t, wait_until="domcontentloaded"))
            writer.add(add)
            reload = _load(page, lambda: page.reload(wait_until="domcontentloaded"))
            out[name] = {"first": first[1], "first script": first[0], "reload": reload[1],
                         "reload script": reload[0]}
            print(f"  browser {name}: first load {first[0]:.2f} s script, {first[1]:.2f} s "
                  f"charts drawn; reload after +{add} {reload[0]:.2f} / {reload[1]:.2f} s",
                  flush=True)
        study = pages["study"]["study"]
        page.goto(f"{url}/study?study={study}&live=1")
        value = page.locator('[data-testid="stMetric"]').filter(
            has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile("^Done$"))
        ).locator('[data-testid="stMetricValue"]')
        expect(value).to_have_text(str(writer.done()),
                                   timeout=RUN_TIMEOUT * 1000)
        start = time.perf_counter()
        writer.add(add)
        expect(value).to_have_text(str(writer.done()), timeout=RUN_TIMEOUT * 1000)
        out["study"]["live"] = time.perf_counter() - start
    return out


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="candidates of the big study")
    p.add_argument("--add", type=int, default=100, help="candidates added before a refresh")
    p.add_argument("--repeat", type=int, default=3, help="AppTest tries per page (median)")
    p.add_argument("--no-browser", action="store_true", help="AppTest only")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prunestudio-web-bench-") as tmp:
        store = Path(tmp) / "big.db"
        t0 = time.perf_counter()
        sid = build_big_store(store, args.n)
        print(f"store: {args.n:,} candidates in study {sid} written in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        writer = Writer(store, sid, start=args.n)
        pages = _pages(store, sid)
        times = apptest(store, pages, writer, args.add, args.repeat)
        web: dict[str, dict[str, float]] = {}
        from app_browser import CHROMIUM

        if not args.no_browser and CHROMIUM.exists():
            web = browser(store, pages, writer, args.add)
        elif not args.no_browser:
            print(f"(no browser timings: no {CHROMIUM})")
        with open_store(store, readonly=True) as s:
            total = len(s.candidates(sid))
    head = ["page", "AppTest first (cold)", "rerun (no change)", f"refresh (+{args.add})",
            "refresh / first"]
    if web:
        head += ["browser first load: script / drawn",
                 f"browser reload (+{args.add}): script / drawn"]
    rows = [head]
    for page, t in times.items():
        row = [page, f"{t['first']:.2f} s", f"{t['rerun']:.2f} s", f"{t['refresh']:.2f} s",
               f"{t['refresh'] / t['first']:.2f}"]
        if web:
            row += [f"{web[page]['first script']:.2f} / {web[page]['first']:.2f} s",
                    f"{web[page]['reload script']:.2f} / {web[page]['reload']:.2f} s"]
        rows.append(row)
    print()
    print(f"web app on {args.n:,} candidates (the big study ends with {total:,}); AppTest: "
          f"median of {args.repeat}, ?live=0")
    print(_table(rows))
    if web:
        print(f"live fragment (Study page, ?live=1): +{args.add} candidates on screen "
              f"{web['study']['live']:.2f} s after the write "
              "(includes up to one 1 s period)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
