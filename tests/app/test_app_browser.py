"""End to end in a real browser: `prunestudio web` (the console script) serves a store while
`prunestudio run` writes a real tiny-model grid study into it; Debian's Chromium, driven by
Playwright, opens every page and a deep link, checks charts, figures and labels, sees new
candidates arrive on the live Study page without a reload, and saves screenshots (under the
test's tmp_path, and copied to ``$PRUNESTUDIO_ARTIFACTS/web-browser`` when that is set).

A tiny model's candidate takes a fraction of a second, so the study is paused (SIGSTOP) once
two candidates are done, while the pages are checked, and resumed (SIGCONT) on the live
Study page: new candidates then arrive while the browser watches, on any machine.

Needs /usr/bin/chromium (``.ci/run`` installs it; skipped with that reason otherwise) and the
``playwright`` package (the dev extra; never ``playwright install``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from app_browser import CHROMIUM, chromium, open_app, web_server
from prunestudio.store import StoreError, open_store

pytest.importorskip("playwright", reason="needs the playwright package (the dev extra)")
from playwright.sync_api import Page, expect  # noqa: E402

PRUNESTUDIO = Path(sys.executable).parent / "prunestudio"
STUDY = "browser-e2e"
WAIT_S = 45.0  # one page, or one new candidate, on a busy 2-core machine
SPARSITIES = [round(0.3 + 0.05 * i, 2) for i in range(6)]  # 3 methods × 6 + dense


@pytest.fixture(scope="session")  # session: checked before the session's tiny models are built
def browser_ready() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install -y chromium; "
                    ".ci/run installs it)")
    return CHROMIUM


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Page, str], Path]:
    """``shot(page, name)``: a PNG of the viewport, kept as a test artifact."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    artifacts = os.environ.get("PRUNESTUDIO_ARTIFACTS")

    def shot(page: Page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        if artifacts:
            target = Path(artifacts) / "web-browser"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / path.name)
        return path

    return shot


def _study_toml(model_dir: Path) -> str:
    """A grid of 19 candidates on the tiny llama; 64 × 128-token evaluation windows make each
    take long enough (~0.2 s) that a poll every 0.1 s pauses the study well before its end."""
    from tiny_models import tiny_study_toml

    toml = tiny_study_toml(model_dir, methods='["magnitude", "wanda", "sparsegpt"]',
                           patterns='["unstructured"]')
    toml = toml.replace("sparsities = [0.5]", f"sparsities = {SPARSITIES}")
    toml = toml.replace("seqlen = 64, n = 4, offset = 20000", "seqlen = 128, n = 64, "
                        "offset = 20000")
    assert f"sparsities = {SPARSITIES}" in toml and "n = 64" in toml
    return f'[study]\nname = "{STUDY}"\n{toml}'


def _rows(db: Path) -> list[dict]:
    try:
        with open_store(db, readonly=True) as store:
            sid = store.get_study(STUDY)["id"]
            return [dict(c, study_id=sid) for c in store.candidates(sid)]
    except StoreError:  # no store or no study yet
        return []


@pytest.fixture
def live_study(tiny_model_dirs: dict[str, Path], tmp_path: Path
               ) -> Iterator[tuple[Path, subprocess.Popen]]:
    """`prunestudio run` on a new store, paused (SIGSTOP) once two candidates are done;
    killed at the end."""
    toml = tmp_path / "study.toml"
    toml.write_text(_study_toml(tiny_model_dirs["llama"]))
    db = tmp_path / "studio.db"
    log = (tmp_path / "study.log").open("w")
    # one thread for torch: the other core serves the app and the browser
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(PRUNESTUDIO), "run", str(toml), "--store", str(db),
                             "--quiet", "--device", "cpu"], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _poll(lambda: sum(r["status"] == "done" for r in _rows(db)) >= 2, proc, tmp_path,
              "two finished candidates", timeout=120)
        proc.send_signal(signal.SIGSTOP)
        yield db, proc
    finally:
        proc.kill()
        proc.wait()
        log.close()


