"""A store written by release 0.1 (schema version 1) opens unchanged with the current code.

tests/store/fixtures/store-v1.sql is a plain SQL dump (the project commits no database
files) of a store written through the store API by that release
(scripts/make_store_v1_fixture.py): studies of kinds grid, gp and random, candidates done /
failed / skipped / pending / running, metrics with protocols, events, an artifact, a worker.
Never regenerate it: it stands for files users already have.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from prunestudio.store import SCHEMA_VERSION, open_store, queries

from prunestudio.schema import Candidate, Study

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1.sql"


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text())
    conn.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_everything(store) -> dict:
    studies = queries.study_records(store, now=0.0)
    out: dict = {"studies": studies, "candidates": {}, "events": {}, "workers": []}
    for s in studies:
        assert isinstance(s, Study) and s.counts is not None
        out["candidates"][s.id] = store.candidate_records(s.id)
        out["events"][s.id] = queries.event_records_since(store, s.id, 0)[0]
    out["workers"] = queries.worker_records(store, now=0.0)
    return out


def test_v1_store_opens_read_only_unchanged_and_reads_as_records(v1_store: Path) -> None:
    before = _digest(v1_store)
    with open_store(v1_store, readonly=True) as store:
        assert store.schema_version == 1 <= SCHEMA_VERSION
        seen = _read_everything(store)
        assert store.predictor_fits(1) == []  # a table v1 has not: nothing to read
    assert _digest(v1_store) == before  # a reader changes nothing

    studies = {s.name: s for s in seen["studies"]}
    assert {s.kind for s in studies.values()} == {"grid", "gp", "random"}
    grid, gp = studies["baselines"], studies["prunerzero-gp"]
    assert grid.primary_role == "in_domain" and gp.primary_role == "search"
    assert gp.counts.budget_used == 20 and grid.counts.failed == 1
    cands: list[Candidate] = [c for cs in seen["candidates"].values() for c in cs]
    assert {c.status for c in cands} == {"done", "failed", "skipped", "pending", "running"}
    assert all(c.label and c.label != "?" for c in cands)
    by_label = {c.label for c in seen["candidates"][grid.id]}
    assert {"dense", "magnitude[matrix] 50%", "wanda 2:4", "sparsegpt 50%"} <= by_label
    gp_cands = seen["candidates"][gp.id]
    assert any(c.label.startswith("symbolic mul(") for c in gp_cands)
    skipped = next(c for c in gp_cands if c.status == "skipped")
    assert skipped.equivalent_to is not None and skipped.fitness is not None
    dense = next(c for c in seen["candidates"][grid.id] if c.is_dense)
    assert dense.is_reference and dense.ppl("in_domain").protocol["windows"] == "non-overlapping"
    assert any(e.level == "error" for e in seen["events"][grid.id])
    assert [w.name for w in seen["workers"]] == ["gpu0"]
    done = next(c for c in gp_cands if c.status == "done")
    with open_store(v1_store, readonly=True) as store:
        assert [a.kind for a in store.artifact_records(done.id)] == ["model"]
        # the dict reads the engine relies on agree with the records
        assert store.candidate(done.id) == {**done.as_dict(), "info": done.as_dict()["info"]}


def test_v1_store_opens_read_write_and_reads_the_same(v1_store: Path) -> None:
    with open_store(v1_store, readonly=True) as store:
        before = _read_everything(store)
    with open_store(v1_store) as store:  # migrated: v2 only adds the predictor_fits table
        assert store.schema_version == SCHEMA_VERSION
        after = _read_everything(store)
        assert all(store.predictor_fits(s.id) == [] for s in after["studies"])
        gp = store.study_record("prunerzero-gp")
        cid, created = store.add_candidate(gp.id, {"method": "dense"}, origin="baseline")
        assert created and store.candidate_record(cid).is_reference
    assert after == before
