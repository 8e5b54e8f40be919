"""Benchmark of the TUI on a big store: ``python scripts/tui_bench.py [--n 100000]``.

1. Writes a store with ``n`` candidates through the store's write API (``add_candidate``,
   ``start_candidate``, ``finish_candidate`` with metrics, ``fail_candidate``, ``add_event``),
   batched in transactions of 1000 candidates (or reuses one with ``--store PATH --reuse``).
2. Runs the app headless (Textual's ``run_test``) and measures, for the study screen:
   the first full load (every candidate read in chunks, merged into the view, first page
   shown), then refreshes while a writer keeps finishing and adding candidates: the store
   poll (``studies_since`` + ``candidates_since`` + ``events_since``, in the worker thread)
   and the UI-thread update (view merge + ``update_cell`` / new rows + info + chart), in the
   default idx order and sorted by a metric. Also the studies screen's poll
   (``studies_since`` + ``best_metrics``).
3. Memory: tracemalloc (Python allocations held by the view) and the process RSS.

Prints the figures; not a test (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunestudio.store import Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from store_builders import random_expression  # noqa: E402

__all__ = ["build_big_store", "main"]

def _metrics(value: float, full: bool) -> list[dict[str, Any]]:
    out = [{"name": "ppl", "value": value, "dataset": "pydoc", "split": "all", "seqlen": 128,
            "n_samples": 8, "fidelity": "proxy", "role": "search",
            "protocol": {"windows": "non-overlapping"}}]
    if full:
        out.append({"name": "ppl", "value": value * 1.07, "dataset": "pydoc", "split": "all",
                    "seqlen": 256, "n_samples": 32, "fidelity": "full", "role": "in_domain",
                    "protocol": {"windows": "non-overlapping"}})
    return out


def add_candidates(store: Store, study: int, rng: random.Random, start: int, count: int,
                   *, finish: bool = True) -> list[int]:
    """Add ``count`` GP-like candidates (run and finish them unless ``finish`` is False)."""
    ids = []
    for i in range(start, start + count):
        # a valid spec as the engine records it; the sparsity varies a little so that every
        # candidate is new even when two random expressions coincide
        spec = {"method": "symbolic", "sparsity": round(0.5 + i * 1e-7, 7),
                "pattern": {"kind": "unstructured", "n": None, "m": None},
                "layer_ratios": "uniform", "owl": None, "calibration": {"mode": "dense"},
                "options": {"expression": random_expression(rng, 4), "scope": "row"}}
        origin = "random" if i < 50 else rng.choice(("mutation", "crossover"))
        cid, _ = store.add_candidate(study, spec, origin=origin, generation=i // 50,
                                     parents=None if i < 50 else [rng.randrange(1, i)])
        ids.append(cid)
        if not finish:
            continue
        store.start_candidate(cid, worker="gpu0")
        if rng.random() < 0.03:
            store.fail_candidate(cid, error="NaN scores in layer 3")
        else:
            value = 18.0 + 200.0 / (1 + i / 500) + rng.random() * 5
            store.finish_candidate(cid, metrics=_metrics(value, rng.random() < 0.01),
                                   timings={"score": 0.5, "prune": 2.0, "eval": 1.5,
                                            "total": 4.0})
    return ids


def build_big_store(path: Path, n: int, seed: int = 0) -> tuple[int, float]:
    """Write a store with one running GP study of ``n`` candidates; return (study id, s)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    with open_store(path) as store:
        sid = store.create_study(name="big-gp", kind="gp", model="smollm2-135m", seed=seed,
                                 budget=n * 2, config={"study": {"name": "big-gp", "kind": "gp",
                                                   "seed": seed}, "evaluation": [
                                     {"role": "in_domain", "fidelity": "full"}]})
        store.set_study_status(sid, "running")
        for start in range(0, n, 1000):
            with store.transaction():
                add_candidates(store, sid, rng, start, min(1000, n - start))
                store.add_event(sid, f"generation {start // 50}: {start + 1000} evaluated",
                                progress=min(1.0, (start + 1000) / (2 * n)))
            if start and start % 20_000 == 0:
                print(f"  … {start:,} candidates written ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    return sid, time.perf_counter() - t0


def _ms(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return (f"median {statistics.median(xs) * 1000:6.1f} ms · p95 {p95 * 1000:6.1f} ms · "
            f"max {xs[-1] * 1000:6.1f} ms")


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


async def _measure(path: Path, study_id: int, refreshes: int, per_refresh: int) -> None:
    from prunestudio.tui.app import PruneStudioApp
    from prunestudio.tui.feed import StoreReader, StudiesFeed, StudyFeed
    from prunestudio.tui.machine import FrozenSampler, MachineSnapshot
    from prunestudio.tui.messages import StudyPolled
    from prunestudio.tui.study_screen import CandidateTableWidget, StudyScreen
    from prunestudio.tui.view import CandidateView

    reader = StoreReader(path)
    sampler = FrozenSampler(MachineSnapshot("bench", 0.0, 1, 0, 1))
    app = PruneStudioApp(reader, interval=3600, machine_interval=0, sampler=sampler)
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        print(f"app start to studies listed (headless): {time.perf_counter() - t0:.2f} s")
        rss0 = _rss()
        # -- studies screen poll ----------------------------------------------------------
        sfeed = StudiesFeed(reader)
        t = time.perf_counter()
        sfeed.poll()
        print(f"studies screen, first poll (studies_since + best_metrics): "
              f"{(time.perf_counter() - t) * 1000:.0f} ms (worker thread)")

        # -- full first load of the study screen, as the screen does it -------------------
        summary = next(iter(app.screen.summaries.values()))  # type: ignore[attr-defined]
        screen = StudyScreen(summary)
        screen._poll_worker = lambda: None  # type: ignore[method-assign]  # we drive polls
        await app.push_screen(screen)
        await pilot.pause()
        feed = StudyFeed(reader, study_id)
        table = screen.query_one(CandidateTableWidget)

        def handle(update: Any) -> float:
            t = time.perf_counter()
            screen.on_study_polled(StudyPolled(
                study_id, update.study, update.rows, update.columns, update.events,
                more=update.more, loaded=update.loaded))
            return time.perf_counter() - t

        reads, uis = [], []
        t0 = time.perf_counter()
        more = True
        while more:
            t = time.perf_counter()
            update = feed.poll()
            reads.append(time.perf_counter() - t)
            uis.append(handle(update))
            more = update.more
            await pilot.pause()  # the UI stays live between chunks
        t_total = time.perf_counter() - t0
        view: CandidateView = screen.view
        print(f"first load of {len(view.rows):,} candidates, {len(reads)} chunks of "
              f"{feed.chunk}: {t_total:.1f} s wall (store reads + decoding "
              f"{sum(reads):.1f} s in the worker thread; UI thread {sum(uis):.2f} s, at most "
              f"{max(uis) * 1000:.0f} ms per chunk; first {table.row_count}-row page after "
              f"{(reads[0] + uis[0]) * 1000:.0f} ms)")
        print(f"process RSS after the load: {_rss():.0f} MiB ({_rss() - rss0:+.0f} MiB)")

        # -- memory held by the view (a second load under tracemalloc) --------------------
        tracemalloc.start()
        other = CandidateView(summary.primary_role)
        mfeed = StudyFeed(reader, study_id)
        more = True
        while more:
            update = mfeed.poll()
            other.apply(update.rows, update.columns)
            more = update.more
            del update
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"memory: the cached rows of {len(other.rows):,} candidates hold "
              f"{current / 2**20:.1f} MiB of Python objects "
              f"({current / len(other.rows):.0f} B each; peak while loading "
              f"{peak / 2**20:.1f} MiB)")
        del other, mfeed

        # -- incremental refreshes while a writer keeps going ----------------------------
        rng = random.Random(1)
        writer = open_store(path)
        next_i = len(view.rows)
        running: list[int] = []

        def write_step() -> None:
            """What a busy study writes between two polls: the running candidate finishes,
            ``per_refresh`` - 1 more are added and finished, one new one starts running."""
            nonlocal next_i
            for cid in running:
                writer.finish_candidate(cid, metrics=_metrics(20.0 + rng.random(), False))
            add_candidates(writer, study_id, rng, next_i, per_refresh - 1)
            (cid,) = add_candidates(writer, study_id, rng, next_i + per_refresh - 1, 1,
                                    finish=False)
            writer.start_candidate(cid, worker="gpu0")
            running[:] = [cid]
            next_i += per_refresh
            writer.add_event(study_id, f"{next_i} evaluated")

        async def refresh_cycle(label: str) -> None:
            polls, uis, frames = [], [], []
            for _ in range(refreshes):
                write_step()
                t = time.perf_counter()
                update = feed.poll()
                polls.append(time.perf_counter() - t)
                uis.append(handle(update))
                t = time.perf_counter()
                await pilot.pause()
                frames.append(time.perf_counter() - t)
            total = [a + b for a, b in zip(polls, uis, strict=True)]
            print(f"refresh, {label} ({refreshes} polls, each after {per_refresh} candidates "
                  "finished and one started):")
            print(f"  store poll (worker thread) {_ms(polls)}")
            print(f"  UI update (UI thread)      {_ms(uis)}")
            print(f"  poll + UI update           {_ms(total)}")
            print(f"  repaint (pilot.pause)      {_ms(frames)}")

        idle = []
        for _ in range(refreshes):
            t = time.perf_counter()
            await pilot.pause()
            idle.append(time.perf_counter() - t)
        print(f"pilot.pause() with nothing changed (Textual's own idle wait): {_ms(idle)}")
        await refresh_cycle("sorted by #")
        primary = view.primary
        assert primary is not None
        t = time.perf_counter()
        screen.sort_by(primary.key)
        print(f"sort {len(view.rows):,} rows by {primary.title}: "
              f"{(time.perf_counter() - t) * 1000:.0f} ms (once, on the key press; re-fills "
              f"the {table.row_count}-row page)")
        await pilot.pause()
        await refresh_cycle(f"sorted by {primary.title}")
        t = time.perf_counter()
        screen.filter(status="failed")
        print(f"filter status=failed: {(time.perf_counter() - t) * 1000:.0f} ms "
              f"({len(view):,} rows)")
        screen.filter(status=None)
        forced, throttled = [], []
        for _ in range(5):
            write_step()
            t = time.perf_counter()
            sfeed.poll(force=True)
            forced.append(time.perf_counter() - t)
            write_step()
            t = time.perf_counter()
            sfeed.poll()
            throttled.append(time.perf_counter() - t)
        print("studies screen poll while the 100k study changes (worker thread):")
        print(f"  with best_metrics          {_ms(forced)}")
        print(f"  best deferred (throttled)  {_ms(throttled)}")
        writer.close()
    reader.close()


def _time_import() -> float:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); "
         "import prunestudio.tui.app; print(time.perf_counter() - t)"],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/tui_bench.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="candidates (default 100000)")
    parser.add_argument("--store", type=Path, default=None,
                        help="store file to write (default: a temporary file)")
    parser.add_argument("--reuse", action="store_true", help="reuse --store if it exists")
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--per-refresh", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]} · {os.cpu_count()} CPUs")
    print(f"import prunestudio.tui.app: {_time_import() * 1000:.0f} ms (no torch)")
    tmp: Callable[[], None] | None = None
    path = args.store
    if path is None:
        folder = tempfile.TemporaryDirectory()
        path, tmp = Path(folder.name) / "bench.db", folder.cleanup
    if args.reuse and path.exists():
        with open_store(path, readonly=True) as store:
            study_id = int(store.get_study("big-gp")["id"])
        print(f"reusing {path}")
    else:
        if path.exists():
            path.unlink()
        print(f"writing {args.n:,} candidates through the store API to {path} …", flush=True)
        study_id, seconds = build_big_store(path, args.n)
        print(f"store written in {seconds:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)")
    try:
        asyncio.run(_measure(path, study_id, args.refreshes, args.per_refresh))
    finally:
        if tmp is not None:
            tmp()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
