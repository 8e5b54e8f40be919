"""m004_owl_band: a store written before schema 4 recorded `layer_ratios = "owl"` for OWL
ratios computed with the band mapping (every block within s ± λ); "owl" now means the OWL
code's mapping. Opening such a store read-write relabels those specs and configs "owl_band"
and recomputes the spec hashes, so old results keep a truthful label and a resumed study
computes what it recorded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prunestudio.store import SCHEMA_VERSION, Store, StoreError, open_store
from prunestudio.store.schema import get_migrations

from prunestudio.schema.canonical import canonical_json, spec_hash
from prunestudio.schema.spec import CandidateSpec


def _spec(layer_ratios: str, sparsity: float = 0.5) -> dict:
    return CandidateSpec(method="wanda", sparsity=sparsity, layer_ratios=layer_ratios).canonical()


def _v3_store(path: Path) -> Store:
    """A schema-3 store: the shipped migrations up to m003, written through the store API."""
    store = Store(sqlite3.connect(path), path, readonly=False)
    get_migrations().apply(store.db, stop_before="m004_owl_band")
    assert store.schema_version == 3
    return store


def test_v3_owl_candidates_become_owl_band_with_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    config = {"kind": "grid", "grid": {"methods": ["wanda"], "layer_ratios": "owl"},
              "other": [{"layer_ratios": "owl"}, {"layer_ratios": "uniform"}],
              "note": "owl"}
    with _v3_store(path) as store:
        sid = store.create_study(name="old-owl", kind="grid", model="m", config=config)
        other = store.create_study(name="plain", kind="grid", model="m",
                                   config={"grid": {"layer_ratios": "uniform"}})
        dense, _ = store.add_candidate(sid, {"method": "dense"}, origin="baseline")
        owl, _ = store.add_candidate(sid, _spec("owl"), origin="grid")
        uniform, _ = store.add_candidate(sid, _spec("uniform"), origin="grid")
        store.finish_candidate(owl, metrics=[{"name": "ppl", "value": 12.5, "role": "in_domain",
                                              "dataset": "wikitext2", "seqlen": 64}],
                               info={"block_ratios": [0.45, 0.55]})
        old = {cid: store.candidate(cid) for cid in (dense, owl, uniform)}
        plain_config = store.get_study(other)["config"]
    assert old[owl]["spec"]["layer_ratios"] == "owl"
    # before the upgrade, a read-only open would show band-mapped results as 'owl': refused
    with pytest.raises(StoreError, match="band mapping now named 'owl_band'.*read-write"):
        open_store(path, readonly=True)

    with open_store(path) as store:  # read-write: migrated
        assert store.schema_version == SCHEMA_VERSION == 4
        applied = [r[0] for r in store.conn.execute("SELECT name FROM _sqlite_migrations")]
        assert applied[-1] == "m004_owl_band"
        new = {cid: store.candidate(cid) for cid in (dense, owl, uniform)}
        band = new[owl]
        assert band["spec"] == _spec("owl_band")  # nothing else in the spec changed
        assert band["spec"]["owl"] == old[owl]["spec"]["owl"]
        assert band["spec_hash"] == spec_hash(band["spec"]) == CandidateSpec(
            **band["spec"]).hash()
        assert band["spec_hash"] != old[owl]["spec_hash"]
        raw = store.conn.execute("SELECT spec FROM candidates WHERE id = ?", (owl,)).fetchone()
        assert raw[0] == canonical_json(_spec("owl_band"))
        assert band["updated_seq"] > old[owl]["updated_seq"]  # readers polling see it change
        assert store.candidate_record(owl).label == "wanda 50% owl-band"
        # its results are untouched
        assert band["status"] == "done" and band["info"] == {"block_ratios": [0.45, 0.55]}
        assert [m.value for m in store.candidate_record(owl).metrics] == [12.5]
        # non-OWL candidates are untouched, hash and all
        for cid in (dense, uniform):
            assert new[cid] == old[cid]
        # the study config: every object's "owl" layer_ratios, nothing else
        got = store.get_study(sid)["config"]
        assert got == {"kind": "grid", "grid": {"methods": ["wanda"], "layer_ratios": "owl_band"},
                       "other": [{"layer_ratios": "owl_band"}, {"layer_ratios": "uniform"}],
                       "note": "owl"}
        assert store.get_study(other)["config"] == plain_config
        # a resumed study proposing what it recorded finds the recorded candidate
        assert store.add_candidate(sid, _spec("owl_band"), origin="grid") == (owl, False)
        # and "owl" (the OWL code's mapping) is a new candidate
        fresh, created = store.add_candidate(sid, _spec("owl"), origin="grid")
        assert created and fresh not in (dense, owl, uniform)

    with open_store(path, readonly=True) as store:  # upgraded: readable read-only
        assert store.candidate(owl)["spec"]["layer_ratios"] == "owl_band"

    with open_store(path) as store:  # a second open migrates nothing again
        assert store.candidate(owl)["spec"]["layer_ratios"] == "owl_band"
        assert store.candidate(fresh)["spec"]["layer_ratios"] == "owl"


def test_an_old_store_without_owl_stays_readable_read_only(tmp_path: Path) -> None:
    path = tmp_path / "v3plain.db"
    with _v3_store(path) as store:
        sid = store.create_study(name="plain", kind="grid", model="m",
                                 config={"grid": {"layer_ratios": "uniform"}})
        store.add_candidate(sid, _spec("uniform"), origin="grid")
    with open_store(path, readonly=True) as store:
        assert store.schema_version == 3 and store.get_study(sid)["name"] == "plain"


def test_a_new_store_records_owl_as_given(tmp_path: Path) -> None:
    with open_store(tmp_path / "new.db") as store:
        sid = store.create_study(name="s", kind="grid", model="m",
                                 config={"grid": {"layer_ratios": "owl"}})
        cid, _ = store.add_candidate(sid, _spec("owl"), origin="grid")
    with open_store(tmp_path / "new.db") as store:
        assert store.candidate(cid)["spec"]["layer_ratios"] == "owl"
        assert store.get_study(sid)["config"]["grid"]["layer_ratios"] == "owl"
