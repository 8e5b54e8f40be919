"""Pure parts of the TUI: formatting, the sorted view. (Labels, metric identities, the primary
metric and expression trees are the schema's: tests/schema.)"""

from __future__ import annotations

import random

import pytest
from prunestudio.tui.feed import PollLatch
from prunestudio.tui.formatting import bar, duration, eta, layer_ratios, metric_value
from prunestudio.tui.model import CandRow, MetricColumn
from prunestudio.tui.view import CandidateView


def test_formatting() -> None:
    assert bar(0.5, 4) == "██  " and bar(1.0, 3) == "███" and bar(None, 2) == "··"
    assert bar(0.0, 2) == "  " and len(bar(0.33, 7)) == 7
    assert [duration(x) for x in (None, 5, 125, 7260, 200000)] == [
        "—", "5s", "2m05s", "2h01m", "2d07h"]
    assert eta(100.0, 10, 30) == 200.0 and eta(100.0, 0, 30) is None and eta(5, 3, 3) == 0
    assert [metric_value(v) for v in (28.6712, 402.71, 1093.2, 5.12345, 0.51234, 1.02e8)] == [
        "28.67", "402.7", "1093", "5.123", "0.5123", "1.02e+08"]


def test_layer_ratios_found_in_a_spec() -> None:
    structured = {"method": "structured", "options": {"attention_ratios": [0.1, 0.2],
                                                      "mlp_ratios": [0.3, 0.4, 0.5]}}
    assert layer_ratios(structured) == {"attention_ratios": [0.1, 0.2],
                                        "mlp_ratios": [0.3, 0.4, 0.5]}
    nested = {"layer_ratios": {"attn": [0.1, 0.2], "mlp": [0.3, 0.4, 0.5]}}
    assert layer_ratios(nested) == {"layer_ratios.attn": [0.1, 0.2],
                                    "layer_ratios.mlp": [0.3, 0.4, 0.5]}
    assert layer_ratios({"options": {"ratios": [0.5, 1]}}) == {"ratios": [0.5, 1.0]}


def _col(role: str | None, fidelity: str | None = "full", name: str = "ppl") -> MetricColumn:
    return MetricColumn.of({"name": name, "dataset": "d", "split": "s", "seqlen": 128,
                            "fidelity": fidelity, "role": role})


def _row(cid: int, status: str = "done", ppl: float | None = None, origin: str = "random",
         key: str = "k") -> CandRow:
    return CandRow(id=cid, idx=cid, status=status, origin=origin, generation=None,
                   label=f"c{cid}", seconds=None, error=None,
                   metrics={} if ppl is None else {key: ppl})


def _brute(view: CandidateView) -> list[int]:
    rows = [r for r in view.rows.values()
            if (view.status_filter in (None, r.status))
            and (view.origin_filter in (None, r.origin))]
    present = [r for r in rows if r.metrics.get(view.sort_key) is not None]
    missing = sorted((r for r in rows if r.metrics.get(view.sort_key) is None),
                     key=lambda r: r.idx)
    present.sort(key=lambda r: (r.metrics[view.sort_key], r.idx), reverse=view.descending)
    return [r.id for r in present + missing]


def test_view_incremental_matches_full_sort() -> None:
    col = _col("in_domain")
    rng = random.Random(0)
    view = CandidateView()
    view.apply([_row(i) for i in range(50)], [MetricColumn(key="k", name="ppl",
                                                          role="in_domain")])
    view.set_sort("k")
    statuses = ["pending", "running", "done", "failed"]
    for step in range(400):
        cid = rng.randrange(70)
        value = None if rng.random() < 0.2 else round(rng.uniform(10, 50), 1)
        changes = view.apply([_row(cid, rng.choice(statuses), value,
                                   rng.choice(["random", "mutation"]))])
        if step % 97 == 0:
            view.set_filter(status=rng.choice([None, "done"]),
                            origin=rng.choice([None, "random"]))
        if step % 131 == 0:
            view.set_sort("k", descending=not view.descending)
        assert view.page(0, 1000) == _brute(view), step
        assert changes.changed <= set(view.rows)
    pos = view.page(0, 1000)
    for i, cid in enumerate(pos):
        assert view.position(cid) == i
    assert view.page(5, 3) == pos[5:8]
    assert col.title == "ppl in"


def test_view_best_series_skips_reference_and_tracks_out_of_order() -> None:
    view = CandidateView()
    cols = [MetricColumn(key="k", name="ppl", role="in_domain", fidelity="full")]
    dense = _row(0, ppl=5.0)
    dense.reference = True
    view.apply([dense, _row(1, ppl=30.0), _row(2, ppl=40.0), _row(3, ppl=20.0)], cols)
    assert view.best_series() == [30.0, 30.0, 20.0]
    best = view.best()
    assert best is not None and best[0].id == 3 and best[1] == 20.0
    view.apply([_row(5, ppl=25.0)])  # in order: appended
    assert view.best_series() == [30.0, 30.0, 20.0, 20.0]
    view.apply([_row(4, ppl=10.0)])  # out of order: recomputed
    assert view.best_series() == [30.0, 30.0, 20.0, 10.0, 10.0]
    view.apply([_row(4, status="failed")])  # a value disappears
    assert view.best_series() == [30.0, 30.0, 20.0, 20.0]
    assert len(view.best_series(points=2)) == 2 and view.best_series(points=2)[-1] == 20.0


@pytest.mark.parametrize("batch", [250, 3000])
def test_view_bulk_batches_match_full_sort(batch: int) -> None:
    """Big batches (a first load, a reset of many rows) take the merge / rebuild paths."""
    rng = random.Random(batch)
    view = CandidateView()
    view.apply([], [MetricColumn(key="k", name="ppl", role="in_domain")])
    view.set_sort("k", descending=True)
    view.set_filter(status="done")
    for _ in range(4):
        rows = [_row(rng.randrange(4000), rng.choice(["done", "done", "failed"]),
                     None if rng.random() < 0.1 else rng.uniform(10, 50)) for _ in range(batch)]
        rows = list({r.id: r for r in rows}.values())  # one change per id per batch
        view.apply(rows)
        assert view.page(0, 10_000) == _brute(view)
    assert sum(view.status_counts.values()) == len(view.rows)


def test_poll_latch_runs_a_request_made_during_a_poll_once_after_it() -> None:
    latch = PollLatch()
    assert latch.start() is True and latch.running
    assert latch.start() is False and latch.start(force=True) is False  # two while in flight
    assert latch.finish() is True  # one follow-up, forced because one request was
    assert not latch.running and latch.start() is True
    assert latch.finish() is None  # nothing asked meanwhile: no follow-up
    assert latch.start() is True and latch.start() is False
    assert latch.finish(cancelled=True) is None  # the screen is going away: dropped
    assert latch.start() is True and latch.finish() is None  # and not carried over
