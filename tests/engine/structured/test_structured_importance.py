"""Group importance against slow references: explicit per-sample gradients from
torch.autograd.grad, hand-written weight slices per unit, float64 sums in Python loops."""

from __future__ import annotations

import math

import pytest
import torch
from engine_testlib import (
    capture_linear_inputs,
    linear_modules,
    make_lm,
    random_ids,
    ref_x_sqnorm,
)
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.importance import (
    Coefficients,
    compute_taylor_stats,
    group_scores,
)
from structured_testlib import modules, per_sample_gradients, slice_weight, unit_slices

TAYLOR = ("taylor_vector", "taylor_first", "taylor_second", "taylor_mix")


def _member_ref(w: torch.Tensor, g: torch.Tensor, f: torch.Tensor, x: torch.Tensor | None,
                importance: str, coeffs: Coefficients, axis: int = 0) -> list[float]:
    """One member slice (float64): the formulas written out on the slice itself, one value per
    line (row for axis 0, column for axis 1), as LLM-Pruner's TaylorImportance reduces them
    (vectorize: |Σ of each line|; param_second: W·F·W with no ½; param_mix: ½)."""
    if axis == 1:  # columns are the lines
        w, g, f = w.t(), g.t(), f.t()
    wg = w * g
    second = w * w * f
    values = {
        "taylor_vector": [abs(float(r.sum())) for r in wg],
        "taylor_first": [float(r.abs().sum()) for r in wg],
        "taylor_second": [float(r.sum()) for r in second],
        "taylor_mix": [float(r.abs().sum()) for r in (wg - 0.5 * second)],
        "l1": [float(r.abs().sum()) for r in w],
        "l2": [float((r * r).sum()) for r in w],
    }
    if x is not None:
        xs = x.double().sqrt()
        xs = xs.reshape(-1, 1) if axis == 1 else xs.reshape(1, -1)
        values["activation"] = [float(r.sum()) for r in (w.abs() * xs)]
    values["combined"] = [coeffs.alpha * a + coeffs.beta * b + coeffs.gamma * c for a, b, c in
                          zip(values["taylor_vector"], values["taylor_first"],
                              values["taylor_second"], strict=True)]
    return values[importance]


def _aggregate(members: list[list[float]], how: str) -> float:
    """LLM-Pruner's reduction: longer members folded onto the shortest (line i → i mod width,
    summed), the members reduced position by position, then the positions summed (a head's
    consecutive channels)."""
    width = min(len(v) for v in members)
    folded = [[sum(v[i] for i in range(p, len(v), width)) for p in range(width)] for v in members]
    total = 0.0
    for p in range(width):
        values = [v[p] for v in folded]
        if how == "sum":
            total += sum(values)
        elif how == "mean":
            total += sum(values) / len(values)
        elif how == "max":
            total += max(values)
        elif how == "prod":
            total += math.prod(values)
        else:
            total += values[-1]  # last executed member
    return total


def _reference(lm, arch, ids, importance, aggregation, attention_unit, coeffs, x_cols=None):
    """{(block, kind): [score per unit]} the slow way."""
    model = lm.model
    names = list(linear_modules(model))
    samples = per_sample_gradients(model, ids, names)
    n = len(samples)
    grad = {nm: sum(s[nm] for s in samples) / n for nm in names}  # mean-loss gradient
    fisher = {nm: sum(s[nm] * s[nm] for s in samples) / n for nm in names}  # diagonal Fisher
    out = {}
    for b in range(2):
        mods = modules(model, arch, b)
        name_of = {key: next(nm for nm, m in linear_modules(model).items() if m is mod)
                   for key, mod in mods.items()}
        for kind, units in (("attention", 2 if (arch == "llama" and attention_unit == "kv_group")
                             else 4), ("mlp", 128 if arch != "gpt2" else 256)):
            scores = []
            for u in range(units):
                member_values = []
                for key, _, rows, cols in unit_slices(model, arch, b, kind, u, attention_unit):
                    nm = name_of[key]
                    w = slice_weight(mods[key], rows, cols).double()
                    g, f = grad[nm][rows, cols], fisher[nm][rows, cols]
                    x = None if x_cols is None else x_cols[nm][cols]
                    axis = 0 if cols == slice(None) else 1
                    member_values.append(_member_ref(w, g, f, x, importance, coeffs, axis))
                scores.append(_aggregate(member_values, aggregation))
            out[(b, kind)] = scores
    return out


