"""Screenshots of the web app for the README: ``python scripts/web_screenshots.py [DIR]``
(default ``docs/screenshots``).

Builds the web tests' demo store (``tests/app/app_store.py``: six studies, fixed timestamps) in
a temporary folder, serves it with ``prunestudio web`` on a free port and saves, with Debian's
Chromium (``/usr/bin/chromium``, ``apt-get install -y chromium``) driven by Playwright at
1400×900 in the light theme, once each page is idle and its charts drawn:

- ``web-studies.png``: the Studies page;
- ``web-study.png``: the Study page of the finished ``random-search`` (best so far; the
  running ``prunerzero-gp`` reads 'stale' there, its runner long gone);
- ``web-compare.png``: the Compare page on the ``baselines`` grid's candidates (log y);
- ``web-candidate.png``: the best evolved metric of ``prunerzero-gp`` (expression tree).

Needs the dev extra (``playwright``; never ``playwright install``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from prunestudio.store import open_store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "app"))
from app_browser import CHROMIUM, chromium, open_app, wait_idle, web_server  # noqa: E402
from app_store import build_app_store  # noqa: E402

__all__ = ["SIZE", "main", "shots"]

SIZE = (1400, 900)
# the first Plotly chart of the page has drawn a log y axis
LOG_Y_JS = """() => {
  const plot = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  return !!plot && !!plot._fullLayout && plot._fullLayout.yaxis.type === 'log';
}"""


def shots(store: Path) -> dict[str, str]:
    """File name -> the URL (path and query) it shows, for the demo store at ``store``."""
    with open_store(store, readonly=True) as s:
        grid = s.get_study("baselines")["id"]
        gp = s.get_study("prunerzero-gp")["id"]
        search = s.get_study("random-search")["id"]
        compare = [c["id"] for c in s.candidates(grid, status="done")]
        evolved = [c for c in s.candidates(gp, status="done", with_metrics=True)
                   if c["origin"] in ("mutation", "crossover")]
    best = min(evolved, key=lambda c: min(m["value"] for m in c["metrics"]
                                          if m["name"] == "ppl"))
    return {
        "web-studies.png": "/studies?live=0",
        "web-study.png": f"/study?study={search}&live=0",
        "web-compare.png": f"/compare?compare={','.join(map(str, compare))}&live=0",
        "web-candidate.png": f"/candidate?candidate={best['id']}&live=0",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=str(ROOT / "docs" / "screenshots"),
                   help="folder for the PNGs (default docs/screenshots)")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"needs Chromium at {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prunestudio-shots-") as tmp:
        store = build_app_store(Path(tmp) / "demo.db")
        with web_server(store) as url, chromium(SIZE) as ctx:
            page = ctx.new_page()
            for name, path in shots(store).items():
                start = time.perf_counter()
                open_app(page, url + path, timeout=60)
                graph = page.locator('[data-testid="stGraphVizChart"] svg')
                if page.locator('[data-testid="stGraphVizChart"]').count():
                    graph.first.wait_for(state="attached", timeout=30_000)
                errors = page.locator('[data-testid="stException"], '
                                      '[data-testid="stAlertContainer"][role="alert"]')
                if errors.count():
                    raise RuntimeError(f"{path} shows an error: {errors.all_inner_texts()}")
                if name == "web-compare.png":  # magnitude's PPL dwarfs the others: log y
                    page.get_by_text("Log y axis", exact=True).click()
                    page.wait_for_function(LOG_Y_JS, timeout=60_000)
                    wait_idle(page, 60)
                page.mouse.move(SIZE[0] - 5, SIZE[1] // 2)  # no hover label, no sidebar button
                page.screenshot(path=str(out / name))
                print(f"{out / name}  ({path}, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
