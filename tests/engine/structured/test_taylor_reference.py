"""Structured Taylor importance against a slow float64 reference written from LLM-Pruner's code
(horseee/LLM-Pruner @ 128a07d), and the heads / channels pruned at 20 % of the parameters.

The reference follows the public code (written here from its formulas, nothing copied):

* `hf_prune.py` (block-wise): G is the gradient of ONE batched backward,
  `model(example_prompts, labels=example_prompts).loss` (the mean over every token of every
  example); for param_second / param_mix first, per example, `loss.backward()` and
  `acc_grad += grad · grad / num_examples`, the grads zeroed after each.
* `LLMPruner/pruner/hf_llama_pruner.py` `TaylorImportance`: salience S = W·G (vectorize,
  param_first), W·acc_grad·W (param_second, no ½), W·G − ½·W·acc_grad·W (param_mix); per
  member one value per channel (output row: q / k / v / gate / up; input column: o / down):
  vectorize |Σ S|, param_* Σ |S|; the members' vectors stacked and reduced per channel
  (group_reduction sum / mean / max / prod).
* `LLMPruner/torch_pruning/pruner/algorithms/metapruner.py` `prune_local`: attention groups are
  rooted at q_proj with `consecutive_groups = head_dim`, so a head's importance is the sum of
  its head_dim consecutive channel importances (`imp.view(-1, head_dim).sum(1)`); the lowest
  (argsort) are pruned.

The model is a tiny LLaMA without GQA (4 heads, 4 KV heads), as LLaMA-7B / Llama-2-7B in
hf_prune.py. Other checks: `test_structured_importance.py` (every importance and aggregation,
every family, against hand-written slices).
"""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testlib import linear_modules, make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.structured import prune_structured, unit_count
from prunestudio.engine.structured.apply import plan_structured
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.importance import compute_taylor_stats, group_scores

from prunestudio.schema.spec import CandidateSpec

LAYERS = 4
HEADS, HEAD_DIM, MLP = 4, 16, 128
TAYLOR = {"taylor_vector": "vectorize", "taylor_first": "param_first",
          "taylor_second": "param_second", "taylor_mix": "param_mix"}


def _lm():
    return make_lm("llama", seed=23, layers=LAYERS, num_key_value_heads=HEADS)


def llm_pruner_gradients(model: torch.nn.Module, ids: torch.Tensor
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(grad, acc_grad) per linear weight as hf_prune.py leaves them, on a float64 copy."""
    fresh = copy.deepcopy(model).double()
    fresh.eval()  # from_pretrained's mode; hf_prune.py never switches to train
    mods = linear_modules(fresh)
    n = ids.shape[0]
    acc = {name: torch.zeros_like(m.weight) for name, m in mods.items()}
    for j in range(n):
        batch_input = ids[j].unsqueeze(0)
        fresh(batch_input, labels=batch_input, use_cache=False).loss.backward()
        for name, m in mods.items():
            acc[name] += m.weight.grad * m.weight.grad / n
        fresh.zero_grad(set_to_none=True)
    fresh(ids, labels=ids, use_cache=False).loss.backward()  # the batched backward: G
    grad = {name: m.weight.grad.detach().clone() for name, m in mods.items()}
    return grad, acc


def _channel_norms(w, g, acc, taylor: str, axis: int) -> list[float]:
    """TaylorImportance's local_norm of one member: one value per output row (axis 0) or
    input column (axis 1), explicit loops over the channels."""
    s = w * g
    if taylor == "param_second":
        s = w * acc * w
    elif taylor == "param_mix":
        s = s - 0.5 * w * acc * w
    lines = s if axis == 0 else s.t()
    if taylor == "vectorize":
        return [abs(float(line.sum())) for line in lines]
    return [float(line.abs().sum()) for line in lines]


def _reduce(values: list[float], how: str) -> float:
    if how == "sum":
        return sum(values)
    if how == "mean":
        return sum(values) / len(values)
    if how == "max":
        return max(values)
    out = 1.0
    for v in values:
        out *= v
    return out


def llm_pruner_importance(model: torch.nn.Module, grad, acc, block: int, kind: str,
                          taylor: str, reduction: str = "sum") -> list[float]:
    """Per head (attention) or channel (MLP) of one block, as TaylorImportance + MetaPruner
    compute it for the group rooted at q_proj / gate_proj."""
    prefix = f"model.layers.{block}."
    if kind == "attention":
        members = [("self_attn.q_proj", 0), ("self_attn.k_proj", 0), ("self_attn.v_proj", 0),
                   ("self_attn.o_proj", 1)]
    else:
        members = [("mlp.gate_proj", 0), ("mlp.up_proj", 0), ("mlp.down_proj", 1)]
    mods = dict(model.named_modules())
    group_imp = []
    for name, axis in members:
        full = prefix + name
        w = mods[full].weight.detach().double()
        group_imp.append(_channel_norms(w, grad[full], acc[full], taylor, axis))
    channels = [_reduce([imp[c] for imp in group_imp], reduction)
                for c in range(len(group_imp[0]))]
    if kind == "mlp":
        return channels
    return [sum(channels[h * HEAD_DIM : (h + 1) * HEAD_DIM]) for h in range(HEADS)]


def _lowest(scores: list[float], k: int) -> list[int]:
    return sorted(sorted(range(len(scores)), key=lambda u: (scores[u], u))[:k])


@pytest.mark.parametrize("importance", ["taylor_first", "taylor_second"])
def test_group_importance_equals_llm_pruner_formula(importance):
    lm = _lm()
    ids = random_ids(4, 12, seed=23)
    grad, acc = llm_pruner_gradients(lm.model, ids)
    taylor = compute_taylor_stats(lm, ids)
    for b in range(LAYERS):
        att, mlp = block_groups(lm.adapter, lm.model, b)
        assert att.n_units == HEADS and mlp.n_units == MLP
        for kind, groups in (("attention", att), ("mlp", mlp)):
            got = group_scores(groups, importance, "sum", taylor=taylor)
            want = torch.tensor(llm_pruner_importance(lm.model, grad, acc, b, kind,
                                                      TAYLOR[importance]), dtype=torch.float64)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()),
                                       msg=f"block {b} {kind}")


@pytest.mark.parametrize("importance,reduction", [("taylor_vector", "sum"),
                                                  ("taylor_mix", "sum"),
                                                  ("taylor_second", "max"),
                                                  ("taylor_first", "prod"),
                                                  ("taylor_first", "mean")])
def test_vector_mix_and_reductions_per_channel_then_per_head(importance, reduction):
    """vectorize takes |Σ| per channel line (not over the whole head), and the members are
    reduced channel by channel before a head sums its channels: max / prod of a head differ
    from max / prod of its members' head totals."""
    lm = _lm()
    ids = random_ids(3, 10, seed=29)
    grad, acc = llm_pruner_gradients(lm.model, ids)
    taylor = compute_taylor_stats(lm, ids)
    for b in (0, LAYERS - 1):
        att, mlp = block_groups(lm.adapter, lm.model, b)
        for kind, groups in (("attention", att), ("mlp", mlp)):
            got = group_scores(groups, importance, reduction, taylor=taylor)
            want = torch.tensor(llm_pruner_importance(lm.model, grad, acc, b, kind,
                                                      TAYLOR[importance], reduction),
                                dtype=torch.float64)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()),
                                       msg=f"block {b} {kind}")


