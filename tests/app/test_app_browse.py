"""The store queries the web app reads (``prunestudio.store.browse``) and its incremental study
frame: change tokens, slim chart rows since a cursor, SQL paging that agrees with the charts'
filters, aggregates, lineage."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from app_store import add_search_candidates, build_app_store
from app_testlib import Run, assert_clean, frames
from prunestudio.app.data import StudyFrame
from prunestudio.app.tables import filter_frame
from prunestudio.store import browse, open_store
from prunestudio.store.browse import CandidateFilter

from prunestudio.schema import MetricIdentity

GRID, GP = 1, 2
SEARCH = MetricIdentity("ppl", "search", "pydoc", "all", 128, "proxy")


def test_change_tokens_move_with_every_write(app_db_copy: Path) -> None:
    with open_store(app_db_copy, readonly=True) as reader:
        token, study = browse.change_token(reader), browse.study_token(reader, GP)
        other = browse.study_token(reader, GRID)
        assert browse.study_token(reader, 99) is None
        with open_store(app_db_copy) as writer:
            writer.add_event(GP, "an event only")
        assert browse.change_token(reader) > token  # events count
        assert browse.study_token(reader, GP) == study  # ... but change no candidate
        token = browse.change_token(reader)
        with open_store(app_db_copy) as writer:
            add_search_candidates(writer, GP, 100, 2, random.Random(0))
        assert browse.change_token(reader) > token
        assert browse.study_token(reader, GP) > study
        assert browse.study_token(reader, GRID) == other


def test_points_since_returns_only_changed_candidates(app_db_copy: Path) -> None:
    with open_store(app_db_copy, readonly=True) as reader:
        batch = browse.candidate_points_since(reader, GP, 0)
        assert [c.idx for c in sorted(batch.candidates, key=lambda c: c.idx)] == list(range(21))
        assert all(not c.metrics for c in batch.candidates)  # values come apart
        best = next(c for c in batch.candidates if c.id == 28)
        assert best.label == "symbolic mul(sqr(W),tanh(G)) 50% dense-calib"
        assert best.seconds == pytest.approx(4.1) and best.parents
        values = [(v, i.key) for cid, i, v in batch.values if cid == 28]
        assert [k for _, k in values] == [SEARCH.key, "ppl:pydoc:all:256:full:in_domain",
                                          "ppl:shakespeare:hamlet:256:full:out_of_domain"]
        failed = next(c for c in batch.candidates if c.status == "failed")
        assert failed.error == "NaN scores from exp(tanh(W)) in layer 3"
        assert browse.candidate_points_since(reader, GP, batch.cursor).candidates == []
        with open_store(app_db_copy) as writer:
            new = add_search_candidates(writer, GP, 100, 3, random.Random(1))
        later = browse.candidate_points_since(reader, GP, batch.cursor)
        assert [c.id for c in later.candidates] == new
        assert {cid for cid, _, _ in later.values} <= set(new)


def test_study_frame_updates_incrementally(app_db_copy: Path) -> None:
    with open_store(app_db_copy, readonly=True, check_same_thread=False) as reader:
        frame = StudyFrame(GP)
        first = frame.update(reader)
        assert len(first.df) == 21 and list(first.df["idx"]) == list(range(21))
        assert frame.update(reader) is first  # same token: nothing read, same snapshot
        cursor = frame.cursor
        with open_store(app_db_copy) as writer:
            new = add_search_candidates(writer, GP, 100, 4, random.Random(2))
        second = frame.update(reader)
        assert len(second.df) == 25 and set(second.df["id"].tail(4)) == set(new)
        assert frame.cursor > cursor
        assert first.df is not second.df and len(first.df) == 21  # snapshots never change


def test_app_shows_new_candidates_at_once(run_app: Run, app_db_copy: Path) -> None:
    at = run_app(store=app_db_copy, study=str(GP))
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Candidates"] == "21"
    with open_store(app_db_copy) as writer:
        add_search_candidates(writer, GP, 200, 5, random.Random(3))
    at.run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Candidates"] == "26"
    page = next(f for f in frames(at) if "candidate" in f.columns and "#" in f.columns)
    assert len(page) == 26


@pytest.mark.parametrize("filters", [
    CandidateFilter(),
    CandidateFilter(statuses=("done",)),
    CandidateFilter(origins=("mutation", "crossover")),
    CandidateFilter(generations=(1, 2)),
    CandidateFilter(generations=(0, None)),
    CandidateFilter(references=False),
    CandidateFilter(top_metric=SEARCH, top_percent=25.0),
    CandidateFilter(statuses=("done",), origins=("random",), top_metric=SEARCH,
                    top_percent=50.0),
])
def test_sql_paging_agrees_with_the_chart_filters(app_db: Path, filters: CandidateFilter
                                                  ) -> None:
    with open_store(app_db, readonly=True) as reader:
        df = StudyFrame(GP).update(reader).df
        expected = sorted(filter_frame(df, filters)["id"].astype(int))
        found, total = browse.candidate_page(reader, GP, filters, limit=None)
        assert sorted(c.id for c in found) == expected and total == len(expected)
        page, total_again = browse.candidate_page(reader, GP, filters, offset=2, limit=3)
        assert total_again == total and [c.id for c in page] == [c.id for c in found][2:5]


def test_sql_sort_by_a_metric_puts_missing_values_last(app_db: Path) -> None:
    with open_store(app_db, readonly=True) as reader:
        found, total = browse.candidate_page(reader, GP, sort=SEARCH, limit=None)
        values = [c.fitness.value if c.fitness else None for c in found]
        present = [v for v in values if v is not None]
        assert present == sorted(present) and values[len(present):] == [None] * 3
        assert found[0].id == 28 and total == 21
        desc, _ = browse.candidate_page(reader, GP, sort=SEARCH, descending=True, limit=3)
        assert desc[0].fitness.value == max(present)
        by_time, _ = browse.candidate_page(reader, GRID, sort="seconds", descending=True,
                                           limit=2)
        assert [c.seconds for c in by_time] == [14.8, 14.8]
        with pytest.raises(ValueError, match="sort must be"):
            browse.candidate_page(reader, GP, sort="label")


def test_aggregates_lineage_and_dense(app_db: Path) -> None:
    with open_store(app_db, readonly=True) as reader:
        assert browse.status_counts(reader, GP) == {"done": 18, "failed": 1, "running": 1,
                                                    "pending": 1}
        overview = browse.study_overview(reader)
        assert set(overview) == {1, 2, 3, 4, 5, 6}
        assert overview[GRID]["compute_s"] == pytest.approx(91.0)
        reasons = browse.failure_reasons(reader, 5)
        assert [(r["n"], r["first_id"]) for r in reasons] == [(2, 49), (1, 51)]
        lineage = browse.lineage_ids(reader, 28, depth=1)
        assert lineage[0] == (28, 0)
        parents = reader.candidate_record(28).parents
        assert {i for i, d in lineage if d == 1} == set(parents)
        assert browse.lineage_ids(reader, 11) == [(11, 0)]  # generation 0: no parents
        dense = browse.dense_candidates(reader, [1, 2, 3])
        assert {s: c.label for s, c in dense.items()} == {1: "dense", 3: "dense"}
        idents = browse.metric_identities(reader, [GP])
        assert idents[0] == SEARCH and len(idents) == 3
        records = browse.candidate_records_by_ids(reader, [28, 999, 1])
        assert [c.id for c in records] == [28, 1] and records[0].metrics[0].protocol
        events = browse.recent_events(reader, GP, limit=2)
        assert len(events) == 2 and events[0].id > events[1].id


def test_big_store_builder_writes_a_study(tmp_path: Path) -> None:
    from app_store import build_big_store

    sid = build_big_store(tmp_path / "big.db", n=120)
    with open_store(tmp_path / "big.db", readonly=True) as reader:
        assert sum(browse.status_counts(reader, sid).values()) == 120
    assert build_app_store  # the six studies come first


def test_csv_download_holds_every_filtered_row_in_table_order(app_db: Path) -> None:
    from prunestudio.app.data import csv_bytes

    text = csv_bytes(str(app_db), GP, CandidateFilter(origins=("mutation", "crossover")),
                     SEARCH, False, ["id", "candidate", "ppl search·p"]).decode()
    lines = text.strip().splitlines()
    assert lines[0] == "id,candidate,ppl search·p"
    assert len(lines) == 1 + 12  # generations 1 and 2 (running and pending included)
    assert lines[1] == '28,"symbolic mul(sqr(W),tanh(G)) 50% dense-calib",20.88'  # quoted: commas
