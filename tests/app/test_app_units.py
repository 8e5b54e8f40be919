"""The web app's pure parts: expression trees, display helpers, Pareto fronts, selection
events, the study-view registry, and the rule that the app imports no torch nor engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pandas as pd
from prunestudio.app import charts, display, exprtree
from prunestudio.app.views import ANY_KIND, StudyView, all_views, kind_views


def test_expression_tree_dot() -> None:
    assert exprtree.render_tree("mul(sqr(W), mms(G))") == (
        "mul\n├── sqr\n│   └── W\n└── mms\n    └── G")
    dot = exprtree.expression_dot("add(W,1.5)")
    assert 'label="add", shape=ellipse' in dot and 'label="1.5", shape=box' in dot
    assert dot.count(" -> ") == 2
    for bad in ("mul(W,", "mul(W G)", "", "W)"):
        assert "not a tree" in exprtree.expression_dot(bad)


def test_display_helpers() -> None:
    assert [display.value_text(v) for v in (26.374, 1157.2, 0.35, 1.02e8, None)] == [
        "26.37", "1157", "0.3500", "1.02e+08", ""]
    assert [display.duration(s) for s in (42, 185, 7620, 97200, None)] == [
        "42s", "3m05s", "2h07m", "1d03h", ""]
    assert display.export_command(7, "my study", 6, "runs/s.db") == (
        "prunestudio export 7 'exports/my study-6' --store runs/s.db")
    spec = {"method": "wanda", "sparsity": 0.5, "pattern": {"kind": "nm", "n": 2, "m": 4},
            "layer_ratios": "owl", "options": {}}
    assert display.pattern_label(spec) == "2:4+owl"
    assert display.method_label({"method": "magnitude", "options": {"scope": "row"}}) == (
        "magnitude[row]")
    rows = display.layer_ratio_rows(
        {"options": {"attention_ratios": [0.1, 0.2], "mlp_ratios": None}},
        {"structured": {"layers": [{}, {}, {}], "realised": {"mlp": {
            "enabled": True, "unit": "channel", "blocks": [1, 2],
            "realised_per_block": [0.5, 0.25]}}}, "block_ratios": [0.4, 0.5, 0.6]})
    assert rows == {"attention target": [0.1, 0.2], "mlp realised (channel)": [None, 0.5, 0.25],
                    "block sparsity (owl)": [0.4, 0.5, 0.6]}


def test_pareto_front_and_selection_events() -> None:
    x, y = [1.0, 2.0, 3.0, 2.5, 0.5], [9.0, 5.0, 4.0, 6.0, 12.0]
    assert charts.pareto_front(x, y) == [4, 0, 1, 2]
    event = {"selection": {"points": [{"customdata": [12, "done"]}, {"customdata": 5},
                                      {"customdata": [12]}, {"x": 1}]}}
    assert charts.selected_ids(event) == [12, 5]
    assert charts.selected_ids(None) == [] and charts.selected_ids({"selection": {}}) == []


def test_best_so_far_ignores_references_and_failures() -> None:
    df = pd.DataFrame({"id": [1, 2, 3, 4], "idx": [0, 1, 2, 3], "label": list("abcd"),
                       "status": ["done", "done", "failed", "done"],
                       "reference": [True, False, False, False],
                       "k": [1.0, 5.0, float("nan"), 3.0]})
    line = charts.best_so_far(df, [("k", "ppl")]).data[0]
    assert list(line.y) == [5.0, 3.0] and list(line.x) == [1, 3]


def test_view_registry_has_generic_and_kind_views() -> None:
    views = all_views()
    assert {"progress", "candidates", "timeline", "lineage", "generations", "distribution",
            "methods", "structure"} <= set(views)
    assert [v.name for v in kind_views("gp")] == ["progress", "candidates", "lineage",
                                                  "generations", "timeline"]
    # a kind nobody registered still gets the generic views; a registered kind adds its own
    assert [v.name for v in kind_views("anneal")] == ["progress", "candidates", "timeline"]
    assert [v.name for v in kind_views("predictor")] == ["progress", "candidates", "predictor",
                                                         "timeline"]
    assert all(ANY_KIND in views[n].kinds for n in ("progress", "candidates", "timeline"))
    assert issubclass(type(views["lineage"]), StudyView)


def test_the_app_imports_no_torch_and_no_engine() -> None:
    code = textwrap.dedent("""
        import sys
        import prunestudio.app
        from prunestudio.app import (charts, comparison, data, display, exprtree, nav,
                                     tables, views)
        from prunestudio.app.views import all_views
        from prunestudio.app.ui import candidate, compare, study, studies
        import prunestudio.commands.web
        all_views()
        heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")
                       or m.startswith("prunestudio.engine") or m == "transformers")
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_worker_tables() -> None:
    from prunestudio.app.tables import worker_summary_table, workers_table

    from prunestudio.schema import Worker, WorkerLane, WorkerSummary, WorkerTimeline

    gpu = {"device": "cuda:1", "gpu": "NVIDIA H200", "memory_total": 140 * 2**30,
           "memory_used": 7 * 2**30, "threads": 8, "node": "10.0.0.2", "role": "ray actor"}
    rows = [Worker("w1@n2:7", heartbeat=95.0, study_id=1, candidate_id=12, host="n2", pid=7,
                   stale=False, device=gpu), Worker("n1:3", heartbeat=40.0, study_id=1,
                                                    host="n1", pid=3, stale=True)]
    span = WorkerTimeline(0.0, 100.0, 1, (WorkerLane("w1@n2:7", ({"done": 60.0},)),))
    summary = worker_summary_table([WorkerSummary("w1@n2:7", done=3, busy_s=60.0, timed=3,
                                                  first_start=0.0, last_finish=100.0)],
                                   span, rows)
    first = summary.iloc[0]
    assert first["device"] == "cuda:1 NVIDIA H200 7.0/140.0 GiB"
    assert (first["busy"], first["busy %"], first["s / candidate"]) == ("1m00s", 60.0, 20.0)
    table = workers_table(rows, now=100.0)
    assert list(table["heartbeat age s"]) == [5.0, 60.0] and list(table["stale"]) == [
        False, True]
    assert table["candidate"].iloc[0] == 12 and pd.isna(table["candidate"].iloc[1])
    assert table["device"].iloc[1] == ""  # a row written without its device
    assert list(workers_table([], 0.0).columns)[:3] == ["worker", "device", "host"]
