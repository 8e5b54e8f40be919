"""The demo store holds only what the engine itself would write."""

from __future__ import annotations

from pathlib import Path

from demo_store import build_demo_store, demo_specs
from prunestudio.store import open_store, queries


def test_demo_specs_are_the_engines_canonical_specs(tmp_path: Path) -> None:
    from prunestudio.engine.study.proposers import proposer_kinds

    from prunestudio.schema.spec import CandidateSpec  # full validation: the engine's catalog

    path = build_demo_store(tmp_path / "demo.db")
    specs = demo_specs()
    assert specs
    for spec in specs:
        validated = CandidateSpec(**spec)
        assert validated.canonical() == spec
    with open_store(path, readonly=True) as store:
        for study in queries.study_records(store):
            assert study.kind in proposer_kinds()
            for c in store.candidate_records(study.id):
                assert c.label == CandidateSpec(**c.spec).label
