"""scripts/compare_reference.py without any reference checkout: the comparison helpers on
small tensors with known answers, the compatibility shims on a tiny LLaMA, and the refusals
(exit 2 with the reason) that come before a model is loaded.

Running the references themselves needs the user's clones of their code, which CI does not
have; that end-to-end run is the script's own job (see its docstring)."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "engine"))  # engine_testlib


def _load_script():
    spec = importlib.util.spec_from_file_location("compare_reference",
                                                  ROOT / "scripts" / "compare_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_reference"] = module
    spec.loader.exec_module(module)
    return module


cr = _load_script()


# ------------------------------------------------------------ helpers with known answers


def test_mask_agreement_counts_both_keep_and_both_prune() -> None:
    a = torch.tensor([[True, False, True, False]])
    b = torch.tensor([[True, True, False, False]])
    assert cr.mask_agreement(a, b) == 0.5  # positions 0 (both pruned) and 3 (both kept)
    assert cr.mask_agreement(a, a) == 1.0
    assert cr.mask_agreement(a, ~a) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        cr.mask_agreement(a, b.t())


def test_weight_difference_max_and_relative_frobenius() -> None:
    dense = torch.tensor([[3.0, 4.0]])  # ‖W‖_F = 5
    a = torch.tensor([[3.0, 0.0]])
    b = torch.tensor([[0.0, 4.0]])
    max_abs, rel = cr.weight_difference(a, b, dense)
    assert max_abs == 4.0
    assert rel == pytest.approx(1.0)  # ‖(3, −4)‖ / 5
    assert cr.weight_difference(a, a, dense) == (0.0, 0.0)


def test_sparsity_of_counts_exact_zeros() -> None:
    assert cr.sparsity_of(torch.tensor([[0.0, 1.0], [0.0, -0.0]])) == 0.75


def test_kept_indices_rows_and_columns() -> None:
    dense = torch.arange(20.0).reshape(5, 4)
    assert cr.kept_indices(dense, dense[[0, 2, 3]], 0) == [0, 2, 3]
    assert cr.kept_indices(dense, dense[:, [1, 3]], 1) == [1, 3]
    assert cr.kept_indices(dense, dense[:0], 0) == []
    assert cr.shrunk(dense, dense) == (None, [])
    assert cr.shrunk(dense, dense[:, [0, 1, 2]]) == (1, [0, 1, 2])


def test_kept_indices_refuses_altered_or_reordered_weights() -> None:
    dense = torch.arange(20.0).reshape(5, 4)
    altered = dense[[0, 2]].clone()
    altered[1, 0] += 1
    with pytest.raises(ValueError, match="not an ordered subset"):
        cr.kept_indices(dense, altered, 0)
    with pytest.raises(ValueError, match="not an ordered subset"):
        cr.kept_indices(dense, dense[[3, 1]], 0)
    with pytest.raises(ValueError, match="more than one dimension"):
        cr.shrunk(dense, dense[:2, :2])


def test_kept_indices_half_precision_and_repeated_rows() -> None:
    dense = torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 6.0]], dtype=torch.bfloat16)
    assert cr.kept_indices(dense, dense[[1, 2]], 0) == [0, 2]  # equal rows: either is right


def test_groups_of_and_unit_agreement() -> None:
    kept = list(range(0, 4)) + list(range(8, 12))  # units of 4 rows: 0 and 2 kept
    assert cr.groups_of(kept, 4, 4) == {1, 3}
    with pytest.raises(ValueError, match="kept in part"):
        cr.groups_of([0, 1, 2], 4, 2)
    assert cr.unit_agreement({1, 3}, {1, 3}, 4) == 1.0
    assert cr.unit_agreement({1}, {0}, 4) == 0.5  # units 0 and 1 differ, 2 and 3 agree
    assert cr.unit_agreement(set(), set(), 0) == 1.0


def test_summaries_weight_by_layer_size() -> None:
    rows = [{"layer": "a", "block": 0, "numel": 100, "agreement": 1.0, "sparsity_ref": 0.5,
             "sparsity_ours": 0.5, "max_abs_dw": 0.0},
            {"layer": "b", "block": 0, "numel": 300, "agreement": 0.9, "sparsity_ref": 0.6,
             "sparsity_ours": 0.4, "max_abs_dw": 0.25},
            {"layer": "c", "block": 1, "numel": 100, "agreement": 0.8, "sparsity_ref": 0.5,
             "sparsity_ours": 0.5, "max_abs_dw": 0.5}]
    s = cr.summarise_layers(rows)
    assert s["agreement_mean"] == pytest.approx(0.9)
    assert (s["agreement_min"], s["agreement_min_layer"]) == (0.8, "c")
    assert s["agreement_all_weights"] == pytest.approx((100 + 270 + 80) / 500)
    assert s["max_abs_dw"] == 0.5 and not s["identical_masks"]
    blocks = cr.per_block(rows)
    assert [b["block"] for b in blocks] == [0, 1]
    assert blocks[0]["agreement"] == pytest.approx(0.925)
    assert blocks[0]["sparsity_ref"] == pytest.approx(0.575)


def test_markdown_table_aligns_columns() -> None:
    text = cr.markdown_table(["layer", "x"], [["a", 0.5], ["bbb", None]])
    lines = text.splitlines()
    assert lines[0] == "| layer | x      |"
    assert lines[2] == "| a     | 0.5000 |"
    assert lines[3] == "| bbb   |      — |"
    assert len({len(line) for line in lines}) == 1


def test_parse_pattern() -> None:
    assert cr.parse_pattern("unstructured") is None
    assert cr.parse_pattern("2:4") == (2, 4)
    for bad in ("4:2", "2-4", "x"):
        with pytest.raises(cr.Refusal, match="not valid"):
            cr.parse_pattern(bad)


# ------------------------------------------------------------ checkouts and failures


def test_checkout_commit_reads_git_without_running_it(tmp_path: Path) -> None:
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    assert cr.checkout_commit(tmp_path) == "a" * 40
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs\n{'b' * 40} refs/heads/main\n")
    assert cr.checkout_commit(tmp_path) == "b" * 40
    (git / "HEAD").write_text("c" * 40)
    assert cr.checkout_commit(tmp_path) == "c" * 40
    assert cr.checkout_commit(tmp_path / "missing") is None


def test_reference_failure_names_the_reference_frame(tmp_path: Path) -> None:
    src = tmp_path / "lib" / "failing.py"
    src.parent.mkdir()
    src.write_text("def prune():\n    raise KeyError('model.layers.0')\n")
    namespace: dict = {}
    exec(compile(src.read_text(), str(src), "exec"), namespace)
    try:
        namespace["prune"]()
    except KeyError as exc:
        refusal = cr.reference_failure(exc, tmp_path.resolve(), "OWL (luuyin/OWL)",
                                       "line 1\nline 2\n", hint=". A hint")
    text = str(refusal)
    assert text.startswith("OWL (luuyin/OWL) could not run on this installation: KeyError")
    assert "at lib/failing.py:2 in prune" in text
    assert ". A hint; its last output:\nline 1\nline 2" in text


# ------------------------------------------------------------ shims, on a tiny LLaMA


@pytest.fixture(scope="module")
def tiny():
    from engine_testlib import make_lm

    return make_lm("llama", layers=2)


def test_legacy_layer_calls_match_the_models_own_call(tiny) -> None:
    model = tiny.model
    layer = model.model.layers[0]
    x = torch.randn(1, 6, model.config.hidden_size)
    pos = torch.arange(6).unsqueeze(0)
    with torch.no_grad():
        expected = layer(x, position_ids=pos,
                         position_embeddings=model.model.rotary_emb(x, pos))
        shims = cr.ShimLog()
        with cr.legacy_layer_calls(model, shims) as count:
            got = layer(x, attention_mask=None, position_ids=pos)  # as the references call
            no_ids = layer(x)
            with pytest.raises(RuntimeError, match="batch element 0"):
                layer(torch.randn(2, 6, model.config.hidden_size), position_ids=pos)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(no_ids, expected)
    assert count["calls"] == 2 and "position_embeddings" in shims
    assert "forward" not in layer.__dict__  # the class's forward again


def test_legacy_model_sets_and_removes_attributes(tiny) -> None:
    model = copy.deepcopy(tiny.model)
    shims = cr.ShimLog()
    with cr.legacy_model(model, 128, shims):
        assert model.seqlen == 128 and model.hf_device_map == {}
    assert not hasattr(model, "seqlen") and not hasattr(model, "hf_device_map")
    assert set(shims) == {"model.seqlen", "hf_device_map"}


def test_import_shims_are_undone() -> None:
    import transformers

    had = "AdamW" in vars(transformers)
    missing = importlib.util.find_spec("matplotlib") is None
    shims = cr.ShimLog()
    with cr.import_shims(shims, ("matplotlib",), adamw=True):
        from transformers import AdamW  # noqa: F401 — what GBLM-Pruner's files do

        if missing:
            import matplotlib.pyplot  # noqa: F401
    assert ("AdamW" in vars(transformers)) == had
    if missing:
        assert "matplotlib" not in sys.modules and "matplotlib" in shims
    if not had:
        assert "transformers.AdamW" in shims


def test_locals_on_return_and_patched() -> None:
    def f(x):
        ratio = [x, 2 * x]
        return len(ratio)

    with cr.locals_on_return(f, ("ratio",)) as seen:
        f(3)
    assert seen == {"ratio": [3, 6]}
    holder = type("Holder", (), {})()
    holder.value = 1
    with cr.patched(holder, "value", 2):
        assert holder.value == 2
    assert holder.value == 1
    with cr.patched(os, "prunestudio_test_attribute", 1):
        assert os.prunestudio_test_attribute == 1
    assert not hasattr(os, "prunestudio_test_attribute")


# ------------------------------------------------------------ comparing pruned models


def test_compare_unstructured_on_known_masks(tiny) -> None:
    lin = tiny.adapter.all_prunable_linears(tiny.model)[0]
    ref, ours = copy.deepcopy(tiny.model), copy.deepcopy(tiny.model)
    w_ref = ref.get_submodule(lin.name).weight.data
    w_ours = ours.get_submodule(lin.name).weight.data
    w_ref[:, :32] = 0  # half of the 64 columns each, overlapping in 16
    w_ours[:, 16:48] = 0
    rows = cr.compare_unstructured(tiny, ref, ours)
    first = rows[0]
    assert first["layer"] == lin.name
    assert (first["sparsity_ref"], first["sparsity_ours"]) == (0.5, 0.5)
    assert first["agreement"] == pytest.approx(0.5)  # 16 columns both prune, 16 both keep
    differing = torch.cat([lin.weight[:, :16], lin.weight[:, 32:48]], dim=1)
    assert first["max_abs_dw"] == pytest.approx(float(differing.abs().max()))
    assert all(r["agreement"] == 1.0 and r["max_abs_dw"] == 0.0 for r in rows[1:])


def _drop_rows(linear: torch.nn.Linear, rows: list[int], dim: int = 0) -> None:
    keep = [i for i in range(linear.weight.shape[dim]) if i not in rows]
    linear.weight = torch.nn.Parameter(linear.weight.data.index_select(
        dim, torch.tensor(keep)))


def test_compare_structured_reads_units_and_flags_gqa_re_pairing(tiny) -> None:
    # tiny LLaMA: 4 query heads over 2 KV heads of 16; query heads 2, 3 read KV head 1
    ours = copy.deepcopy(tiny.model)
    ref = copy.deepcopy(tiny.model)
    a = ours.model.layers[1].self_attn
    _drop_rows(a.k_proj, list(range(16, 32)))
    _drop_rows(a.v_proj, list(range(16, 32)))
    _drop_rows(a.q_proj, list(range(32, 64)))  # query heads 2, 3
    _drop_rows(a.o_proj, list(range(32, 64)), dim=1)
    r = ref.model.layers[1].self_attn  # KV group 1 with query head 1 (LLM-Pruner on GQA)
    _drop_rows(r.k_proj, list(range(16, 32)))
    _drop_rows(r.v_proj, list(range(16, 32)))
    _drop_rows(r.q_proj, list(range(16, 32)))
    _drop_rows(r.o_proj, list(range(16, 32)), dim=1)
    for model in (ref, ours):
        m = model.model.layers[0].mlp
        _drop_rows(m.gate_proj, [0, 5])
        _drop_rows(m.up_proj, [0, 5])
        _drop_rows(m.down_proj, [0, 5], dim=1)
    rows, notes = cr.compare_structured(tiny, ref, ours)
    b0, b1 = rows
    assert b0["mlp_removed_ref"] == b0["mlp_removed_ours"] == [0, 5]
    assert b0["mlp_agreement"] == 1.0 and b0["kv_removed_ref"] == []
    assert (b1["kv_removed_ref"], b1["kv_removed_ours"], b1["kv_agreement"]) == ([1], [1], 1.0)
    assert (b1["heads_removed_ref"], b1["heads_removed_ours"]) == ([1], [2, 3])
    assert b1["heads_agreement"] == 0.25  # head 0 kept by both; 1, 2, 3 differ
    assert b1["max_abs_dw_kept"] == 0.0 and b1["params_ref"] > b1["params_ours"]
    assert len(notes) == 1 and notes[0].startswith("ref block 1: removed KV group(s) [1] but "
                                                   "query head(s) [1]")
    summary = cr.summarise_blocks(rows, {"dense": 100, "ref": 90, "ours": 80})
    assert not summary["identical_structure"]
    assert summary["param_ratio_ours"] == pytest.approx(0.2)


def test_compare_structured_notes_uncoupled_layers(tiny) -> None:
    ref, ours = copy.deepcopy(tiny.model), copy.deepcopy(tiny.model)
    _drop_rows(ref.model.layers[0].mlp.gate_proj, [3])  # up / down left whole
    rows, notes = cr.compare_structured(tiny, ref, ours)
    assert notes and "ref block 0: mlp.up_proj removed mlp [], its coupled layers [3]" in notes[0]


# ------------------------------------------------------------ refusals: exit 2, the reason


def _refused(capsys, *argv: str) -> str:
    assert cr.main(list(argv)) == 2
    return capsys.readouterr().err


def test_unknown_method_lists_the_allowed(capsys, tmp_path: Path) -> None:
    err = _refused(capsys, "wanda", "--reference", str(tmp_path))
    assert "unknown METHOD 'wanda'; allowed: owl, gblm, llm_pruner" in err


@pytest.mark.parametrize(("method", "expected"), [
    ("owl", "lib/prune_all.py"), ("gblm", "lib/prune.py"), ("llm_pruner", "llama3.py")])
def test_a_folder_that_is_not_the_checkout_names_the_expected_file(
        capsys, tmp_path: Path, method: str, expected: str) -> None:
    err = _refused(capsys, method, "--reference", str(tmp_path))
    assert f"is not a checkout of {cr.CHECKOUTS[method].title}: expected the file {expected}" \
        in err


def test_a_missing_folder_and_a_file_without_the_function(capsys, tmp_path: Path) -> None:
    err = _refused(capsys, "owl", "--reference", str(tmp_path / "nope"))
    assert "is not a directory" in err
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "prune_all.py").write_text("# an unrelated file\n")
    err = _refused(capsys, "owl", "--reference", str(tmp_path))
    assert "lib/prune_all.py has no `def prune_wanda_outlier`" in err


def _checkout(root: Path, method: str) -> Path:
    """Empty files with the definitions' names only: enough for the pre-load checks, which
    refuse before anything of the folder is imported."""
    for rel, needle in cr.CHECKOUTS[method].files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {needle}\n")
    return root


@pytest.mark.parametrize(("argv", "expected"), [
    (["owl", "--pattern", "2:4"], "OWL's layer ratios apply to unstructured sparsity"),
    (["llm_pruner", "--pattern", "2:4"], "LLM-Pruner removes whole heads and channels"),
    (["gblm", "--pattern", "3:8"], "allows unstructured, 2:4 and 4:8"),
    (["gblm", "--pattern", "2:4", "--sparsity", "0.6"], "fixes sparsity at 0.5"),
    (["owl", "--sparsity", "1.5"], "--sparsity must lie in (0, 1)"),
    (["owl", "--calib-n", "200"], "at most 128 calibration samples"),
])
def test_settings_the_reference_does_not_have(capsys, tmp_path: Path, argv: list[str],
                                              expected: str) -> None:
    root = _checkout(tmp_path, argv[0])
    err = _refused(capsys, argv[0], "--reference", str(root), *argv[1:])
    assert expected in err
