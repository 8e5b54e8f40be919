"""Every page of the web app, run with streamlit.testing.v1.AppTest on stores written through
the store's write API: a grid study, a GP search, a structured grid, a random search, a study
with failed candidates, a study of an unknown kind, and an empty store."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_store import STUDIES
from app_testlib import Run, assert_clean, charts, frames, graphs, page_links, texts
from prunestudio.app import PAGE_SCRIPTS

# ids written by app_store.build_app_store (one study after the other)
GRID, GP, STRUCTURED, RANDOM, BROKEN, UNKNOWN = range(1, 7)
SPARSEGPT_50 = 7  # the grid's best in-domain ppl, 26.37
SPARSEGPT_24 = 9  # the grid's failure (Cholesky)
GP_BEST = 28  # mul(sqr(W),tanh(G)), search ppl 20.88 (a finalist)
STRUCTURED_FIRST = 32


# -- Studies --------------------------------------------------------------------------------


def test_studies_page_lists_every_study_with_best_values(run_app: Run) -> None:
    at = run_app()
    assert_clean(at)
    assert [t.value for t in at.title] == ["Studies"]
    assert {m.label: m.value for m in at.metric} == {
        "Studies": "6", "Running": "0", "Candidates": "54", "Failed candidates": "5"}
    table = frames(at)[0].set_index("study")
    assert list(table.index) == list(reversed(STUDIES))  # newest first
    grid = table.loc["baselines"]
    assert (grid["kind"], grid["status"], grid["done"]) == ("grid", "finished", "9/12")
    assert grid["best"] == pytest.approx(26.37) and grid["best metric"] == "ppl in"
    assert grid["best id"] == SPARSEGPT_50
    assert grid["accuracy"] == pytest.approx(0.40) and grid["accuracy metric"] == (
        "acc next-line·p")
    # summed candidate times: 6 × 9.4 s + 2 × 14.8 s recorded, the failure's 5 s of clock
    assert grid["compute"] == "1m31s"
    gp = table.loc["prunerzero-gp"]
    assert gp["best"] == pytest.approx(20.88) and gp["best metric"] == "ppl search·p"
    # a search is ranked by its search split; its held-out best is the finalists' in-domain ppl
    assert gp["held-out"] == pytest.approx(20.88 * 1.08)
    assert gp["held-out metric"] == "ppl in"
    assert gp["status"] == "stale"  # 'running' in the store, its heartbeat long gone
    assert table.loc["structured-grid", "status"] == "cancelled"
    assert table.loc["broken-grid", "failed"] == 3
    assert table.loc["anneal-search", "kind"] == "anneal"
    assert table.loc["baselines", "open"] == f"study?study={GRID}"
    links = page_links(at)
    assert ("baselines · grid · finished", "study", f"study={GRID}") in links


def test_studies_page_on_an_empty_store(run_app: Run, empty_db: Path) -> None:
    at = run_app(store=empty_db)
    assert_clean(at)
    assert "No studies in this store yet" in texts(at)
    assert not at.dataframe


def test_missing_store_is_an_error_on_the_page(run_app: Run, tmp_path: Path) -> None:
    at = run_app(store=tmp_path / "nope.db")
    assert not at.exception
    assert "Cannot open the store" in at.error[0].value and "nope.db" in at.error[0].value


def test_live_refresh_is_on_for_running_studies_and_off_with_live_0(run_app: Run,
                                                                     app_db: Path) -> None:
    live = run_app(live=None)  # nothing live in the store (the GP is stale): toggle off
    assert_clean(live)
    assert live.toggle(key="live").value is False
    forced = run_app(live="3")
    assert_clean(forced)
    assert forced.toggle(key="live").value is True  # ?live=3: on, every 3 s (a fragment)
    assert len(frames(forced)[0]) == 6
    assert run_app().toggle(key="live").value is False


# -- Study ----------------------------------------------------------------------------------


def test_grid_study_page(run_app: Run) -> None:
    at = run_app(study=str(GRID))
    assert_clean(at)
    assert at.title[0].value == "Study baselines"
    assert [t.label for t in at.tabs] == ["Progress", "Candidates", "Methods", "Timeline"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Candidates"] == "9" and metrics["Failed"] == "1"
    assert metrics["Best ppl in"] == "26.37"
    figs = charts(at)
    best = figs["best-so-far"]["data"]
    names = [t["name"] for t in best]
    assert names[:2] == ["best ppl in", "ppl in"] and "best ppl ood" in names
    # in-domain and out-of-domain best-so-far lines together; dense (a reference) excluded
    assert min(best[0]["y"]) == pytest.approx(26.37) and 15.02 not in best[1]["y"]
    scatter = figs["scatter"]["data"]
    # coloured by origin; the references (dense, baselines) drawn apart
    assert [t["name"] for t in scatter] == ["grid", "references"]
    assert sum(len(t["y"]) for t in scatter) == 8  # the failure has no value
    curves = {t["name"] for t in figs["methods-curves"]["data"]}
    assert {"wanda · unstructured", "wanda · 2:4", "sparsegpt · unstructured",
            "magnitude[matrix] · unstructured"} <= curves
    methods = next(f for f in frames(at) if "ppl in ×dense" in f.columns)
    assert list(methods["candidate"][:2]) == ["dense", "sparsegpt 50%"]
    assert list(methods["ppl in ×dense"][:2]) == [1.0, pytest.approx(26.37 / 15.02)]
    page = next(f for f in frames(at) if "candidate" in f.columns and "#" in f.columns)
    # sorted by the primary metric (the dense reference is shown, never "the best")
    assert list(page["candidate"][:2]) == ["dense (reference)", "sparsegpt 50%"]
    assert "Rows 1–9 of 9" in texts(at)
    assert any(b.label.startswith("Download CSV") for b in at.get("download_button"))
    assert ("Best candidate: id 7", "candidate", f"candidate={SPARSEGPT_50}") in page_links(at)


def test_gp_study_page_lineage_and_generations(run_app: Run) -> None:
    at = run_app(study=str(GP))
    assert_clean(at)
    assert [t.label for t in at.tabs] == ["Progress", "Candidates", "Lineage", "Generations",
                                          "Timeline"]
    figs = charts(at)
    best = figs["best-so-far"]["data"]
    assert best[0]["name"] == "best ppl search·p"  # the search split first
    held = [t for t in best if t["name"] == "ppl in"][0]
    assert len(held["y"]) == 3  # the three finalists' held-out figures, on the same axes
    assert min(best[0]["y"]) == pytest.approx(20.88)
    lineage = graphs(at)[0]
    assert f"c{GP_BEST} [label=\"#18 (id {GP_BEST}) · gen 2 · mutation" in lineage
    assert "mul(sqr(W),tanh(G))" in lineage and "penwidth=3" in lineage
    assert lineage.count(" -> ") >= 2  # parents → child edges
    gens = next(f for f in frames(at) if "generation" in f.columns and "origins" in f.columns)
    assert list(gens["generation"]) == [0, 1, 2]
    assert list(gens["candidates"]) == [8, 8, 4] and list(gens["failed"]) == [1, 0, 0]
    generations = figs["generations-chart"]["data"]
    assert generations[0]["type"] == "box"
    timeline = figs["timeline"]["data"]
    assert {t["name"] for t in timeline} == {"done", "failed", "running"}
    workers = {w for t in timeline for w in t["y"]}
    assert workers == {"gpu0", "gpu1"}
    # per worker, over every candidate (one GROUP BY): counts, busy time, devices
    summary = next(f for f in frames(at) if "busy %" in f.columns).set_index("worker")
    assert list(summary.index) == ["gpu0", "gpu1"]  # by first start: the baseline ran on gpu0
    assert summary["done"].sum() == 18 and summary["failed"].sum() == 1  # 20 + baseline
    assert summary.loc["gpu1", "running"] == 1 and summary.loc["gpu0", "running"] == 0
    assert summary.loc["gpu1", "device"] == "cuda:0 NVIDIA H200 30.0/140.0 GiB"
    assert 0 < summary.loc["gpu0", "busy %"] <= 100
    assert "2 workers ran this study's candidates" in texts(at)
    rows = next(f for f in frames(at) if "heartbeat age s" in f.columns).set_index("worker")
    assert rows.loc["gpu1", "host"] == "gpu-node2" and rows.loc["gpu1", "candidate"] == GP_BEST + 1
    assert rows.loc["gpu0", "device"].startswith("cuda:0 NVIDIA H200 2.0/140.0 GiB")
    assert rows["stale"].all()  # written long ago
    failures = next(f for f in frames(at) if "reason" in f.columns)
    assert failures.iloc[0]["reason"] == "NaN scores from exp(tanh(W)) in layer 3"
    assert any(label.startswith("First failure (1×)") for label, _, _ in page_links(at))


def test_structured_study_page(run_app: Run) -> None:
    at = run_app(study=str(STRUCTURED))
    assert_clean(at)
    assert [t.label for t in at.tabs] == ["Progress", "Candidates", "Structure", "Timeline"]
    assert "Cancel requested" not in texts(at)  # cancelled: no longer active
    figs = charts(at)
    heat = figs["structure-heatmap"]["data"][0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == 5 and len(heat["z"][0]) == 30
    pareto = figs["structure-pareto"]["data"]
    assert pareto[-1]["name"] == "Pareto front"


def test_random_and_unknown_kind_study_pages(run_app: Run) -> None:
    at = run_app(study=str(RANDOM))
    assert_clean(at)
    assert "Distribution" in [t.label for t in at.tabs]
    assert "1 of 10 candidates beat the baseline wanda 50% dense-calib (30.5)" in texts(at)
    unknown = run_app(study="anneal-search")  # by name; a kind no view registered
    assert_clean(unknown)
    assert unknown.title[0].value == "Study anneal-search"
    assert [t.label for t in unknown.tabs] == ["Progress", "Candidates", "Timeline"]
    assert {m.label: m.value for m in unknown.metric}["Best ppl in"] == "29"


def test_failed_study_page_shows_its_error_and_failure_reasons(run_app: Run) -> None:
    at = run_app(study=str(BROKEN))
    assert not at.exception
    assert [e.value for e in at.error] == ["Study error: 3 of 4 candidates failed; see their "
                                           "errors"]
    failures = next(f for f in frames(at) if "reason" in f.columns)
    assert list(failures["candidates"]) == [2, 1]
    assert failures.iloc[0]["reason"].startswith("RuntimeError: SparseGPT: Cholesky")
    assert failures.iloc[1]["reason"].startswith("OutOfMemoryError")


def test_study_filters_apply_to_charts_and_table(run_app: Run) -> None:
    at = run_app(study=str(GP))
    at.multiselect(key="f-origin").set_value(["mutation"]).run()
    assert_clean(at)
    page = next(f for f in frames(at) if "candidate" in f.columns and "#" in f.columns)
    assert set(page["origin"]) == {"mutation"} and len(page) == 6
    scatter = charts(at)["scatter"]["data"]
    assert [t["name"] for t in scatter] == ["mutation"] and len(scatter[0]["y"]) == 5
    at.multiselect(key="f-origin").set_value([]).run()
    at.slider(key="f-top").set_value(10).run()  # the best 10 % of 18 scored: 2 candidates
    page = next(f for f in frames(at) if "candidate" in f.columns and "#" in f.columns)
    assert len(page) == 2 and page.iloc[0]["id"] == GP_BEST
    assert "Rows 1–2 of 2" in texts(at)


def test_study_table_sort_columns_and_paging(run_app: Run) -> None:
    at = run_app(study=str(GP))
    at.selectbox(key="table-sort").set_value("idx").run()
    at.selectbox(key="table-size").set_value(50).run()
    page = next(f for f in frames(at) if "candidate" in f.columns and "#" in f.columns)
    assert list(page["#"]) == list(range(21))
    at.toggle(key="table-desc").set_value(True).run()
    at.multiselect(key="table-columns").set_value(["id", "candidate", "ppl in"]).run()
    assert_clean(at)
    page = next(f for f in frames(at) if "candidate" in f.columns and "ppl in" in f.columns)
    assert list(page.columns) == ["id", "candidate", "ppl in"]
    assert page.iloc[0]["id"] == 30
    assert page["ppl in"].notna().sum() == 4  # the three finalists and the Wanda baseline


def test_study_log_y_and_colour_by_generation(run_app: Run) -> None:
    at = run_app(study=str(GP))
    at.toggle(key="log-y").set_value(True).run()
    at.radio(key="color-by").set_value("generation").run()
    assert_clean(at)
    figs = charts(at)
    assert figs["scatter"]["layout"]["yaxis"]["type"] == "log"
    assert figs["best-so-far"]["layout"]["yaxis"]["type"] == "log"
    marker = figs["scatter"]["data"][0]["marker"]
    assert marker["colorscale"] and marker["showscale"] is True


def test_study_page_without_a_study_offers_a_choice_and_unknown_ids_are_errors(
        run_app: Run) -> None:
    at = run_app(page="study")
    assert_clean(at)
    assert at.selectbox(key="study-choice").options[:2] == ["baselines (grid, finished)",
                                                           "prunerzero-gp (gp, stale)"]
    at.selectbox(key="study-choice").set_value(str(GP)).run()
    assert at.title[0].value == "Study prunerzero-gp"
    missing = run_app(study="no-such-study")
    assert "No study 'no-such-study' in this store." in [e.value for e in missing.error]


# -- Candidate -----------------------------------------------------------------------------


def test_candidate_page_of_a_failed_candidate(run_app: Run, app_db: Path) -> None:
    at = run_app(candidate=str(SPARSEGPT_24))
    assert not at.exception
    assert at.title[0].value == f"Candidate {SPARSEGPT_24}"
    assert at.error[0].value.startswith("RuntimeError: SparseGPT: Cholesky")
    codes = [c.value for c in at.code]
    assert any("torch.linalg.cholesky(h)" in c for c in codes)  # the traceback
    assert f"prunestudio export {SPARSEGPT_24} exports/baselines-8 --store {app_db}" in codes
    assert "export refuses a failed candidate" in texts(at)
    assert ("Compare with dense", "compare", "compare=9%2C1") in page_links(at)


def test_candidate_page_of_a_symbolic_finalist(run_app: Run) -> None:
    at = run_app(candidate=str(GP_BEST))
    assert_clean(at)
    assert at.subheader[0].value == "symbolic mul(sqr(W),tanh(G)) 50% dense-calib"
    dot = graphs(at)[0]
    assert 'label="mul", shape=ellipse' in dot and 'label="W", shape=box' in dot
    assert any("├── sqr" in c.value for c in at.code)
    metrics = next(f for f in frames(at) if "protocol" in f.columns)
    assert list(metrics["metric"]) == ["ppl search·p", "ppl in", "ppl ood"]
    assert list(metrics["windows / examples"]) == [8, 32, 32]
    assert '"finalist_rank": 1' in metrics.iloc[1]["protocol"]
    parents = [label for label, page, _ in page_links(at) if label.startswith("id ")]
    assert parents and all("symbolic" in p for p in parents)


def test_candidate_page_of_a_structured_candidate_and_a_grid_one(run_app: Run) -> None:
    at = run_app(candidate=str(STRUCTURED_FIRST))
    assert_clean(at)
    heat = charts(at)["candidate-heatmap"]["data"][0]
    assert heat["y"] == ["attention target", "mlp target", "attention realised (kv group)",
                         "mlp realised (channel)"]
    assert len(heat["z"][0]) == 30 and heat["z"][0][0] == pytest.approx(0.05)
    grid = run_app(candidate="6")  # wanda 2:4: task accuracy with its lm-eval protocol
    assert_clean(grid)
    metrics = next(f for f in frames(grid) if "protocol" in f.columns).set_index("metric")
    assert metrics.loc["acc next-line·p", "lm-eval"] == "0.4.13"
    assert metrics.loc["acc next-line·p", "windows / examples"] == 100
    assert metrics.loc["acc next-line·p", "stderr"] == pytest.approx(0.049)
    assert metrics.loc["ppl in", "seqlen"] == 256


def test_candidate_page_chooser_and_unknown_id(run_app: Run) -> None:
    at = run_app(page="candidate")
    assert_clean(at)
    at.number_input(key="candidate-id").set_value(4).run()
    assert at.title[0].value == "Candidate 4"
    missing = run_app(candidate="999")
    assert [e.value for e in missing.error] == ["No candidate with id 999 in this store."]


# -- Compare --------------------------------------------------------------------------------


def test_compare_page_across_studies(run_app: Run) -> None:
    at = run_app(compare=f"4,{SPARSEGPT_50},6,{STRUCTURED_FIRST},{GP_BEST}")
    assert_clean(at)
    assert "5 candidates from 3 studies: baselines, structured-grid, prunerzero-gp" in texts(at)
    figs = charts(at)
    ppl = figs["compare-ppl"]["data"]
    names = [t["name"] for t in ppl]
    # the two studies' dense models join as references (the GP study has none)
    assert "id 1 · dense · baselines" in names and "id 31 · dense · structured-grid" in names
    dense = next(t for t in ppl if t["name"] == "id 1 · dense · baselines")
    assert dense["marker"]["color"] == "#9e9e9e" and dense["y"][0] == pytest.approx(15.02)
    acc = figs["compare-acc"]["data"]
    wanda = next(t for t in acc if t["name"] == "id 4 · wanda 50% · baselines")
    assert wanda["y"] == [pytest.approx(0.35), pytest.approx(0.35)]
    assert wanda["error_y"]["array"][0] == pytest.approx(0.0477)
    curves = {t["name"] for t in figs["compare-curves"]["data"]}
    assert "wanda · unstructured" in curves and "wanda · 2:4" in curves
    pareto = figs["compare-pareto"]["data"]
    assert pareto[-1]["name"] == "Pareto front"
    assert "sparsity" in pareto[0]["hovertemplate"]
    protocols = next(f for f in frames(at) if "protocol" in f.columns)
    assert {"lm-eval", "windows / examples", "seqlen", "fidelity", "dataset", "split"} <= set(
        protocols.columns)
    assert set(protocols["id"]) == {1, 4, 6, 7, 28, 31, 32}
    row = protocols[(protocols["id"] == GP_BEST) & (protocols["metric"] == "ppl search·p")]
    assert row.iloc[0]["seqlen"] == 128 and row.iloc[0]["fidelity"] == "proxy"


def test_compare_page_choices_and_every_candidate(run_app: Run) -> None:
    at = run_app(page="compare")
    assert_clean(at)
    assert "Choose candidates above" in texts(at)
    at.text_input(key="compare-ids").set_value("2, 3").run()
    at.multiselect(key="compare-studies").set_value([GRID]).run()
    at.multiselect(key=f"compare-{GRID}").set_value([SPARSEGPT_50]).run()
    at.button(key="compare-go").click().run()
    assert_clean(at)
    assert at.query_params["compare"] == f"2,3,{SPARSEGPT_50}"
    assert "3 candidates from 1 study: baselines" in texts(at)
    at.toggle(key="compare-every").set_value(True).run()
    assert_clean(at)
    curve = charts(at)["compare-curves"]["data"]
    assert sum(len(t["x"]) for t in curve) == 8  # every done candidate of the grid, dense too


# -- deep links -----------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "title"), [
    ({"candidate": str(GP_BEST)}, f"Candidate {GP_BEST}"),
    ({"study": "prunerzero-gp"}, "Study prunerzero-gp"),
    ({"compare": "1,2"}, "Compare"),
])
def test_root_url_deep_links_open_their_page(run_app: Run, query: dict[str, str],
                                             title: str) -> None:
    at = run_app(**query)
    assert_clean(at)
    assert at.title[0].value == title


def test_page_scripts_exist() -> None:
    from prunestudio.app import APP_DIR

    for script in PAGE_SCRIPTS.values():
        assert (APP_DIR / script).is_file()


def test_studies_without_candidates_or_metrics(run_app: Run, tmp_path: Path) -> None:
    from app_store import spec
    from prunestudio.store import open_store

    path = tmp_path / "fresh.db"
    with open_store(path) as store:
        store.create_study(name="fresh", kind="grid", model="m",
                           config={"evaluation": [{"role": "in_domain"}]})
        gp = store.create_study(name="pending-only", kind="gp", model="m", config={})
        store.set_study_status(gp, "running")
        store.add_candidate(gp, spec("wanda", 0.5), origin="random", generation=0)
    studies = run_app(store=path)
    assert_clean(studies)
    assert list(frames(studies)[0]["status"]) == ["stale", "created"]  # no runner beats
    fresh = run_app(store=path, study="fresh")
    assert_clean(fresh)
    assert "No candidates recorded yet." in texts(fresh)
    pending = run_app(store=path, study="pending-only")
    assert_clean(pending)
    assert "No fitness recorded yet." in texts(pending)
    assert "No candidate has started yet." in texts(pending)
