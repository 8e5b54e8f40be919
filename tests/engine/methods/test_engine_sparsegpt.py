"""SparseGPT: the OBS update against a column-by-column reference written from the paper,
its advantage over mask-only pruning, its per-block masks and its explicit failures."""

from __future__ import annotations

import pytest
import torch
from prunestudio.engine.calibration import LayerStats
from prunestudio.engine.masks import NonFiniteScoreError
from prunestudio.engine.methods import get_method
from prunestudio.engine.methods.base import LayerInputs, LayerTarget
from prunestudio.engine.methods.sparsegpt import CholeskyError, sparsegpt_update
from prunestudio.engine.models.adapters import PrunableLinear


def _correlated_inputs(tokens: int, width: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens, rank, generator=g)
    a = torch.randn(rank, width, generator=g)
    return z @ a + 0.1 * torch.randn(tokens, width, generator=g)


def _hessian(x: torch.Tensor, nsamples: int) -> torch.Tensor:
    return (2.0 / nsamples) * x.t().double() @ x.double()


def ref_sparsegpt(W: torch.Tensor, H: torch.Tensor, *, sparsity: float | None = None,
                  nm: tuple[int, int] | None = None, blocksize: int = 128,
                  damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023, Alg. 1) written out column by column in float64.

    Columns are processed left to right. When column j is reached, the columns < j are frozen,
    so the inverse Hessian governing the update is that of the remaining columns,
    H_F⁻¹ = (H[j:, j:])⁻¹ (the paper's sequence of eliminated inverses, computed explicitly
    here instead of through a Cholesky factor). A weight p = (r, j) selected for pruning is set
    to zero and the OBS update δ = −(w_p / [H_F⁻¹]_jj) · H_F⁻¹[j, :] is applied to the rest of
    row r. The saliency of weight (r, c) is w² / [(H[c:, c:])⁻¹]_00, evaluated on the current
    weights when its mask is chosen: unstructured masks once per block of `blocksize` columns
    over all rows (the lowest int(rows · width · s)), N:M masks once per group of M columns.
    """
    W = W.double().clone()
    H = H.double().clone()
    rows, cols = W.shape
    assert bool((torch.diag(H) > 0).all()), "reference handles no dead inputs"
    H = H + damp * torch.diag(H).mean() * torch.eye(cols, dtype=torch.float64)
    inv = [torch.linalg.inv(H[c:, c:]) for c in range(cols)]
    mask = torch.zeros(rows, cols, dtype=torch.bool)

    def saliency(r: int, c: int) -> float:
        return float(W[r, c] ** 2 / inv[c][0, 0])

    for j in range(cols):
        if nm is None and j % blocksize == 0:
            block = range(j, min(j + blocksize, cols))
            cands = sorted((saliency(r, c), r * len(block) + (c - j), r, c)
                            for r in range(rows) for c in block)
            k = int(rows * len(block) * sparsity)
            for _, _, r, c in cands[:k]:
                mask[r, c] = True
        if nm is not None and j % nm[1] == 0:
            n, m = nm
            for r in range(rows):
                group = sorted((saliency(r, c), c) for c in range(j, j + m))
                for _, c in group[:n]:
                    mask[r, c] = True
        Hf_inv = inv[j]
        for r in range(rows):
            q = 0.0 if mask[r, j] else float(W[r, j])
            err = (float(W[r, j]) - q) / float(Hf_inv[0, 0])
            W[r, j:] -= err * Hf_inv[0, :]
            W[r, j] = q
    return W, mask


@pytest.mark.parametrize(
    "shape,kw",
    [
        ((4, 8), dict(sparsity=0.5, blocksize=8)),
        ((4, 8), dict(sparsity=0.5, blocksize=128)),
        ((5, 16), dict(sparsity=0.3, blocksize=8)),  # two lazy blocks
        ((4, 8), dict(nm=(2, 4), blocksize=8)),
        ((3, 16), dict(nm=(3, 8), blocksize=8)),
    ],
)
def test_obs_update_matches_column_by_column_reference(shape, kw):
    rows, cols = shape
    g = torch.Generator().manual_seed(cols + rows)
    W = torch.randn(rows, cols, generator=g)
    H = _hessian(_correlated_inputs(64, cols, rank=cols // 2, seed=cols), nsamples=4)
    nm = kw.get("nm")
    target = LayerTarget(kw.get("sparsity", nm[0] / nm[1] if nm else 0.0), nm)
    new_w, mask = sparsegpt_update(W, H.float(), target, blocksize=kw["blocksize"])
    ref_w, ref_mask = ref_sparsegpt(W, H, sparsity=kw.get("sparsity"), nm=nm,
                                    blocksize=kw["blocksize"])
    assert torch.equal(mask, ref_mask)
    assert torch.equal(new_w == 0, ref_mask)
    torch.testing.assert_close(new_w.double(), ref_w, rtol=1e-4, atol=1e-4)
    # the update really moved the kept weights (it is not mask-only)
    assert not torch.allclose(new_w[~mask], W[~mask])


def test_inputs_are_not_modified_and_dead_inputs_are_zeroed():
    g = torch.Generator().manual_seed(0)
    x = _correlated_inputs(64, 16, rank=16, seed=0)
    x[:, 5] = 0  # an input that is never active: H_55 = 0
    H = _hessian(x, 4).float()
    W = torch.randn(8, 16, generator=g)
    W0, H0 = W.clone(), H.clone()
    new_w, mask = sparsegpt_update(W, H, LayerTarget(0.5), blocksize=16)
    assert torch.equal(W, W0) and torch.equal(H, H0)
    assert bool(torch.isfinite(new_w).all())
    assert bool((new_w[:, 5] == 0).all())
    assert int((new_w == 0).sum()) >= int(mask.sum()) == 64


def _layer(weight: torch.Tensor) -> tuple[torch.nn.Linear, PrunableLinear]:
    mod = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        mod.weight.copy_(weight)
    return mod, PrunableLinear("model.layers.0.mlp.down_proj", 0, "down", mod)


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_output_error_below_mask_only_wanda(sparsity):
    tokens, width, nsamples = 512, 64, 8
    x = _correlated_inputs(tokens, width, rank=12, seed=1)
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, width, generator=g)
    stats = LayerStats(nsamples, (x * x).sum(0) / nsamples, _hessian(x, nsamples).float())

    errors = {}
    for name in ("wanda", "sparsegpt"):
        method = get_method(name)
        mod, lin = _layer(W)
        method.prune_layer(lin, LayerTarget(sparsity), LayerInputs(stats),
                           method.validate_options({}))
        assert abs(float((mod.weight == 0).float().mean()) - sparsity) < 1e-3
        errors[name] = float(torch.linalg.norm(x @ mod.weight.detach().t() - x @ W.t()))
    assert errors["sparsegpt"] < 0.8 * errors["wanda"], errors


@pytest.mark.parametrize("blocksize", [128, 64])
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_exact_zero_count_per_block(sparsity, blocksize):
    rows, cols = 16, 256
    x = _correlated_inputs(600, cols, rank=cols, seed=2)
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(2))
    new_w, mask = sparsegpt_update(W, _hessian(x, 8).float(), LayerTarget(sparsity),
                                   blocksize=blocksize)
    k = int(rows * blocksize * sparsity)
    for b0 in range(0, cols, blocksize):
        assert int((new_w[:, b0 : b0 + blocksize] == 0).sum()) == k
        assert int(mask[:, b0 : b0 + blocksize].sum()) == k
    # chosen over all rows of the block: rows do not all get the same count
    assert len(set((new_w[:, :blocksize] == 0).sum(1).tolist())) > 1


def test_indefinite_hessian_raises_cholesky_error_naming_the_layer():
    # diagonal 1 (no dead input), eigenvalues −1 (×7) and 15: 1% damping cannot fix it
    H = -torch.eye(8) + 2 * torch.ones(8, 8)
    W = torch.randn(4, 8)
    with pytest.raises(CholeskyError, match="not positive definite"):
        sparsegpt_update(W, H, LayerTarget(0.5), where="model.layers.3.self_attn.q_proj")
    mod, lin = _layer(W)
    method = get_method("sparsegpt")
    with pytest.raises(CholeskyError, match=r"model\.layers\.0\.mlp\.down_proj.*damp"):
        method.prune_layer(lin, LayerTarget(0.5), LayerInputs(LayerStats(4, None, H)),
                           method.validate_options({}))
    assert torch.equal(mod.weight.detach(), W), "a failed layer must stay untouched"


def test_singular_psd_hessian_is_handled_by_damping():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 3, generator=g) @ torch.randn(3, 16, generator=g)  # rank 3, none dead
    H = (2.0 / 4) * x.t() @ x
    assert torch.linalg.matrix_rank(H) < 16
    new_w, mask = sparsegpt_update(torch.randn(4, 16), H, LayerTarget(0.5))
    assert bool(torch.isfinite(new_w).all()) and int(mask.sum()) == 32


def test_non_finite_hessian_is_an_explicit_error():
    x = _correlated_inputs(64, 8, rank=8, seed=4)
    H = _hessian(x, 4).float()
    H[2, 2] = float("nan")
    with pytest.raises(NonFiniteScoreError):
        sparsegpt_update(torch.randn(4, 8), H, LayerTarget(0.5))
    H = _hessian(x, 4).float()
    H[1, 3] = H[3, 1] = float("inf")
    with pytest.raises(NonFiniteScoreError):
        sparsegpt_update(torch.randn(4, 8), H, LayerTarget(0.5))


def test_sparsegpt_on_transposed_view_gpt2_orientation():
    """A (out, in) view of a Conv1D-style (in, out) storage is updated in place correctly."""
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(12, 16)  # nx=16 inputs, nf=12 outputs; weight stored (16, 12)
    torch.manual_seed(5)
    with torch.no_grad():
        conv.weight.normal_()
    logical = conv.weight.detach().t().clone()
    x = _correlated_inputs(64, 16, rank=16, seed=5)
    H = _hessian(x, 4).float()
    expect, _ = sparsegpt_update(logical, H, LayerTarget(0.5), blocksize=16)
    lin = PrunableLinear("transformer.h.0.mlp.c_fc", 0, "fc1", conv, transposed=True)
    method = get_method("sparsegpt")
    method.prune_layer(lin, LayerTarget(0.5), LayerInputs(LayerStats(4, None, H)),
                       method.validate_options({"blocksize": 16}))
    torch.testing.assert_close(conv.weight.detach().t(), expect, rtol=1e-6, atol=1e-6)


def test_non_finite_weights_or_hessian_raise_non_finite_score_error():
    x = _correlated_inputs(64, 8, rank=8, seed=6)
    H = _hessian(x, 4).float()
    W = torch.randn(4, 8)
    W[1, 2] = float("nan")
    with pytest.raises(NonFiniteScoreError, match="weight of L7.*1 non-finite"):
        sparsegpt_update(W, H, LayerTarget(0.5), where="L7")
    H[4, 0] = H[0, 4] = float("-inf")
    with pytest.raises(NonFiniteScoreError, match="Hessian of L7.*2 non-finite"):
        sparsegpt_update(torch.randn(4, 8), H, LayerTarget(0.5), where="L7")


def test_nm_groups_may_not_straddle_lazy_blocks():
    x = _correlated_inputs(64, 16, rank=16, seed=7)
    H = _hessian(x, 4).float()
    with pytest.raises(ValueError, match="blocksize 6 must be a multiple of M=4"):
        sparsegpt_update(torch.randn(4, 16), H, LayerTarget(0.5, (2, 4)), blocksize=6)
    # one block wider than the matrix: nothing can straddle
    new_w, _ = sparsegpt_update(torch.randn(4, 15), H[:15, :15], LayerTarget(1 / 3, (1, 3)))
    assert bool(((new_w == 0).reshape(4, 5, 3).sum(-1) == 1).all())
