"""`prunestudio bench --search` on a tiny model: the table's structure, the floor, and the
before / after zero patterns checked identical. No timing is asserted (shared CPUs)."""

from __future__ import annotations

import json

import pytest
from prunestudio.engine.bench_search import PATHS, SEARCH_PHASES, expressions
from prunestudio.engine.floor import BYTES_PER_WEIGHT, Machine, floor, workload

from prunestudio.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tiny_models import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("bench-search") / "llama")


def test_expressions_are_deterministic_seed_metrics_then_random_trees():
    a, b = expressions(), expressions()
    first = [next(a) for _ in range(12)]
    assert first == [next(b) for _ in range(12)]
    assert first[:4] == ["mul(W,sqrt(X))", "mul(sqr(W),mms(G))",
                         "add(mul(W,sqrt(X)),mul(W,G))", "W"]
    assert len(set(first)) == 12


def test_bench_search_json_has_every_phase_both_paths_and_the_floor(tiny_dir, capsys):
    code = main(["bench", "--search", "--model", str(tiny_dir), "--candidates", "3",
                 "--repeats", "2", "--eval-windows", "2", "--json"])
    assert code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mode"] == "search" and r["search_split"] == "pydoc 2×256 from 20000"
    assert len(r["candidates"]) == 3 and r["repeats"] == 2 and r["runs_per_path"] == 6
    for path in PATHS:
        row = r["rows"][path]
        assert set(row["phases_s"]) == set(SEARCH_PHASES)
        assert all(v >= 0 for ph, v in row["phases_s"].items() if ph != "other")
        assert row["total_s"] > 0 and row["ratio_to_floor"] > 0 and len(row["totals_s"]) == 6
    assert r["masks_identical"] is True and r["fitness_identical"] is True
    assert r["pairs_compared"] == 6
    m, w, fl = r["machine_measured"], r["workload"], r["floor"]
    assert m["matmul_gflops"] > 0 and m["bandwidth_gbs"] > 0 and m["threads"] >= 1
    assert w["tokens"] == 2 * 256 and w["eval_gflop"] > w["attention_gflop"] > 0
    assert fl["seconds"] == pytest.approx(fl["compute_s"] + fl["memory_s"])
    assert r["speedup"] > 0 and r["pair_speedup"]["min"] <= r["pair_speedup"]["max"]
    assert set(r["load_average"]) == {"before", "after", "cpus"}


def test_bench_search_table_names_phases_floor_ratio_and_mask_check(tiny_dir, capsys):
    assert main(["bench", "--search", "--model", str(tiny_dir), "--candidates", "2",
                 "--eval-windows", "1"]) == 0
    out = capsys.readouterr().out
    for phase in SEARCH_PHASES:
        assert f"│ {phase} " in out, out
    for text in ("before: sort", "after: select", "total: median", "floor", "ratio to floor",
                 "GFLOP/s measured matmul peak", "GB/s measured copy bandwidth",
                 "masks identical in both paths (zero-pattern hash, 2 pairs): True"):
        assert text in out, out


def test_bench_search_refuses_bad_counts(tiny_dir, capsys):
    assert main(["bench", "--search", "--model", str(tiny_dir), "--candidates", "0"]) != 0
    assert "--candidates and --repeats must be at least 1" in capsys.readouterr().err


def test_floor_accounting_of_a_tiny_model():
    from engine_testlib import make_lm

    lm = make_lm("llama", seed=0)  # 2 blocks, hidden 64, MLP 128, 4 heads × 16, vocab 256
    w = workload(lm, n_windows=2, seqlen=8, extra_leaves=1)
    prunable = 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 64 * 128)
    assert w.prunable_weights == prunable
    assert w.linear_flops == 2 * (prunable + 256 * 64) * 16
    assert w.attention_flops == 2 * 2 * (8 * 8 / 2) * 64 * 2 * 2
    assert w.bytes == prunable * (BYTES_PER_WEIGHT + 4)
    f = floor(w, Machine("cpu", "float32", 1, matmul_gflops=1.0, bandwidth_gbs=1.0))
    assert f.compute_s == pytest.approx(w.eval_flops / 1e9)
    assert f.memory_s == pytest.approx(w.bytes / 1e9)