CASES = [
    ("llama", "taylor_vector", "sum", "kv_group"),
    ("llama", "taylor_first", "sum", "query_head"),
    ("llama", "taylor_second", "mean", "kv_group"),
    ("llama", "taylor_mix", "max", "kv_group"),
    ("opt", "taylor_first", "sum", "kv_group"),
    ("opt", "taylor_mix", "prod", "kv_group"),
    ("gpt_neox", "taylor_vector", "last", "kv_group"),
    ("gpt_neox", "taylor_second", "sum", "kv_group"),
    ("gpt2", "taylor_first", "mean", "kv_group"),
    ("gpt2", "combined", "sum", "kv_group"),
]


@pytest.mark.parametrize("arch,importance,aggregation,unit", CASES,
                         ids=["-".join(c) for c in CASES])
def test_taylor_importance_matches_slow_reference(arch, importance, aggregation, unit):
    lm = make_lm(arch, seed=3)
    ids = random_ids(3, 12, seed=5)
    coeffs = Coefficients(alpha=0.7, beta=1.3, gamma=50.0)
    taylor = compute_taylor_stats(lm, ids)
    ref = _reference(lm, arch, ids, importance, aggregation, unit, coeffs)
    for b in range(2):
        att, mlp = block_groups(lm.adapter, lm.model, b, unit)
        for kind, groups in (("attention", att), ("mlp", mlp)):
            got = group_scores(groups, importance, aggregation, taylor=taylor,
                               coefficients=coeffs)
            want = torch.tensor(ref[(b, kind)], dtype=torch.float64)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=2e-4, atol=1e-12 + 1e-6 * want.abs().max())


@pytest.mark.parametrize("arch,importance", [("llama", "l1"), ("gpt2", "l2"),
                                             ("opt", "activation"), ("gpt_neox", "activation")])
def test_magnitude_and_activation_importance(arch, importance):
    lm = make_lm(arch, seed=4)
    ids = random_ids(2, 10, seed=6)
    x_cols = None
    x_stats = None
    if importance == "activation":
        names = list(linear_modules(lm.model))
        inputs = capture_linear_inputs(lm.model, names, ids)
        x_cols = {n: ref_x_sqnorm(inputs[n], ids.shape[0]) for n in names}
        from prunestudio.engine.calibration import StatsCache, calibration_hash

        stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
        x_stats = {k: v.x_sqnorm for k, v in stats.dense_layer_stats().items()}
    for b in range(2):
        att, mlp = block_groups(lm.adapter, lm.model, b)
        mods = modules(lm.model, arch, b)
        by_id = {id(m): n for n, m in linear_modules(lm.model).items()}
        for kind, groups in (("attention", att), ("mlp", mlp)):
            got = group_scores(groups, importance, "sum", x_sqnorm=x_stats)
            for u in range(groups.n_units):
                want = 0.0
                for key, _, rows, cols in unit_slices(lm.model, arch, b, kind, u):
                    w = slice_weight(mods[key], rows, cols).double()
                    x = None if x_cols is None else x_cols[by_id[id(mods[key])]][cols]
                    axis = 0 if cols == slice(None) else 1
                    want += sum(_member_ref(w, w, w, x, importance, Coefficients(), axis))
                assert float(got[u]) == pytest.approx(want, rel=1e-4), (b, kind, u)


def test_taylor_statistics_leave_the_model_as_it_was():
    lm = make_lm("opt", seed=2)  # OPT has dropout: statistics must be taken in eval mode
    lm.model.train()
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    ids = random_ids(2, 8)
    a = compute_taylor_stats(lm, ids)
    b = compute_taylor_stats(lm, ids)
    assert lm.model.training
    assert flags == {n: p.requires_grad for n, p in lm.model.named_parameters()}
    assert all(p.grad is None for p in lm.model.parameters())
    for k in a:
        assert torch.equal(a[k].grad, b[k].grad) and torch.equal(a[k].fisher, b[k].fisher)
