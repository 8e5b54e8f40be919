"""Mask selection: the linear-time path ("select") against a slow Python reference and against
the previous full-sort path ("sort"), which must give identical masks — ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_testlib import linear_modules, make_lm, random_ids
from prunestudio.engine import masks
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.masks import (
    SELECTIONS,
    NonFiniteScoreError,
    apply_mask_,
    check_finite,
    current_selection,
    lowest_mask,
    mask_n_m,
    mask_per_matrix,
    mask_per_row,
    use_selection,
)
from prunestudio.engine.phases import lap, phase_clock, restart_clock
from prunestudio.engine.pruning import WeightSnapshot, prune_model

from prunestudio.schema.spec import CandidateSpec, Pattern


def slow_lowest(values: list[float], k: int) -> list[bool]:
    """The k lowest of one group, equal values lowest index first (Python's sort is stable)."""
    order = sorted(range(len(values)), key=lambda j: values[j])
    chosen = set(order[:k])
    return [j in chosen for j in range(len(values))]


def slow_per_row(score: torch.Tensor, k: int) -> torch.Tensor:
    return torch.tensor([slow_lowest(row, k) for row in score.tolist()], dtype=torch.bool)


def slow_n_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows = []
    for row in score.tolist():
        out = []
        for g in range(0, len(row), m):
            out += slow_lowest(row[g:g + m], n)
        rows.append(out)
    return torch.tensor(rows, dtype=torch.bool)


def _scores(kind: str, shape=(7, 24), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(shape, generator=g)
    if kind == "quantized":  # 4 levels: ties everywhere, straddling every threshold
        return torch.randint(0, 4, shape, generator=g).float() / 4
    if kind == "all_equal":
        return torch.full(shape, 0.5)
    if kind == "signed_zeros":  # -0.0 == +0.0: a tie, broken by index
        s = torch.randint(0, 2, shape, generator=g).float() - 0.5
        zeros = torch.randint(0, 3, shape, generator=g)
        s[zeros == 0] = 0.0
        s[zeros == 1] = -0.0
        return s
    if kind == "infinities":
        s = torch.randint(0, 3, shape, generator=g).float()
        s[:, ::5] = float("inf")
        s[:, 1::7] = -float("inf")
        return s
    raise ValueError(kind)


KINDS = ["random", "quantized", "all_equal", "signed_zeros", "infinities"]


@pytest.fixture(params=[*SELECTIONS, "select-torch"])
def selection(request, monkeypatch):
    """Both paths; "select-torch": the selection's torch code (GPUs, other dtypes) on CPU."""
    if request.param == "select-torch":
        monkeypatch.setattr(masks, "_on_numpy", lambda t: False)
    with use_selection(request.param.removesuffix("-torch")):
        yield request.param


@pytest.mark.parametrize("kind", KINDS)
def test_per_row_equals_the_slow_reference_for_every_k(kind, selection):
    score = _scores(kind)
    width = score.shape[1]
    for k in sorted({0, 1, 2, width // 2, width - 1, width}):
        expected = slow_per_row(score, k)
        assert torch.equal(mask_per_row(score, k / width), expected), (kind, k)
        assert torch.equal(lowest_mask(score, k), expected), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
def test_per_matrix_equals_the_slow_reference_for_every_k(kind, selection):
    score = _scores(kind, (5, 12), seed=1)
    n = score.numel()
    for k in sorted({0, 1, n // 3, n - 1, n}):
        expected = torch.tensor(slow_lowest(score.reshape(-1).tolist(), k)).reshape(score.shape)
        assert torch.equal(mask_per_matrix(score, k / n), expected), (kind, k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "m"), [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4), (3, 8), (5, 16),
                                      (7, 32)])  # M > 16: the per-row selection
def test_n_m_equals_the_slow_reference(kind, n, m, selection):
    score = _scores(kind, (6, 64), seed=2)
    assert torch.equal(mask_n_m(score, n, m), slow_n_m(score, n, m)), (kind, n, m)


@pytest.mark.parametrize("seed", range(6))
def test_select_and_sort_agree_on_larger_quantized_and_random_scores(seed):
    g = torch.Generator().manual_seed(seed)
    levels = [None, 3, 17, 255][seed % 4]
    score = torch.rand(64, 96, generator=g)
    if levels:
        score = (score * levels).floor() / levels  # many ties at the threshold
    for sparsity in (0.1, 0.5, 0.73):
        with use_selection("sort"):
            ref = (mask_per_row(score, sparsity), mask_per_matrix(score, sparsity),
                   mask_n_m(score, 2, 4))
        got = (mask_per_row(score, sparsity), mask_per_matrix(score, sparsity),
               mask_n_m(score, 2, 4))
        for a, b in zip(ref, got, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_larger_scores_give_the_sort_masks_with_any_thread_count(threads):
    g = torch.Generator().manual_seed(threads)
    score = (torch.rand(700, 256, generator=g) * 9).floor()  # ties straddle every threshold
    score[::7] = torch.rand(100, 256, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = (mask_per_row(score, 0.5), mask_per_matrix(score, 0.3), mask_n_m(score, 2, 4))
    finally:
        torch.set_num_threads(before)
    with use_selection("sort"):
        ref = (mask_per_row(score, 0.5), mask_per_matrix(score, 0.3), mask_n_m(score, 2, 4))
    for a, b in zip(ref, got, strict=True):
        assert torch.equal(a, b)


def test_nan_scores_fall_back_to_the_sort():
    # callers reject NaN scores first (check_finite); the selection still agrees with the sort
    score = _scores("random", (4, 10))
    score[0, :7] = float("nan")
    score[1, 3] = float("nan")
    with use_selection("sort"):
        expected = mask_per_row(score, 0.5)
    assert torch.equal(mask_per_row(score, 0.5), expected)


def test_ties_topk_is_unchanged_by_the_selection():
    score = _scores("quantized", (5, 16), seed=3)
    expected = torch.zeros_like(score, dtype=torch.bool)
    expected.scatter_(1, torch.topk(score, 8, dim=1, largest=False).indices, True)
    for selection in SELECTIONS:
        with use_selection(selection):
            assert torch.equal(mask_per_row(score, 0.5, ties="topk"), expected)
            with pytest.raises(ValueError, match="ties must be one of index, topk"):
                mask_per_row(score, 0.5, ties="random")


def test_unknown_selection_is_refused_and_the_default_comes_back():
    assert current_selection() == "select"
    with pytest.raises(ValueError, match="selection must be one of select, sort"):
        with use_selection("quick"):
            pass
    with use_selection("sort"):
        assert current_selection() == "sort"
    assert current_selection() == "select"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_apply_mask_is_bit_for_bit_masked_fill(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(9, 32, generator=g).to(dtype)
    w[0, :4] = -0.0  # kept -0.0 stays -0.0; pruned negatives become +0.0
    mask = torch.rand(9, 32, generator=g) < 0.5
    mask[0, :2] = False
    expected = w.clone().masked_fill_(mask, 0)
    got = w.clone()
    apply_mask_(got, mask)
    int_view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[w.element_size()]
    assert torch.equal(got.view(int_view), expected.view(int_view))
    t = w.clone().t()  # a non-contiguous (transposed, GPT-2 Conv1D-like) view falls back
    apply_mask_(t, mask.t())
    assert torch.equal(t, expected.t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_zero_pattern_and_realised_sparsity_count_both_signed_zeros(dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(7, 40, generator=g).to(dtype)
    w[torch.rand(7, 40, generator=g) < 0.4] = 0.0
    w[1, :5] = -0.0
    w[2, 3] = float("nan")  # NaN is not zero
    reference = [[float(v) == 0.0 for v in row] for row in w.tolist()]  # element by element
    for weight in (w, w.t()):  # contiguous, and a transposed view
        zero = masks.zero_pattern(weight)
        assert isinstance(zero, np.ndarray) and zero.dtype == np.bool_
        want = reference if weight is w else [list(r) for r in zip(*reference, strict=True)]
        assert [[bool(v) for v in row] for row in zero.tolist()] == want
        assert masks.realised_sparsity(weight) == sum(map(sum, want)) / weight.numel()


def test_zero_pattern_hash_equals_a_slow_reference_and_tells_patterns_apart():
    import hashlib

    from prunestudio.engine.search.fitness_reuse import zero_pattern_hash

    tiny = make_lm("llama", seed=3)
    lins = list(tiny.adapter.all_prunable_linears(tiny.model))
    with torch.no_grad():
        lins[0].weight[0, :3] = 0.0
        lins[-1].weight[-1, -2:] = -0.0

    def reference() -> str:
        h = hashlib.blake2b(digest_size=16)
        for lin in lins:
            rows = [[float(v) == 0.0 for v in row] for row in lin.weight.tolist()]
            shape = (len(rows), len(rows[0]))
            bits = [b for row in rows for b in row] + [False] * (-len(rows) * shape[1] % 8)
            packed = bytes(sum(bit << (7 - j) for j, bit in enumerate(bits[i:i + 8]))
                           for i in range(0, len(bits), 8))
            h.update(f"|{lin.name}|{shape}|".encode())
            h.update(packed)
        return h.hexdigest()

    before = zero_pattern_hash(tiny)
    assert before == reference()
    with torch.no_grad():
        lins[1].weight[2, 2] = 0.0
    assert zero_pattern_hash(tiny) != before
    assert zero_pattern_hash(tiny) == reference()


@pytest.mark.parametrize("selection", SELECTIONS)
def test_check_finite_names_the_count_in_both_paths(selection):
    with use_selection(selection):
        check_finite(torch.ones(3, 4), "fine")
        check_finite(torch.ones(0, 4), "empty")
        for bad in (float("nan"), float("inf"), -float("inf")):
            s = torch.ones(3, 4)
            s[1, 2] = bad
            s[2, 0] = bad
            with pytest.raises(NonFiniteScoreError, match=r"where: score has 2 non-finite"):
                check_finite(s, "where")


def test_phase_clock_laps_only_while_started():
    lap("score")  # no clock: nothing happens
    with phase_clock() as clock:
        restart_clock()
        lap("score")
        lap("select")
        lap("select")
    assert set(clock.seconds) == {"score", "select"}
    assert all(v >= 0 for v in clock.seconds.values())
    lap("apply")
    assert "apply" not in clock.seconds


EXPRESSIONS = [
    "W",  # magnitude of quantized-like weights: ties
    "mul(W,sqrt(X))",
    "mul(sqr(W),mms(G))",
    "add(mul(W,sqrt(X)),mul(W,G))",
    "sub(mms(X),abs(zsn(G)))",  # constant along each column's rows: ties in every row
    "neg(W)",  # -0.0 scores
]


@pytest.fixture(scope="module")
def tiny():
    lm = make_lm("llama", seed=11)
    # quantize the weights to a few levels so magnitude-like metrics tie at the threshold
    with torch.no_grad():
        for mod in linear_modules(lm.model).values():
            step = mod.weight.abs().amax() / 8
            mod.weight.copy_((mod.weight / step).round() * step)
    ids = random_ids(4, 16, seed=11)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    return lm, stats


def _weights(lm) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in linear_modules(lm.model).items()}


@pytest.mark.parametrize(("scope", "pattern"), [("row", "unstructured"),
                                                ("matrix", "unstructured"), ("row", "2:4")])
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_prune_model_gives_the_same_weights_with_both_paths(tiny, expression, scope, pattern):
    lm, stats = tiny
    snapshot = WeightSnapshot(lm)
    spec = CandidateSpec(method="symbolic", sparsity=0.5 if pattern == "unstructured" else 0.0,
                         pattern=Pattern.parse(pattern), calibration={"mode": "dense"},
                         options={"expression": expression, "scope": scope})
    out = {}
    for selection in ("sort", "select"):
        with use_selection(selection):
            prune_model(lm, spec, stats, snapshot)
        out[selection] = _weights(lm)
        snapshot.restore()
    for name, ref in out["sort"].items():
        got = out["select"][name]
        assert torch.equal((ref == 0), (got == 0)), name  # the zero pattern
        assert torch.equal(ref.view(torch.int32), got.view(torch.int32)), name  # every bit
        assert 0.45 < float((got == 0).float().mean()) < 0.75, name


def test_pipelined_block_pruning_gives_every_bit_of_layer_by_layer_pruning():
    """`ScoreMethod.prune_layers` (selection thread beside torch on one core fewer) against
    `prune_layer` one layer at a time with the threads untouched, on layers wide enough for
    torch to split reductions across threads (zsn sums), and with the pipeline's bookkeeping:
    `done` once per layer, in order, and the thread count restored."""
    from prunestudio.engine.methods.base import LayerInputs, LayerTarget
    from prunestudio.engine.pruning import get_method

    lm = make_lm("llama", seed=4, intermediate_size=1024)  # MLP 1024 × 64: 65 536 weights
    ids = random_ids(2, 16, seed=4)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    dense, grads = stats.dense_layer_stats(), stats.gradients()
    method = get_method("symbolic")
    lins = list(lm.adapter.all_prunable_linears(lm.model))
    snapshot = WeightSnapshot(lm)
    snapshot.mark([lin.name for lin in lins])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for expression in ("sub(mms(X),abs(zsn(G)))", "mul(W,sqrt(X))", "norm1(mul(W,G))"):
            options = method.validate_options({"expression": expression})
            layers = [(lin, LayerTarget(0.3 + 0.05 * (j % 4)),
                       LayerInputs(dense[lin.name], grads[lin.name])) for j, lin in enumerate(lins)]
            for lin, target, inputs in layers:
                method.prune_layer(lin, target, inputs, options)
            want = _weights(lm)
            snapshot.restore()
            assert method._pipelines(layers, options)
            seen: list[int] = []
            method.prune_layers(layers, options, done=seen.append)
            assert seen == list(range(len(layers)))
            assert torch.get_num_threads() == 2
            for name, w in _weights(lm).items():
                assert torch.equal(w.view(torch.int32), want[name].view(torch.int32)), (expression, name)
            snapshot.restore()
    finally:
        torch.set_num_threads(threads)


def test_a_failing_score_in_the_pipeline_restores_the_threads():
    from prunestudio.engine.methods.base import LayerInputs, LayerTarget
    from prunestudio.engine.pruning import get_method

    lm = make_lm("llama", seed=5)
    lins = list(lm.adapter.all_prunable_linears(lm.model))
    with torch.no_grad():
        lins[3].weight[0, 0] = float("nan")
    method = get_method("symbolic")
    options = method.validate_options({"expression": "W"})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(NonFiniteScoreError, match=lins[3].name):
            method.prune_layers([(lin, LayerTarget(0.5), LayerInputs()) for lin in lins], options)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("calibration", ["dense", None])
def test_prune_model_reports_every_block_in_order_and_every_layers_sparsity(calibration):
    """The whole-model path (statistics known up front, on CPU: one `prune_layers` call across
    blocks): progress once per block, in order, and each layer's realised sparsity recorded
    after its mask, as block-by-block pruning records them."""
    lm = make_lm("llama", seed=6, layers=3)
    ids = random_ids(2, 16, seed=6)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    spec = CandidateSpec(method="wanda" if calibration else "magnitude", sparsity=0.5,
                         calibration={"mode": calibration or "dense"},
                         options={} if calibration else {"scope": "row"})
    progress: list[tuple[int, int]] = []
    snapshot = WeightSnapshot(lm)
    result = prune_model(lm, spec, stats, snapshot, progress=lambda a, b: progress.append((a, b)))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    names = [lin.name for lin in lm.adapter.all_prunable_linears(lm.model)]
    assert list(result.layer_sparsity) == names
    for lin in lm.adapter.all_prunable_linears(lm.model):
        assert result.layer_sparsity[lin.name] == float((lin.weight == 0).sum()) / lin.weight.numel()
        assert result.layer_sparsity[lin.name] == pytest.approx(0.5, abs=1 / lin.weight.shape[1])
    snapshot.restore()
