"""GBLM against a slow float64 reference written from the GBLM-Pruner code (VILA-Lab/GBLM-Pruner
@ 9e8aea2), scores and masks layer by layer, gradients included.

The reference follows the public code step by step (written here from its formulas, nothing
copied):

* `gradient_computation.py`: the model in train mode (the tiny LLaMA has no dropout), one
  sample per step, `loss = model(input_ids, labels=input_ids).loss; loss.backward()`, then per
  linear layer of every decoder layer `gradients_l2 += (grad · scale)²` (scale = 100), the
  grads zeroed; at the end G = sqrt(gradients_l2). Float64 here (fp32 accumulation there).
* `lib/layerwrapper.py` `WrappedGPT.add_batch`: per calibration sample a running mean
  `scaler_row ← scaler_row · n / (n + 1) + ‖x_j‖² / (n + 1)` over the sample's tokens.
* `lib/prune.py` `prune_gblm`: layer by layer, each layer's inputs from the already-pruned
  layers before it, statistics of all its linears from one forward of the unpruned layer;
  `W_metric = |W| · sqrt(scaler_row) + |W| · |G|`; unstructured: per output row, a stable
  ascending sort and the first `int(in · sparsity)` pruned; N:M: in each group of M input
  columns of a row the N lowest (`torch.topk(largest=False)`).

Existing checks beside this file: `test_engine_gblm.py` (G against per-sample autograd in eval
mode for LLaMA / OPT / GPT-2, its disk cache, 50 % masks against the Wanda-style reference).
"""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testlib import (
    block_index,
    linear_modules,
    logical_weight,
    make_lm,
    random_ids,
    ref_row_mask,
)
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.methods.base import ScoreMethod
from prunestudio.engine.methods.gblm import GBLM
from prunestudio.engine.pruning import prune_model

from prunestudio.schema.spec import CandidateSpec, Pattern

SCALE = 100.0  # gradient_computation.py --scale default


def gblm_code_gradients(model: torch.nn.Module, ids: torch.Tensor,
                        scale: float = SCALE) -> dict[str, torch.Tensor]:
    """G = sqrt(Σ_samples (scale · ∂L_s/∂W)²) the way gradient_computation.py gets it: a
    float64 copy in train mode, loss.backward() per sample, grads read and zeroed."""
    fresh = copy.deepcopy(model).double()
    fresh.train()
    mods = linear_modules(fresh)
    acc = {n: torch.zeros_like(m.weight, dtype=torch.float64) for n, m in mods.items()}
    for s in range(ids.shape[0]):
        x = ids[s : s + 1]
        loss = fresh(input_ids=x, labels=x.clone(), use_cache=False).loss
        loss.backward()
        for n, m in mods.items():
            g = m.weight.grad.detach().clone()
            assert bool((g != 0).any()), f"{n}: all-zero gradient"
            acc[n] += (g * scale) ** 2
        fresh.zero_grad(set_to_none=True)
    return {n: a.sqrt() for n, a in acc.items()}


class _RunningScaler:
    """WrappedGPT.add_batch: the running mean of ‖x_j‖² per input column over samples."""

    def __init__(self, columns: int):
        self.scaler_row = torch.zeros(columns, dtype=torch.float64)
        self.nsamples = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        inp = inp.reshape(-1, inp.shape[-1]).t().double()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        for j in range(inp.shape[0]):  # explicit per column: Σ over tokens of x²
            self.scaler_row[j] += float((inp[j] * inp[j]).sum()) / self.nsamples


