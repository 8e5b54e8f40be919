"""Searches through the console script: `run` with a GP config, resume after SIGKILL without
re-evaluating anything recorded (and with the same proposals as an uninterrupted run), `show`,
`prune --metric` / `--metric-from`, and clear errors for bad input."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from cli_testlib import cli as _cli
from cli_testlib import cli_error as _error
from cli_testlib import start_until, statuses
from prunestudio.store import open_store
from tiny_models import tiny_gp_toml as gp_toml


def _record(cands: list[dict]) -> list[tuple]:
    return [(c["spec_hash"], c["origin"], c["parents"], c["generation"], c["status"])
            for c in cands]


def test_sigkill_mid_search_then_resume_reevaluates_nothing(tmp_path, tiny_model_dirs):
    # a long search split makes each candidate take long enough to be killed inside one
    cfg = tmp_path / "gp.toml"
    cfg.write_text(gp_toml(tiny_model_dirs["llama"], split_n=40, budget=10, name="victim"))
    db = tmp_path / "s.db"
    proc = start_until(
        ["run", str(cfg), "--store", str(db), "--quiet"], db,
        lambda rows: sum(s in ("done", "skipped") for s in statuses(rows)) >= 4
        and "running" in statuses(rows), what="its fifth candidate")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_store(db, readonly=True) as store:
        before = store.candidates(1, with_metrics=True)
    assert sum(c["status"] == "running" for c in before) == 1, "killed inside a candidate"
    finished = {c["id"]: c for c in before if c["status"] in ("done", "skipped", "failed")}

    out = json.loads(_cli("run", "--resume", "victim", "--store", str(db), "--json",
                          "--quiet").stdout)
    after = {c["id"]: c for c in out["candidates"]}
    assert out["study"]["status"] == "finished"
    with open_store(db, readonly=True) as store:
        rows = {r["id"]: r for r in store.db.query("SELECT id, finished_at FROM candidates")}
    for cid, c in finished.items():  # recorded work kept as it was, never evaluated again
        assert after[cid]["status"] == c["status"]
        # every metric recorded before the kill is still there, unchanged (finalists gain
        # held-out metrics afterwards)
        assert [m for m in after[cid]["metrics"] if m["id"] in {x["id"] for x in c["metrics"]}
                ] == c["metrics"]
        assert rows[cid]["finished_at"] == c["finished_at"]
    assert len({c["spec_hash"] for c in after.values()}) == len(after)
    assert sum(c["status"] == "done" and not (c["info"] or {}).get("equivalent_to")
               for c in after.values() if c["origin"] != "baseline") <= 10

    # the same search uninterrupted makes the same proposals, in the same order
    ref_cfg = tmp_path / "ref.toml"
    ref_cfg.write_text(cfg.read_text().replace('name = "victim"', 'name = "reference"'))
    ref = json.loads(_cli("run", str(ref_cfg), "--store", str(tmp_path / "ref.db"), "--json",
                          "--quiet").stdout)
    assert _record(ref["candidates"]) == _record(out["candidates"])
    events = [e["message"] for e in store_events(db)]
    assert any(e.startswith("resumed by ") and ": 1 interrupted candidate(s) (" in e
               for e in events)


def store_events(db: Path) -> list[dict]:
    with open_store(db, readonly=True) as store:
        return list(store.db.query("SELECT message FROM events ORDER BY id"))


def test_run_gp_config_show_and_apply_the_best_metric(tmp_path, tiny_model_dirs):
    cfg = tmp_path / "gp.toml"
    cfg.write_text(gp_toml(tiny_model_dirs["llama"], extra='baselines = ["wanda"]'))
    db = str(tmp_path / "s.db")
    result = json.loads(_cli("run", str(cfg), "--store", db, "--json", "--quiet").stdout)
    assert result["study"]["kind"] == "gp" and result["study"]["status"] == "finished"
    summary = result["search"]
    assert summary["evaluated"] <= 8 and summary["best"]["expression"]
    assert summary["reused"] >= 1, "the Wanda seed reuses the Wanda baseline's fitness"
    assert len(summary["finalists"]) == 2

    table = _cli("show", "gp", "--store", db).stdout
    for fragment in ("gp search", "search PPL", "in_domain PPL", "held-out", "origin",
                     "expression", "evaluations saved", "best: ", "reused"):
        assert fragment in table, table

    best = summary["best"]["expression"]
    applied = _cli("prune", "--model", str(tiny_model_dirs["gpt2"]), "--metric-from", "gp",
                   "--sparsities", "0.6", "--calib", "source=pydoc,n=4,seqlen=32",
                   "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
                   "--name", "applied", "--store", db, "--json", "--quiet")
    assert f"--metric-from gp: {best}" in applied.stderr
    cands = json.loads(applied.stdout)["candidates"]
    assert [c["spec"]["method"] for c in cands] == ["dense", "symbolic"]
    spec = cands[1]["spec"]
    assert (spec["options"]["expression"], spec["sparsity"], spec["calibration"]["mode"]) == (
        best, 0.6, "sequential")
    assert cands[1]["status"] == "done"
    sparsity = next(m for m in cands[1]["metrics"] if m["name"] == "sparsity")
    assert abs(sparsity["value"] - 0.6) < 0.01  # per-row rounding on 64-wide rows


def test_prune_metric_expression(tmp_path, tiny_model_dirs):
    out = _cli("prune", "--model", str(tiny_model_dirs["llama"]),
               "--metric", "mul(sqr(W), MMS(G))", "--metric", "mul(W,sqrt(X))",
               "--methods", "wanda", "--patterns", "unstructured,2:4",
               "--calib", "source=pydoc,n=4,seqlen=32",
               "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
               "--store", str(tmp_path / "s.db"), "--json", "--quiet").stdout
    cands = json.loads(out)["candidates"]
    assert {c["status"] for c in cands} == {"done"}
    symbolic = {(c["spec"]["options"]["expression"], c["spec"]["pattern"]["kind"]): c
                for c in cands if c["spec"]["method"] == "symbolic"}
    assert set(symbolic) == {(e, k) for e in ("mul(sqr(W),mms(G))", "mul(W,sqrt(X))")
                             for k in ("unstructured", "nm")}
    wanda = {c["spec"]["pattern"]["kind"]: c for c in cands if c["spec"]["method"] == "wanda"}

    def ppl(c):
        return next(m["value"] for m in c["metrics"] if m["name"] == "ppl")

    for kind in ("unstructured", "nm"):  # Wanda written as an expression is Wanda
        assert ppl(symbolic[("mul(W,sqrt(X))", kind)]) == ppl(wanda[kind])


def _main_error(capsys, *args: str) -> str:
    """The console script's entry point in-process (no interpreter start-up): exit 2 and a
    message, never a traceback."""
    from prunestudio.cli import main

    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("expression", "fragments"), [
    ("mul(W,", ["--metric 'mul(W,'", "at position 6", "expected a leaf or an op name"]),
    ("mull(W,X)", ["unknown name 'mull'", "binary ops add, sub, mul, div"]),
    ("sqrt(W,X)", ["'sqrt' takes 1 argument(s), got 2"]),
    ("", ["empty expression"]),
])
def test_prune_malformed_metric_exits_2_with_the_parser_message(tmp_path, tiny_model_dirs,
                                                                 capsys, expression, fragments):
    err = _main_error(capsys, "prune", "--model", str(tiny_model_dirs["llama"]), "--metric",
                      expression, "--store", str(tmp_path / "s.db"), "--quiet")
    assert err.startswith("prunestudio prune: error: --metric")
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "s.db").exists(), "refused before any study is recorded"


def test_malformed_metric_through_the_console_script(tmp_path):
    err = _error("prune", "--metric", "mul(W,", "--store", str(tmp_path / "s.db"))
    assert "--metric 'mul(W,': at position 6" in err


def test_bad_search_input_gets_a_clear_error(tmp_path, tiny_model_dirs, capsys):
    cfg = tmp_path / "bad.toml"
    db = str(tmp_path / "s.db")
    for old, new, fragment in (
        ("population = 6", "population = 1", "search.population"),
        ("top_k = 4", "topk = 4", "search.topk: unknown key"),
        ('kind = "gp"', 'kind = "genetic"', "study.kind"),
        ('seed_metrics = ["wanda"]', 'seed_metrics = ["wandaa"]', "search.seed_metrics"),
    ):
        cfg.write_text(gp_toml(tiny_model_dirs["llama"]).replace(old, new))
        assert fragment in _main_error(capsys, "run", str(cfg), "--store", db)
    from prunestudio.cli import main

    assert main(["prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "magnitude",
                 "--no-dense", "--calib", "source=pydoc,n=4,seqlen=32",
                 "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
                 "--name", "grid-only", "--store", db, "--quiet"]) == 0
    err = _main_error(capsys, "prune", "--metric-from", "grid-only", "--store", db)
    assert "no evaluated symbolic metric" in err
    assert "no study 'nowhere'" in _main_error(capsys, "prune", "--metric-from", "nowhere",
                                               "--store", db)
