"""Perplexity against a per-position log-softmax loop, on random ids and on real text."""

from __future__ import annotations

import math

import pytest
import torch
from engine_testlib import ARCHS, make_lm, random_ids, ref_token_nll
from prunestudio.engine.data.sources import load_text
from prunestudio.engine.data.windows import Windows, WindowSpec, build_windows
from prunestudio.engine.evaluate.perplexity import perplexity, window_nll


def _windows(ids: torch.Tensor) -> Windows:
    n, seqlen = ids.shape
    spec = WindowSpec(source="pydoc", seqlen=seqlen, n=n)
    spans = tuple((i * seqlen, (i + 1) * seqlen) for i in range(n))
    return Windows(spec, ids, spans, text_hash="t", tokens_hash="k")


@pytest.mark.parametrize("arch", ARCHS)
def test_perplexity_equals_exp_of_mean_token_nll(arch):
    lm = make_lm(arch, seed=8)
    ids = random_ids(5, 12, seed=8)
    res = perplexity(lm.model, _windows(ids), lm.device, batch_size=2)  # batches 2, 2, 1
    total, count = ref_token_nll(lm.model, ids)
    assert count == 5 * 11
    assert res.n_tokens == count and res.n_windows == 5 and res.seqlen == 12
    assert res.nll_sum == pytest.approx(total, rel=1e-6)
    assert res.ppl == pytest.approx(math.exp(total / count), rel=1e-6)
    # batch size does not change the figure
    assert perplexity(lm.model, _windows(ids), lm.device, batch_size=5).ppl == pytest.approx(
        res.ppl, rel=1e-6)


def test_window_nll_is_per_window_sum():
    lm = make_lm("llama", seed=9)
    ids = random_ids(3, 9, seed=9)
    nll = window_nll(lm.model, ids, lm.device, batch_size=2)
    assert nll.shape == (3,) and nll.dtype == torch.float64
    for i in range(3):
        total, count = ref_token_nll(lm.model, ids[i : i + 1])
        assert count == 8
        assert float(nll[i]) == pytest.approx(total, rel=1e-6)


def test_perplexity_on_real_text_windows(byte_tok):
    spec = WindowSpec(source="shakespeare", split="hamlet", seqlen=24, n=3, offset=100)
    windows = build_windows(spec, byte_tok)
    raw = load_text("shakespeare", "hamlet").text.encode()
    # byte-level tokenizer: token i is byte i of the text, so the windows are checkable by hand
    assert windows.spans == ((100, 124), (124, 148), (148, 172))
    decoded = byte_tok.decode(windows.ids.reshape(-1).tolist())
    assert decoded.encode() == raw[100:172]

    lm = make_lm("gpt2", seed=10)
    res = perplexity(lm.model, windows, lm.device, batch_size=2)
    total, count = ref_token_nll(lm.model, windows.ids)
    assert res.ppl == pytest.approx(math.exp(total / count), rel=1e-6)
    rec = res.metric(fidelity="full", role="in_domain", windows=windows)
    assert rec["value"] == res.ppl and rec["seqlen"] == 24 and rec["n_samples"] == 3
    assert rec["dataset"] == "shakespeare" and rec["split"] == "hamlet"
    assert rec["protocol"]["n_tokens_scored"] == 3 * 23
    assert rec["protocol"]["tokens_hash"] == windows.tokens_hash


def test_overflowing_loss_reports_infinite_perplexity():
    lm = make_lm("llama", seed=11)
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(1e5)  # absurd logits: mean NLL far beyond exp's range
    ids = random_ids(2, 8)
    res = perplexity(lm.model, _windows(ids), lm.device)
    assert res.ppl == math.inf and math.isfinite(res.nll_sum)


@pytest.mark.parametrize("seqlen", [32, 129])
def test_window_nll_is_bit_identical_to_the_sliced_cross_entropy(seqlen):
    """The evaluation skips copying the [:, :-1] logits slice; the sums must not move a bit."""
    import torch.nn.functional as F

    lm = make_lm("llama", layers=2, seed=seqlen)
    ids = random_ids(6, seqlen, seed=seqlen)
    got = window_nll(lm.model, ids, "cpu", batch_size=4)
    expect = []
    with torch.no_grad():
        for start in range(0, 6, 4):
            x = ids[start : start + 4]
            logits = lm.model(x, use_cache=False).logits[:, :-1, :].float()
            t = x[:, 1:]
            expect.append(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1),
                                          reduction="none").reshape(t.shape).sum(1))
    assert torch.equal(got, torch.cat(expect).double())