def _nm_mask(metric: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of m consecutive input columns of a row, the n lowest."""
    rows, cols = metric.shape
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        for start in range(0, cols, m):
            vals = metric[r, start : start + m].tolist()
            for j in sorted(range(m), key=lambda c: (vals[c], c))[:n]:
                mask[r, start + j] = True
    return mask


def gblm_code_prune(model: torch.nn.Module, ids: torch.Tensor, grads: dict[str, torch.Tensor],
                    sparsity: float = 0.5, nm: tuple[int, int] | None = None,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """prune_gblm on a float64 copy: (score, mask) per linear layer. Layer i's inputs come
    from full-model forwards of one sample each with layers < i already pruned (what
    prune_gblm's `inps ← outs` hand-over computes)."""
    fresh = copy.deepcopy(model).double()
    fresh.eval()
    mods = linear_modules(fresh)
    n_layers = 1 + max(block_index(n) for n in mods)
    scores, masks = {}, {}
    for i in range(n_layers):
        names = [n for n in mods if block_index(n) == i]
        wrapped = {n: _RunningScaler(mods[n].weight.shape[1]) for n in names}
        handles = [mods[n].register_forward_hook(
            lambda _m, inp, _out, w=wrapped[n]: w.add_batch(inp[0].detach())) for n in names]
        with torch.no_grad():
            for j in range(ids.shape[0]):
                fresh(ids[j : j + 1], use_cache=False)
        for h in handles:
            h.remove()
        for n in names:  # every linear of layer i scored from the unpruned layer's inputs
            w = mods[n].weight.detach()
            metric = w.abs() * wrapped[n].scaler_row.sqrt().reshape(1, -1)
            metric = metric + w.abs() * grads[n].abs()
            mask = ref_row_mask(metric, sparsity) if nm is None else _nm_mask(metric, *nm)
            scores[n], masks[n] = metric, mask
            with torch.no_grad():
                mods[n].weight[mask] = 0
    return scores, masks


def _project_scores(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The score gblm computes for each layer during prune_model, by layer name."""
    seen: dict[str, torch.Tensor] = {}

    def recording(self, lin, inputs, options):
        score = ScoreMethod.checked_score(self, lin, inputs, options)
        seen[lin.name] = score.detach().double().clone()
        return score

    monkeypatch.setattr(GBLM, "checked_score", recording)
    return seen


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_gblm_scores_and_masks_equal_the_gblm_code_formula(pattern, monkeypatch):
    lm = make_lm("llama", seed=41)
    ids = random_ids(4, 16, seed=41)
    grads = gblm_code_gradients(lm.model, ids)
    nm = None if pattern == "unstructured" else (2, 4)
    want_scores, want_masks = gblm_code_prune(lm.model, ids, grads, 0.5, nm)

    seen = _project_scores(monkeypatch)
    spec = (CandidateSpec(method="gblm", sparsity=0.5) if nm is None
            else CandidateSpec(method="gblm", pattern=Pattern.parse(pattern)))
    prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids), use_disk=False))

    mods = linear_modules(lm.model)
    assert set(seen) == set(mods) == set(want_scores)
    for n, m in mods.items():
        torch.testing.assert_close(seen[n], want_scores[n], rtol=1e-4, atol=1e-7, msg=n)
        assert torch.equal(logical_weight(m) == 0, want_masks[n]), n


def test_gblm_gradient_term_is_not_negligible_in_these_checks():
    """The score comparison above checks G only if |W|·G moves the scores: here it is larger
    than the activation term in some layers (v / o / down), and leaving it out (Wanda) or
    taking GBLM's l1 aggregate Σ|scale·g| instead of the l2 one changes the masks."""
    lm = make_lm("llama", seed=41)
    ids = random_ids(4, 16, seed=41)
    grads = gblm_code_gradients(lm.model, ids)
    zero = {n: torch.zeros_like(g) for n, g in grads.items()}
    scores, with_g = gblm_code_prune(lm.model, ids, grads)
    mods = linear_modules(lm.model)
    g_term = {n: logical_weight(mods[n]).double().abs() * grads[n] for n in grads}
    assert any(float(g_term[n].mean()) > float((scores[n] - g_term[n]).mean()) for n in grads)
    _, wanda = gblm_code_prune(lm.model, ids, zero)
    assert any(not torch.equal(with_g[n], wanda[n]) for n in with_g)
    l1 = {}  # Σ_s |scale · g_s|, GBLM's gradients_l1 file
    fresh = copy.deepcopy(lm.model).double()
    mods = linear_modules(fresh)
    for s in range(ids.shape[0]):
        x = ids[s : s + 1]
        fresh(input_ids=x, labels=x, use_cache=False).loss.backward()
        for n, m in mods.items():
            l1[n] = l1.get(n, 0) + (m.weight.grad * SCALE).abs()
        fresh.zero_grad(set_to_none=True)
    _, with_l1 = gblm_code_prune(lm.model, ids, l1)
    assert any(not torch.equal(with_g[n], with_l1[n]) for n in with_g)
