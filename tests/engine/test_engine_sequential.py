"""The sequential calibration protocol: captured block inputs, isolated block calls, and
statistics of block i taken from the already-pruned blocks before it."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testlib import (
    ARCHS,
    block_index,
    capture_linear_inputs,
    linear_modules,
    logical_weight,
    make_lm,
    random_ids,
    ref_x_sqnorm,
)
from prunestudio.engine.calibration import (
    StatsCache,
    calibration_hash,
    capture_block_inputs,
    collect_block_stats,
    prune_sequentially,
    run_block,
)
from prunestudio.engine.masks import mask_per_row


def _block_outputs_of_full_model(lm, ids):
    """Each block's output during one ordinary forward, captured with the test's own hooks,
    plus the model's own `output_hidden_states`."""
    outs = {}
    handles = []
    for i, block in enumerate(lm.adapter.blocks(lm.model)):
        def hook(module, args, output, i=i):
            outs[i] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        handles.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad():
            hs = lm.model(ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        for h in handles:
            h.remove()
    return outs, hs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_isolated_block_calls_reproduce_the_full_model(arch, attn):
    """Keyword arguments (rotary position embeddings, attention mask: GPT-2 passes it
    positionally) reach every isolated block call; chunking does not change anything."""
    lm = make_lm(arch, layers=3, attn=attn)
    ids = random_ids(5, 12)
    inputs = capture_block_inputs(lm, ids, batch_size=2)  # chunks of 2, 2, 1
    assert [h.shape[0] for h in inputs.hidden] == [2, 2, 1]
    assert inputs.nsamples == 5
    for kw in inputs.kwargs:
        assert kw.get("use_cache") is False
        assert not {"past_key_value", "past_key_values", "layer_past"} & set(kw), kw.keys()
        if arch in ("llama", "gpt_neox"):
            cos, sin = kw["position_embeddings"]
            assert cos.shape[-2] == 12

    outs, hs = _block_outputs_of_full_model(lm, ids)
    torch.testing.assert_close(torch.cat(inputs.hidden), hs[0], rtol=0, atol=0)
    x = inputs
    for i, block in enumerate(lm.adapter.blocks(lm.model)):
        x = run_block(block, x)
        got = torch.cat(x.hidden)
        torch.testing.assert_close(got, outs[i], rtol=1e-5, atol=1e-5)
        if i + 1 < len(hs) - 1:  # the last hidden state has the final norm applied
            torch.testing.assert_close(got, hs[i + 1], rtol=1e-5, atol=1e-5)


def test_isolated_block_is_causal():
    """Changing a later token never changes an earlier position's block output."""
    for arch in ("gpt2", "llama"):
        lm = make_lm(arch, attn="eager")
        ids = random_ids(1, 10)
        ids2 = ids.clone()
        ids2[0, 7:] = (ids2[0, 7:] + 1) % 256
        block = lm.adapter.blocks(lm.model)[0]
        a = torch.cat(run_block(block, capture_block_inputs(lm, ids)).hidden)
        b = torch.cat(run_block(block, capture_block_inputs(lm, ids2)).hidden)
        torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
        assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
def test_block_statistics_come_from_the_already_pruned_blocks(arch):
    lm = make_lm(arch, seed=3)
    dense_copy = copy.deepcopy(lm.model)
    ids = random_ids(4, 16, seed=3)
    cache = StatsCache(lm, ids, calibration_hash(ids), batch_size=3, use_disk=False)
    dense = cache.dense_layer_stats()

    seen: dict[str, torch.Tensor] = {}
    order = []

    def prune_block(i, linears, stats):
        order.append(i)
        for lin in linears:
            seen[lin.name] = stats[lin.name].x_sqnorm.clone()
            lin.weight.masked_fill_(mask_per_row(lin.weight.abs().float(), 0.5), 0)

    prune_sequentially(lm, cache.block_inputs(), prune_block)
    assert order == [0, 1]

    block0 = [n for n in seen if block_index(n) == 0]
    block1 = [n for n in seen if block_index(n) == 1]
    for n in block0:  # nothing pruned before block 0: dense statistics
        torch.testing.assert_close(seen[n], dense[n].x_sqnorm, rtol=1e-6, atol=0)
    # block 1 saw the pruned block 0: different from dense ...
    assert any(not torch.allclose(seen[n], dense[n].x_sqnorm, rtol=1e-3) for n in block1)
    # ... and equal to running the pruned block 0 by hand (block 1 still dense) in a full forward
    mods = linear_modules(dense_copy)
    pruned = linear_modules(lm.model)
    with torch.no_grad():
        for n in block0:
            mods[n].weight.copy_(pruned[n].weight)
    own = capture_linear_inputs(dense_copy, block1, ids, batch_size=4)
    for n in block1:
        torch.testing.assert_close(seen[n].double(), ref_x_sqnorm(own[n], 4), rtol=1e-5, atol=1e-6)
    # and the model's block 1 really is the pruned one afterwards
    for n in block1:
        assert float((logical_weight(pruned[n]) == 0).float().mean()) == 0.5


def test_statistics_hooks_leave_block_outputs_unchanged():
    lm = make_lm("llama")
    ids = random_ids(3, 8)
    inputs = capture_block_inputs(lm, ids)
    block = lm.adapter.blocks(lm.model)[0]
    before = torch.cat(run_block(block, inputs).hidden)
    collect_block_stats(block, lm.adapter.prunable_linears(lm.model, 0), inputs, want_hessian=True)
    after = torch.cat(run_block(block, inputs).hidden)
    assert torch.equal(before, after)
    assert not any(m._forward_hooks for m in lm.model.modules())


def test_prune_sequentially_only_requested_blocks():
    lm = make_lm("llama", layers=3)
    ids = random_ids(2, 8)
    called = []
    progress = []
    prune_sequentially(lm, capture_block_inputs(lm, ids), lambda i, lins, st: called.append(i),
                       blocks=iter([1]), progress=lambda a, b: progress.append((a, b)))
    assert called == [1]
    assert progress == [(1, 3), (2, 3)]  # stops after the last requested block