@pytest.mark.parametrize("importance", ["taylor_first", "taylor_second"])
def test_pruned_heads_and_channels_at_20_percent_params(importance):
    """LLM-Pruner's selection (the lowest importances of each pruned block, first and last
    blocks kept as its block_*_layer_start / end do) at the counts the parameter ratio gives."""
    lm = _lm()
    ids = random_ids(4, 12, seed=31)
    grad, acc = llm_pruner_gradients(lm.model, ids)
    spec = CandidateSpec(method="structured", sparsity=0.2, options={
        "importance": importance, "ratio": "params", "block_start": 1, "block_end": -1})
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    plan, counts, _ = plan_structured(lm, spec, stats)
    pruned, info = prune_structured(lm, spec, stats)
    assert info.blocks == [1, 2] and set(plan.blocks) <= {1, 2}
    assert info.param_ratio == pytest.approx(0.2, abs=0.02)
    removed_heads = removed_channels = 0
    for b in info.blocks:
        k_att, k_mlp = counts.attention[b], counts.mlp[b]
        bp = plan.blocks.get(b)
        heads = llm_pruner_importance(lm.model, grad, acc, b, "attention", TAYLOR[importance])
        channels = llm_pruner_importance(lm.model, grad, acc, b, "mlp", TAYLOR[importance])
        assert list(bp.attention if bp else ()) == _lowest(heads, k_att), b
        assert list(bp.mlp if bp else ()) == _lowest(channels, k_mlp), b
        assert info.layers[b]["heads"] == HEADS - k_att and info.layers[b]["mlp"] == MLP - k_mlp
        removed_heads += k_att
        removed_channels += k_mlp
    assert removed_channels > 0 and removed_heads > 0
    for b in (0, LAYERS - 1):  # outside the range: untouched
        assert info.layers[b] == {"heads": HEADS, "kv_heads": HEADS, "head_dim": HEAD_DIM,
                                  "mlp": MLP}


def llm_pruner_count(channels: int, ratio: float, consecutive: int = 1) -> int:
    """MetaPruner.prune_local's count: channels − int(channels · (1 − ratio)), in whole
    consecutive groups (heads)."""
    return (channels - int(channels * (1 - ratio))) // consecutive


@pytest.mark.parametrize("ratio", [0.2, 0.25, 0.5])
def test_group_counts_agree_with_llm_pruner_for_llama_7b(ratio):
    """ratio = 'groups' on LLaMA-7B (32 heads of 128, 11008 channels): the published ratios
    remove as many heads and channels as LLM-Pruner (other ratios may differ by one unit:
    docs/reference-fidelity.md)."""
    assert unit_count(ratio, 32) == llm_pruner_count(32 * 128, ratio, 128)
    assert unit_count(ratio, 11008) == llm_pruner_count(11008, ratio)
