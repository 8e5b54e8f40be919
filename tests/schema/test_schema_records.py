"""The torch-free schema: one label, one metric identity, one primary role."""

from __future__ import annotations

import subprocess
import sys

from prunestudio.schema import (
    Candidate,
    MetricIdentity,
    Study,
    choose_primary,
    column_titles,
    default_store_path,
    spec_label,
)

UNSTRUCTURED = {"kind": "unstructured", "n": None, "m": None}
NM = {"kind": "nm", "n": 2, "m": 4}


def _spec(method: str, sparsity: float = 0.5, pattern: dict | None = None, *,
          calibration: str = "sequential", layer_ratios: str = "uniform", **options) -> dict:
    return {"method": method, "sparsity": sparsity, "pattern": pattern or UNSTRUCTURED,
            "layer_ratios": layer_ratios, "owl": None, "calibration": {"mode": calibration},
            "options": options}


def test_importing_the_schema_imports_no_torch_and_no_engine() -> None:
    code = ("import sys, prunestudio.schema; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', "
            "'numpy', 'pydantic', 'sqlite3', 'textual') or m.startswith('prunestudio.engine') "
            "or m.startswith('prunestudio.store') or m.startswith('prunestudio.tui')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_spec_labels() -> None:
    assert spec_label(_spec("wanda", 0.5, NM)) == "wanda 2:4"
    assert spec_label(_spec("sparsegpt", 0.6, layer_ratios="owl", blocksize=128)) == (
        "sparsegpt 60% owl")
    assert spec_label(_spec("magnitude", scope="row", ties="index")) == "magnitude[row] 50%"
    assert spec_label(_spec("magnitude", scope="matrix", ties="topk")) == (
        "magnitude[matrix][ties=topk] 50%")
    # a symbolic metric shows its expression (in show, the TUI and the web app alike)
    assert spec_label(_spec("symbolic", expression="mul(W,G)", scope="row")) == (
        "symbolic mul(W,G) 50%")
    assert spec_label(_spec("symbolic", expression="mul(W,G)", scope="matrix",
                            calibration="dense")) == "symbolic[matrix] mul(W,G) 50% dense-calib"
    assert spec_label(_spec("structured", 0.25, importance="l1", aggregation="sum",
                            ratio="groups", attention_unit="query_head")) == (
        "structured[l1/sum/query_head] 25% groups")
    assert spec_label(_spec("structured", 0.0, importance="taylor_mix", aggregation="sum",
                            attention_ratios=[0.1], mlp_ratios=[0.2], mlp=False)) == (
        "structured[taylor_mix/sum/attention-only] per-layer")
    assert spec_label({"method": "dense"}) == "dense" and spec_label(None) == "?"


def _cand(spec: dict, *, metrics=(), info=None, origin="grid", status="done",
          generation=None) -> Candidate:
    return Candidate.of({"id": 7, "study_id": 1, "idx": 3, "spec": spec, "spec_hash": "h",
                         "origin": origin, "status": status, "generation": generation,
                         "metrics": list(metrics), "info": info})


def _m(name: str, value: float, role: str | None = None, fidelity: str | None = "full",
       **kw) -> dict:
    return {"name": name, "value": value, "role": role, "fidelity": fidelity, **kw}


def test_candidate_label_adds_the_realised_structure_and_ignores_stale_text() -> None:
    spec = _spec("structured", 0.25, importance="l1", aggregation="sum", ratio="groups",
                 attention_unit="query_head")
    c = _cand(spec, info={"label": "old text", "structured": {
        "realised_label": "realised 0% query heads"}})
    assert c.label == "structured[l1/sum/query_head] 25% groups (realised 0% query heads)"
    # a label recorded by an older release (symbolic[row] 50%) does not win over the spec
    old = _cand(_spec("symbolic", expression="mul(W,G)", scope="row"),
                info={"label": "symbolic[row] 50%"})
    assert old.label == "symbolic mul(W,G) 50%"
    assert _cand({"no": "method"}, info={"label": "x"}).label == "x"


def test_candidate_metrics_by_identity_fitness_and_reference() -> None:
    metrics = [_m("ppl", 30.0, "search", "proxy", dataset="pydoc", split="all", seqlen=128),
               _m("ppl", 32.0, "in_domain", dataset="pydoc", split="all", seqlen=256),
               _m("acc", 0.4, "task", "proxy", dataset="arc_easy", n_samples=10),
               _m("acc", 0.5, "task", "full", dataset="arc_easy", n_samples=100),
               _m("sparsity", 0.5, "pruned_layers", None)]
    c = _cand(_spec("symbolic", expression="mul(W,G)", scope="row"), metrics=metrics,
              origin="mutation", generation=2)
    search = MetricIdentity("ppl", "search", "pydoc", "all", 128, "proxy")
    assert c.metric(search).value == 30.0 and c.fitness.value == 30.0
    assert c.metric(MetricIdentity("ppl", "search", "pydoc", "all", 256, "proxy")) is None
    assert c.ppl("in_domain").value == 32.0 and set(c.ppl_by_role) == {"search", "in_domain"}
    assert c.task_metrics[("arc_easy", "acc")].value == 0.5
    assert c.sparsity == 0.5 and c.is_search_candidate and not c.is_reference
    assert search.key == "ppl:pydoc:all:128:proxy:search" and search.title == "ppl search·p"
    assert _cand(_spec("dense", 0.0)).is_reference
    assert _cand(_spec("wanda"), origin="baseline").is_reference


def test_primary_role_of_a_search_is_its_fitness() -> None:
    evaluation = [{"role": "in_domain", "fidelity": "full", "windows": {}},
                  {"role": "out_of_domain", "fidelity": "full", "windows": {}}]
    row = {"id": 1, "name": "s", "model": "m", "status": "running",
           "config": {"evaluation": evaluation}}
    grid, gp = Study.of({**row, "kind": "grid"}), Study.of({**row, "kind": "gp"})
    assert grid.primary_role == grid.sort_role == "in_domain"
    assert gp.primary_role == "search" and gp.is_search
    assert gp.evaluation_roles == ("in_domain", "out_of_domain")
    search = MetricIdentity("ppl", "search", fidelity="proxy")
    ind = MetricIdentity("ppl", "in_domain", fidelity="full")
    sparsity = MetricIdentity("sparsity", "pruned_layers")
    assert gp.primary_metric([sparsity, ind, search]) == search
    assert grid.primary_metric([sparsity, search, ind]) == ind
    assert Study.of({**row, "kind": "grid", "config": {}}).primary_role is None


def _col(role: str | None, fidelity: str | None = "full", name: str = "ppl") -> MetricIdentity:
    m = {"name": name, "dataset": "d", "split": "s", "seqlen": 128, "fidelity": fidelity,
         "role": role}
    return MetricIdentity.of(m)


def test_choose_primary_prefers_in_domain_full_then_search() -> None:
    search, ind_proxy, ind_full, ood = (_col("search", "proxy"), _col("in_domain", "proxy"),
                                        _col("in_domain"), _col("out_of_domain"))
    assert choose_primary([search, ood, ind_full]) == ind_full
    assert choose_primary([ood, ind_proxy, search]) == search
    assert choose_primary([ood, ind_proxy]) == ind_proxy
    assert choose_primary([ood]) == ood
    assert choose_primary([_col("in_domain", name="acc")]) is None
    assert choose_primary([ind_full, ood], primary_role="out_of_domain") == ood
    assert choose_primary([ind_full, ood, search], primary_role="search") == search
    assert column_titles([search, ind_full, ood]) == ["ppl search·p", "ppl in", "ppl ood"]
    assert _col("x", name="acc").lower_is_better is False and ood.lower_is_better


def test_task_accuracy_columns_are_named_by_their_task() -> None:
    def task(name: str, dataset: str, fidelity: str = "proxy") -> MetricIdentity:
        return MetricIdentity.of({"name": name, "dataset": dataset, "fidelity": fidelity,
                                  "role": "task"})

    cols = [task("acc", "shakespeare_next_line"), task("acc_norm", "shakespeare_next_line"),
            task("acc", "arc_challenge", "full"), task("acc", "piqa", "full")]
    assert column_titles(cols) == ["acc next-line·p", "acc_norm next-line·p", "acc arc-c",
                                   "acc piqa"]
    assert not any(c.lower_is_better for c in cols)


def test_default_store_path(monkeypatch) -> None:
    monkeypatch.delenv("PRUNESTUDIO_STORE", raising=False)
    assert str(default_store_path()) == "prunestudio.db"
    monkeypatch.setenv("PRUNESTUDIO_STORE", "/x/y.db")
    assert str(default_store_path()) == "/x/y.db"


def test_search_part_roles_name_each_text_once():
    from prunestudio.schema import is_search_part, search_part_roles

    assert search_part_roles([("pydoc", "all"), ("shakespeare", "macbeth")]) == [
        "search_pydoc", "search_shakespeare"]
    assert search_part_roles([("shakespeare", "macbeth"), ("shakespeare", "king-lear")]) == [
        "search_shakespeare_macbeth", "search_shakespeare_king_lear"]
    assert search_part_roles([("pydoc", "all"), ("pydoc", "all")]) == [
        "search_pydoc_all_0", "search_pydoc_all_1"]
    assert is_search_part("search_pydoc") and not is_search_part("search")
    assert not is_search_part(None) and not is_search_part("in_domain")


def test_candidate_value_reads_full_fidelity_first_and_drops_non_finite() -> None:
    c = _cand(_spec("wanda", 0.5), metrics=[
        _m("ppl", 30.0, "in_domain", "proxy"), _m("ppl", 28.0, "in_domain", "full"),
        _m("calib_error", float("nan"), "reconstruction"), _m("ppl", 40.0, "ood", "proxy")])
    assert c.value("ppl", "in_domain") == 28.0
    assert c.value("ppl", "ood") == 40.0  # only a proxy: that one
    assert c.value("calib_error", "reconstruction") is None  # not finite
    assert c.value("ppl", "missing") is None