def _poll(check: Callable[[], bool], proc: subprocess.Popen, tmp_path: Path, what: str,
          timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"the study ended (exit {proc.returncode}) before {what}:\n"
                        f"{(tmp_path / 'study.log').read_text()[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"no {what} after {timeout:.0f} s")
        time.sleep(0.1)


def _clean(page: Page) -> None:
    """No exception and no error or warning box on the page."""
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    alerts = page.locator('[data-testid="stAlertContainer"][role="alert"]').all_inner_texts()
    assert not alerts, alerts


def _metric(page: Page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(f"^{label}$")))
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=WAIT_S * 1000)


def _charts(page: Page) -> int:
    return page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').count()


def test_every_page_in_a_browser_while_a_study_runs(
        browser_ready: Path, live_study: tuple[Path, subprocess.Popen],
        shots: Callable[[Page, str], Path]) -> None:
    db, study_proc = live_study
    rows = _rows(db)
    sid = rows[0]["study_id"]
    done = [r["id"] for r in rows if r["status"] == "done"]
    with web_server(db) as url, chromium() as ctx:
        page = ctx.new_page()
        page.set_default_timeout(WAIT_S * 1000)
        heading = page.locator('[data-testid="stMainBlockContainer"] h1').first

        # Studies (live off so the page goes idle): the running study with its figures
        open_app(page, f"{url}/studies?live=0", WAIT_S)
        expect(heading).to_have_text("Studies")
        assert (_metric(page, "Studies"), _metric(page, "Running")) == ("1", "1")
        expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(1)
        _clean(page)
        shots(page, "studies")

        # Study: header figures, tabs, charts
        open_app(page, f"{url}/study?study={sid}&live=0", WAIT_S)
        expect(heading).to_have_text(f"Study {STUDY}")
        expect(page.get_by_text("kind grid")).to_be_visible()
        assert int(_metric(page, "Done")) >= 2
        assert _metric(page, "Candidates") == str(1 + 3 * len(SPARSITIES))
        assert _charts(page) >= 1
        expect(page.get_by_role("tab", name="Methods")).to_be_visible()
        _clean(page)
        shots(page, "study")
        page.get_by_role("tab", name="Timeline").click()  # who ran what, per worker
        expect(page.get_by_text(re.compile(r"^\d+ workers? ran this study's candidates"))
               ).to_be_visible()

        # Candidate: its metrics with protocols and its export command
        open_app(page, f"{url}/candidate?candidate={done[1]}&live=0", WAIT_S)
        expect(heading).to_have_text(f"Candidate {done[1]}")
        expect(page.get_by_text(re.compile(r"^Metrics \(\d+\)$"))).to_be_visible()
        expect(page.get_by_text(f"prunestudio export {done[1]}")).to_be_visible()
        expect(page.get_by_text(f"of study {STUDY}")).to_be_visible()
        _clean(page)
        shots(page, "candidate")

        # Compare: bars against dense (the first candidate) and the curves
        open_app(page, f"{url}/compare?compare={','.join(map(str, done))}&live=0", WAIT_S)
        expect(heading).to_have_text("Compare")
        expect(page.get_by_text("Perplexity against dense")).to_be_visible()
        assert _charts(page) >= 2
        _clean(page)
        shots(page, "compare")

        # a deep link to the root URL opens the page it names
        open_app(page, f"{url}/?candidate={done[0]}&live=0", WAIT_S)
        expect(heading).to_have_text(f"Candidate {done[0]}")
        assert "/candidate?" in page.url
        _clean(page)
        # and a page link goes on to the study (live refresh on: it runs, so assert content)
        page.get_by_role("link", name=f"Study {STUDY}").click()
        expect(heading).to_have_text(f"Study {STUDY}")

        # live: the Study page picks up new candidates without a reload
        page.goto(f"{url}/study?study={sid}&live=1")
        expect(heading).to_have_text(f"Study {STUDY}")
        before = int(_metric(page, "Done"))
        assert before == len(done) < int(_metric(page, "Candidates"))
        page.evaluate("window.__not_reloaded = true")
        study_proc.send_signal(signal.SIGCONT)
        done_value = page.locator('[data-testid="stMetric"]').filter(
            has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile("^Done$"))
        ).locator('[data-testid="stMetricValue"]')
        expect(done_value).not_to_have_text(str(before), timeout=WAIT_S * 1000)
        after = int(done_value.inner_text())
        assert after > before
        assert page.evaluate("window.__not_reloaded === true")
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        shots(page, "study-live")
