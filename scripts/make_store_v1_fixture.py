"""Write tests/store/fixtures/store-v1.sql: a plain SQL dump of a small store written by this
release's store API (schema version 1), for the test that every later release opens it
unchanged. Run once per schema version; never regenerate a shipped version's dump::

    python scripts/make_store_v1_fixture.py [OUT.sql]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tui"))
from demo_store import build_demo_store, fixed_clock, spec  # noqa: E402
from prunestudio.store import open_store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else ROOT / "tests" / "store" / "fixtures" / "store-v1.sql"
    with tempfile.TemporaryDirectory() as tmp:
        db = build_demo_store(Path(tmp) / "v1.db")  # grid, gp, structured grid, random
        with fixed_clock(start=1_767_300_000.0), open_store(db) as store:
            gp = store.study_record("prunerzero-gp").id
            # a mask-equivalent candidate (skipped, fitness reused) and an artifact
            done = next(c for c in store.candidate_records(gp) if c.status == "done")
            cid, _ = store.add_candidate(gp, spec("symbolic", 0.5, calibration="dense",
                                                  expression="mul(sqr(W),mms(abs(G)))"),
                                         origin="mutation", parents=[done.id], generation=2)
            keys = ("name", "value", "dataset", "split", "seqlen", "n_samples", "fidelity",
                    "role")
            store.add_metrics(cid, [{**{k: m.as_dict()[k] for k in keys}, "protocol": {
                **m.protocol, "reused_from": done.id}} for m in done.metrics
                if m.role == "search"])
            store.skip_candidate(cid, reason=f"mask-equivalent to candidate {done.id}",
                                 info={"equivalent_to": done.id, "equivalence": "rank_key"})
            store.add_artifact(done.id, kind="model", path="exports/prunerzero-gp-1",
                               hash="sha256:0f", bytes=123456)
        conn = sqlite3.connect(db)
        try:
            text = "\n".join(conn.iterdump()) + "\n"
        finally:
            conn.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"{out}: {len(text.splitlines())} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
