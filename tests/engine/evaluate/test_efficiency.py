"""Efficiency metrics: parameter counts, MACs from the module shapes, timing records."""

from __future__ import annotations

import pytest
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.evaluate.efficiency import (
    efficiency_metrics,
    macs_per_token,
    measure_latency,
    parameter_counts,
)
from prunestudio.engine.structured import prune_structured
from prunestudio.store.records import normalise_metric

from prunestudio.schema.spec import CandidateSpec


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt_neox", "gpt2"])
def test_parameter_counts_by_hand(arch):
    lm = make_lm(arch)
    model = lm.model
    counts = parameter_counts(model, lm.adapter)
    unique = {id(p): p for p in model.parameters()}
    assert counts.total == sum(p.numel() for p in unique.values())
    for b, block in enumerate(lm.adapter.blocks(model)):
        assert counts.blocks[b] == sum(p.numel() for p in block.parameters())
    assert counts.outside_blocks == counts.total - sum(counts.blocks)


def test_macs_per_token_llama_by_hand():
    lm = make_lm("llama")  # hidden 64, 4 heads × 16 (2 KV heads), MLP 128, vocab 256, 2 blocks
    L = 32
    per_block = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k+v, o, gate/up/down
    attention = 64 * (L + 1)  # QKᵀ and AV at average context (L+1)/2, 4 heads × 16
    lm_head = 64 * 256
    macs = macs_per_token(lm.model, lm.adapter, L)
    assert macs["linear"] == 2 * per_block + lm_head
    assert macs["attention"] == 2 * attention
    assert macs["total"] == macs["linear"] + macs["attention"]


def test_macs_per_token_mixtral_counts_the_routed_experts_only():
    # hidden 64, 4 heads × 16 (2 KV heads), 4 experts of width 64, 2 per token, vocab 256
    lm = make_lm("mixtral")
    L = 32
    attention_linears = 64 * 64 + 2 * 64 * 32 + 64 * 64
    expert = 2 * 64 * 64 + 64 * 64  # gate_up (128 × 64) and down (64 × 64)
    router = 4 * 64
    macs = macs_per_token(lm.model, lm.adapter, L)
    assert macs["linear"] == 2 * (attention_linears + 2 * expert + router) + 64 * 256
    assert macs["attention"] == 2 * 64 * (L + 1)


def test_structured_pruning_lowers_params_and_macs():
    lm = make_lm("gpt2")
    ids = random_ids(2, 16)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    spec = CandidateSpec(method="structured", sparsity=0.5, options={"ratio": "groups",
                                                                     "importance": "l1"})
    pruned, info = prune_structured(lm, spec, stats)
    before = macs_per_token(lm.model, lm.adapter, 64)
    after = macs_per_token(pruned.model, lm.adapter, 64)
    assert after["attention"] == before["attention"] // 2  # half the heads
    assert after["total"] < before["total"]
    assert parameter_counts(pruned.model, lm.adapter).total == info.params_after


def test_efficiency_records_are_valid_store_metrics():
    lm = make_lm("opt")
    records = efficiency_metrics(lm.model, lm.adapter, seqlen=16, batch=2, repeats=2)
    names = [r["name"] for r in records]
    assert names == ["params", "macs_per_token", "latency_ms", "tokens_per_s",
                     "peak_memory_bytes"]
    for r in records:
        normalise_metric(r)  # the store accepts every record as is
        assert r["role"] == "efficiency"
    by = {r["name"]: r for r in records}
    assert by["latency_ms"]["protocol"]["batch"] == 2 and by["latency_ms"]["seqlen"] == 16
    assert by["tokens_per_s"]["value"] == pytest.approx(32 / (by["latency_ms"]["value"] / 1e3))
    weights = by["peak_memory_bytes"]["protocol"]["weight_bytes"]
    assert by["peak_memory_bytes"]["value"] > weights > 0
    assert by["peak_memory_bytes"]["protocol"]["activation_peak_bytes"] >= 2 * 16 * 256 * 4
    assert len(by["params"]["protocol"]["per_block"]) == 2


def test_latency_rejects_bad_arguments():
    lm = make_lm("llama")
    with pytest.raises(ValueError, match="≥ 1"):
        measure_latency(lm.model, batch=0)
