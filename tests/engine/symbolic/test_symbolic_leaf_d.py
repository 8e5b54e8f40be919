"""The leaf D beyond the paper's W, G, X: the diagonal of the upper Cholesky factor of the damped
inverse Hessian (SparseGPT's mask score w² / d²), checked against float64 computations written
here; off by default, so the paper's search space stays exactly W, G, X."""

from __future__ import annotations

import random

import pytest
import torch
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import LayerStats, StatsCache, calibration_hash
from prunestudio.engine.methods import get_method
from prunestudio.engine.methods.base import LayerInputs, LayerTarget
from prunestudio.engine.methods.symbolic import inverse_hessian_diagonal
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.pruning import WeightSnapshot, prune_model
from prunestudio.engine.symbolic import (
    KNOWN_METRICS,
    LEAVES,
    leaves_used,
    mask_hash,
    parse,
    point_mutation,
    probe_layers,
    ramped_half_and_half,
)

from prunestudio.schema.spec import CandidateSpec, Pattern

SCORE = KNOWN_METRICS["sparsegpt_score"]


def _reference_d(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """float64: dead inputs get H_jj = 1, damping λ·mean(diag H), U = upper Cholesky factor
    of H⁻¹ (H⁻¹ = Uᵀ U), d = diag(U)."""
    H = H.double().clone()
    for j in range(H.shape[0]):
        if H[j, j] == 0:
            H[j, j] = 1.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=torch.float64)
    inv = torch.linalg.inv(H)
    # upper Cholesky: inv = Uᵀ U  ⇔  U = Lᵀ with L the lower factor of inv
    return torch.diag(torch.linalg.cholesky(inv).t())


def _hessian(n: int, width: int, seed: int, dead: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, width, generator=g) * torch.linspace(0.1, 3.0, width)
    x[:, list(dead)] = 0.0
    return 2.0 / n * x.t() @ x


def test_d_equals_the_float64_inverse_hessian_cholesky_diagonal_dead_inputs_included():
    H = _hessian(200, 48, seed=1, dead=(3, 17))
    d = inverse_hessian_diagonal(H)
    assert d.shape == (48,) and bool((d > 0).all())
    assert torch.allclose(d.double(), _reference_d(H), rtol=1e-4)
    assert inverse_hessian_diagonal(H) is d  # computed once per Hessian tensor


def test_the_sparsegpt_score_masks_each_row_by_w2_over_d2():
    torch.manual_seed(0)
    W = torch.randn(16, 48)
    H = _hessian(200, 48, seed=2)
    method = get_method("symbolic")
    options = method.validate_options({"expression": SCORE})
    assert method.needs(options) == frozenset({"hessian"})
    score = method.score(W, LayerInputs(LayerStats(4, None, H)), options)
    d = _reference_d(H)
    ref_score = W.double() ** 2 / d.reshape(1, -1) ** 2
    assert torch.allclose(score.double(), ref_score, rtol=1e-4)
    # the mask: per row, the 24 lowest w²/d² (stable by column), from the test's own score
    layer = torch.nn.Linear(48, 16, bias=False)
    layer.weight.data.copy_(W)
    lin = PrunableLinear("layer", 0, "q", layer)
    method.prune_layer(lin, LayerTarget(0.5), LayerInputs(LayerStats(4, None, H)), options)
    for r in range(16):
        order = sorted(range(48), key=lambda j: (float(ref_score[r, j]), j))
        assert {j for j in range(48) if layer.weight[r, j] == 0} == set(order[:24]), r


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_a_study_spec_with_d_prunes_a_tiny_model_from_dense_hessians(pattern):
    lm = make_lm("llama", seed=4)
    ids = random_ids(4, 32, seed=4)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    snapshot = WeightSnapshot(lm)
    spec = CandidateSpec(method="symbolic", sparsity=0.5 if pattern == "unstructured" else 0.0,
                         pattern=Pattern.parse(pattern), options={"expression": SCORE},
                         calibration={"mode": "dense"})
    result = prune_model(lm, spec, stats, snapshot)
    assert result.overall_sparsity == pytest.approx(0.5)
    assert "dense_xh" in stats.computed  # the Hessians were collected for D
    for lin in lm.adapter.all_prunable_linears(lm.model):
        assert bool(torch.isfinite(lin.weight).all())
    snapshot.restore()


def test_the_paper_space_never_proposes_d_unless_asked():
    rng = random.Random(3)
    assert LEAVES == ("W", "G", "X")
    paper = ramped_half_and_half(rng, 200)
    assert not any("D" in leaves_used(t) for t in paper)
    assert not any("D" in leaves_used(point_mutation(t, rng)) for t in paper)
    extended = ramped_half_and_half(rng, 200, leaves=("W", "X", "D"))
    assert any("D" in leaves_used(t) for t in extended)


def test_mask_hash_of_a_d_expression_needs_probes_with_d():
    lm = make_lm("llama", seed=5)
    ids = random_ids(4, 32, seed=5)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    tree = parse(SCORE)
    with pytest.raises(ValueError, match=r"reads \['D'\], absent from the probe set"):
        mask_hash(tree, probe_layers(lm, stats, count=2, with_grad=False), 0.5)
    probes = probe_layers(lm, stats, count=2, with_grad=False, with_hessian=True)
    # a rank-preserving transform of the score: the same masks, the same hash
    assert mask_hash(tree, probes, 0.5) == mask_hash(parse("sqrt(div(sqr(W),sqr(D)))"),
                                                     probes, 0.5)
    assert mask_hash(tree, probes, 0.5) != mask_hash(parse("W"), probes, 0.5)


# ---------------------------------------------------------------- constants (opt-in)


def test_constants_parse_print_and_evaluate_as_their_values():
    from prunestudio.engine.symbolic import evaluate, from_json, to_json

    tree = parse("add(mul(W,sqrt(X)),mul(0.10,mul(W,G)))")
    assert str(tree) == "add(mul(W,sqrt(X)),mul(0.1,mul(W,G)))"
    assert from_json(to_json(tree)) == tree and parse(str(tree)) == tree
    assert leaves_used(tree) == frozenset({"W", "X", "G"})  # constants are not inputs
    torch.manual_seed(1)
    W, X, G = torch.rand(4, 6), torch.rand(6), torch.rand(4, 6)
    expect = W * X.sqrt().reshape(1, -1) + 0.1 * (W * G)
    assert torch.allclose(evaluate(tree, W=W, X=X, G=G), expect)
    assert torch.equal(evaluate(parse("10"), W=W), torch.full((4, 6), 10.0))
    with pytest.raises(ValueError, match=r"constant 3 is not one of the constants 0\.1, 0\.5, "
                       r"2, 10"):
        parse("mul(3,W)")


def test_constants_enter_a_search_only_when_its_leaves_include_them():
    from prunestudio.engine.symbolic.grammar import CONSTANTS

    rng = random.Random(5)
    paper = ramped_half_and_half(rng, 200)
    assert not any(n.op in CONSTANTS for t in paper for n in _nodes(t))
    extended = ramped_half_and_half(rng, 200, leaves=("W", "X", *CONSTANTS))
    assert any(n.op in CONSTANTS for t in extended for n in _nodes(t))


def _nodes(tree):
    yield tree
    for c in tree.children:
        yield from _nodes(c)
