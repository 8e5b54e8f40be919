"""Reconstruction-error minimisation (Shin et al. 2024): the mask is fixed, the block errors
fall, every block is fitted, and the recorded errors match an independent forward."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import ARCHS, make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.pruning import WeightSnapshot, prune_model
from prunestudio.engine.reconstruction import GIB, _train, memory_estimate

from prunestudio.schema.reconstruction import ReconstructionSettings
from prunestudio.schema.spec import CandidateSpec

MODES = ("lr", "br", "gp")


def _setup(arch: str = "llama", layers: int = 3, n: int = 8, seqlen: int = 16):
    lm = make_lm(arch, layers=layers)
    ids = random_ids(n, seqlen)
    stats = StatsCache(lm, ids, calibration_hash(ids), batch_size=3, use_disk=False)
    return lm, ids, stats, WeightSnapshot(lm)


def _weights(lm) -> dict[str, torch.Tensor]:
    return {lin.name: lin.weight.detach().clone() for lin in lm.adapter.all_prunable_linears(lm.model)}


def _spec(method: str, mode: str | None, pattern: str = "unstructured", **recipe):
    from prunestudio.schema.spec import Pattern

    p = Pattern.parse(pattern)
    rec = None if mode is None else {"mode": mode, "epochs": 3, "batch_size": 4, "lr": 1e-3,
                                     **recipe}
    return CandidateSpec(method=method, sparsity=0.5 if p.kind != "nm" else 0.0, pattern=p,
                         reconstruction=rec)


def _pruned(lm, stats, snap, spec):
    result = prune_model(lm, spec, stats, snap)
    weights = _weights(lm)
    snap.mark(weights)
    snap.restore()
    return result, weights


def _block_outputs(lm, ids) -> list[torch.Tensor]:
    """Every block's output in one ordinary forward of the whole model (the test's hooks)."""
    outs, handles = [], []
    for block in lm.adapter.blocks(lm.model):
        handles.append(block.register_forward_hook(
            lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o).detach().clone())))
    try:
        with torch.no_grad():
            lm.model(ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return outs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method,pattern", [("magnitude", "unstructured"),
                                            ("wanda", "unstructured"),
                                            ("sparsegpt", "unstructured"), ("wanda", "2:4")])
def test_reconstruction_keeps_the_mask_and_changes_the_kept_weights(method, pattern, mode):
    lm, _, stats, snap = _setup()
    _, plain = _pruned(lm, stats, snap, _spec(method, None, pattern))
    result, fitted = _pruned(lm, stats, snap, _spec(method, mode, pattern))
    for name, w in plain.items():
        if method == "magnitude" or block_of(name) == 0:  # later blocks' masks follow inputs
            assert torch.equal(fitted[name] == 0, w == 0), name
        assert int((fitted[name] == 0).sum()) == int((w == 0).sum()), name
    assert result.overall_sparsity == pytest.approx(0.5)
    # every block was fitted: its kept weights moved (not only block 0's, the reference's bug)
    for i in range(3):
        names = [n for n in plain if block_of(n) == i]
        assert any(not torch.equal(fitted[n], plain[n]) for n in names), f"block {i} untouched"


def block_of(name: str) -> int:
    import re

    return int(re.search(r"\.(\d+)\.", name).group(1))


def test_the_fit_never_revives_a_pruned_weight_under_weight_decay():
    lm, _, stats, snap = _setup(layers=2)
    _, fitted = _pruned(lm, stats, snap, _spec("wanda", "br", weight_decay=0.5, lr=5e-2))
    _, plain = _pruned(lm, stats, snap, _spec("wanda", None))
    for name in plain:
        if block_of(name) == 0:
            assert torch.equal(fitted[name] == 0, plain[name] == 0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", MODES)
def test_every_block_error_falls_and_matches_an_independent_forward(arch, mode):
    """The recorded per-block errors: each falls; the error against the dense model after the
    fit equals the one computed from ordinary forwards of the dense and the pruned model."""
    lm, ids, stats, snap = _setup(arch, layers=3)
    dense_outs = _block_outputs(lm, ids)
    spec = _spec("wanda", mode, epochs=4)
    result = prune_model(lm, spec, stats, snap)
    pruned_outs = _block_outputs(lm, ids)
    snap.restore()
    rec = result.reconstruction
    assert [b.index for b in rec.blocks] == [0, 1, 2]
    for b, d, p in zip(rec.blocks, dense_outs, pruned_outs, strict=True):
        assert b.error_after < b.error_before, b
        assert b.calib_after < b.calib_before or mode == "lr", b
        reference = float(((p.double() - d.double()) ** 2).sum() / (d.double() ** 2).sum())
        assert b.calib_after == pytest.approx(reference, rel=1e-4), b.index
        fitted = len(lm.adapter.prunable_linears(lm.model, b.index)) if mode == "lr" else 1
        assert len(b.curve) == 4 and b.steps == 4 * 2 * fitted  # 8 windows in batches of 4
        if mode == "gp":  # its target is the dense model's hidden states
            assert b.error_before == pytest.approx(b.calib_before, rel=1e-9)


def test_zero_epochs_measure_only_and_prune_exactly_as_the_plain_walk():
    lm, _, stats, snap = _setup()
    for method in ("wanda", "sparsegpt"):
        _, plain = _pruned(lm, stats, snap, _spec(method, None))
        result, zero = _pruned(lm, stats, snap, _spec(method, "br", epochs=0))
        for name in plain:
            torch.testing.assert_close(zero[name], plain[name], rtol=0, atol=0)
        for b in result.reconstruction.blocks:  # the same weights, other batching of windows
            assert b.steps == 0 and b.curve == []
            assert b.error_after == pytest.approx(b.error_before, rel=1e-5)
            assert b.calib_after == pytest.approx(b.calib_before, rel=1e-5)


def test_samples_fit_on_the_first_windows_only_and_micro_batches_give_the_same_fit():
    lm, _, stats, snap = _setup(n=8)
    r4, w4 = _pruned(lm, stats, snap, _spec("wanda", "br", samples=4, batch_size=4))
    assert r4.reconstruction.n_windows == 4
    r8, w8 = _pruned(lm, stats, snap, _spec("wanda", "br", batch_size=4))
    assert r8.reconstruction.n_windows == 8
    assert any(not torch.equal(w4[n], w8[n]) for n in w4)
    _, micro = _pruned(lm, stats, snap, _spec("wanda", "br", batch_size=4, micro_batch_size=2))
    for n in w8:
        torch.testing.assert_close(micro[n], w8[n], rtol=1e-4, atol=1e-6)


def test_more_samples_than_windows_is_refused_with_the_count():
    lm, _, stats, snap = _setup(n=4)
    with pytest.raises(ValueError, match="samples = 9 but the calibration set has 4"):
        prune_model(lm, _spec("wanda", "br", samples=9), stats, snap)
    snap.restore()


def test_the_adam_fit_approaches_the_masked_least_squares_optimum():
    """LR's fit of one masked linear map against the closed-form optimum (each row's kept
    weights by least squares): never below it (the mask holds), and close after enough steps."""
    g = torch.Generator().manual_seed(0)
    n, t, d_in, d_out = 16, 8, 12, 6
    x = torch.randn(n, t, d_in, generator=g)
    w_dense = torch.randn(d_out, d_in, generator=g)
    y = x @ w_dense.T
    mask = torch.rand(d_out, d_in, generator=g) > 0.5
    lin = torch.nn.Linear(d_in, d_out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w_dense * mask)
    settings = ReconstructionSettings(mode="lr", epochs=300, lr=2e-2, batch_size=16,
                                      schedule="constant")
    _train(lambda xb: lin(xb), [lin.weight], x, y, settings, torch.device("cpu"), 0)
    assert torch.equal(lin.weight.detach() == 0, ~mask | (w_dense * mask == 0))

    flat_x, flat_y = x.reshape(-1, d_in).double(), y.reshape(-1, d_out).double()
    best = torch.zeros(d_out, d_in, dtype=torch.float64)
    for r in range(d_out):
        cols = mask[r].nonzero().flatten()
        sol = torch.linalg.lstsq(flat_x[:, cols], flat_y[:, r:r + 1]).solution
        best[r, cols] = sol.flatten()

    def err(w):
        return float(((flat_x @ w.T - flat_y) ** 2).sum() / (flat_y ** 2).sum())

    start = err((w_dense * mask).double())
    optimum = err(best)
    fitted = err(lin.weight.detach().double())
    assert optimum <= fitted + 1e-9
    assert fitted - optimum < 0.02 * (start - optimum)


def test_seven_billion_block_wise_fits_24_gib_only_with_the_streams_offloaded():
    """The arithmetic of docs/reconstruction.md: LLaMA-2-7B shapes, 128 windows of 2048."""
    shape = dict(hidden=4096, intermediate=11008, n_blocks=32, vocab=32000, n_windows=128,
                 seqlen=2048, micro_batch=4)
    offloaded = memory_estimate(**shape)
    resident = memory_estimate(**shape, offload=False)
    assert offloaded["total"] < 24 * 1e9 / GIB  # a "24 GB" card
    assert resident["total"] > 24
    assert offloaded["model"] == pytest.approx(12.55, abs=0.05)  # 6.74 B weights in fp16
    assert resident["streams"] == pytest.approx(5 * 128 * 2048 * 4096 * 2 / GIB)
    assert memory_estimate(**{**shape, "micro_batch": 8})["activations"] == pytest.approx(
        2 * offloaded["activations"])


def test_a_bf16_model_is_fitted_in_fp32_and_given_back_in_bf16_with_its_mask():
    lm, _, stats, snap = _setup(layers=2)
    lm.model.to(torch.bfloat16)
    lm.dtype = torch.bfloat16
    stats = StatsCache(lm, stats.calib_ids, "bf16", batch_size=3, use_disk=False)
    snap = WeightSnapshot(lm)
    buffers = {n: (b.dtype, b.clone()) for n, b in lm.model.named_buffers()}
    _, plain = _pruned(lm, stats, snap, _spec("wanda", None))
    result, fitted = _pruned(lm, stats, snap, _spec("wanda", "gp"))
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    for n, b in lm.model.named_buffers():
        assert b.dtype == buffers[n][0] and torch.equal(b, buffers[n][1]), n
    for name, w in plain.items():
        assert fitted[name].dtype == torch.bfloat16
        if block_of(name) == 0:
            assert torch.equal(fitted[name] == 0, w == 0), name
    assert all(b.error_after < b.error_before for b in result.reconstruction.blocks)


@pytest.mark.parametrize("arch,mode", [("mixtral", "br"), ("gemma3_text", "gp")])
def test_block_wise_reconstruction_on_experts_and_on_alternating_attention(arch, mode):
    """Mixtral: every expert slice of the 3-D parameters keeps its mask and is fitted; Gemma 3:
    each block is fitted with its own (sliding / global) mask — the recorded error after the
    fit equals the one from ordinary forwards of the whole model."""
    lm, ids, stats, snap = _setup(arch, layers=2, seqlen=24)
    dense_outs = _block_outputs(lm, ids)
    _, plain = _pruned(lm, stats, snap, _spec("wanda", None))
    result = prune_model(lm, _spec("wanda", mode, epochs=3), stats, snap)
    fitted = _weights(lm)
    pruned_outs = _block_outputs(lm, ids)
    snap.restore()
    for name, w in plain.items():
        if block_of(name) == 0:
            assert torch.equal(fitted[name] == 0, w == 0), name
        assert int((fitted[name] == 0).sum()) == int((w == 0).sum()), name
    moved = [n for n in plain if not torch.equal(fitted[n], plain[n])]
    if arch == "mixtral":
        assert any("experts.gate_up_proj[" in n for n in moved)
        assert any("experts.down_proj[" in n for n in moved)
    for b, d, p in zip(result.reconstruction.blocks, dense_outs, pruned_outs, strict=True):
        reference = float(((p.double() - d.double()) ** 2).sum() / (d.double() ** 2).sum())
        assert b.calib_after == pytest.approx(reference, rel=1e-4), b.index


def test_layer_wise_reconstruction_of_stacked_experts_is_refused_before_the_study():
    from prunestudio.engine.preflight import PreflightError, check_specs

    lm = make_lm("mixtral")
    with pytest.raises(PreflightError, match=r"reconstruction mode 'lr' .* allowed on a "
                       r"mixture-of-experts model: reconstruction mode 'br' or 'gp'"):
        check_specs(lm, [_spec("wanda", "lr")])
    check_specs(lm, [_spec("wanda", "br")])  # block-wise is fine
    check_specs(make_lm("llama"), [_spec("wanda", "lr")])
