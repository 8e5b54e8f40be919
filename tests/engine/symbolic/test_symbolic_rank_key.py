"""Mask equivalence: rank-preserving outer transforms, and the mask hash that detects them."""

from __future__ import annotations

import pytest
import torch
from prunestudio.engine.masks import NonFiniteScoreError
from prunestudio.engine.symbolic import (
    ProbeLayer,
    layer_mask,
    mask_hash,
    parse,
    rank_key,
    strip_rank_preserving,
    to_text,
)

WANDA = "mul(W,sqrt(X))"

# strictly increasing transforms of the whole Wanda score: same masks, same key
EQUIVALENT = [
    f"sqrt({WANDA})", f"sqr({WANDA})", f"log({WANDA})", f"pow({WANDA})", f"skip({WANDA})",
    f"mms({WANDA})", f"zsn({WANDA})", f"norm1({WANDA})", f"norm2({WANDA})",
    f"tanh(mms({WANDA}))", f"exp(norm2({WANDA}))", f"sqrt(mms(sqr({WANDA})))",
    "mul(sqrt(X),W)", f"abs({WANDA})",
]
# not rank-preserving: different key, and these inputs give different masks. tanh and exp
# are increasing in exact arithmetic, but in fp32 tanh saturates to 1 beyond ~9 and exp is
# clamped at 50, so on unbounded scores they merge many weights into ties.
DIFFERENT = [f"neg({WANDA})", "mul(W,X)", f"sub({WANDA},X)", f"log(sub({WANDA},W))",
             f"tanh({WANDA})", f"exp(sqr({WANDA}))"]


def _probes(n: int = 3, seed: int = 0) -> list[ProbeLayer]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        w = torch.randn(16, 64, generator=g)
        x = torch.rand(64, generator=g) * 1000  # X values large enough to saturate tanh / exp
        grad = torch.rand(16, 64, generator=g)
        out.append(ProbeLayer(f"layer{i}", w, x, grad))
    return out


@pytest.mark.parametrize("text", EQUIVALENT)
def test_rank_preserving_transforms_are_stripped(text):
    assert to_text(strip_rank_preserving(parse(text))) in (WANDA, "mul(W,sqrt(X))")
    assert rank_key(parse(text)) == rank_key(parse(WANDA))


@pytest.mark.parametrize("text", DIFFERENT)
def test_other_transforms_are_kept(text):
    assert rank_key(parse(text)) != rank_key(parse(WANDA))


@pytest.mark.parametrize("text", EQUIVALENT)
@pytest.mark.parametrize("setting", [dict(scope="row"), dict(scope="matrix"), dict(nm=(2, 4))])
def test_rank_preserving_transforms_give_identical_masks_and_hashes(text, setting):
    probes = _probes()
    for p in probes:
        assert torch.equal(layer_mask(parse(text), p, 0.5, **setting),
                           layer_mask(parse(WANDA), p, 0.5, **setting))
    assert mask_hash(parse(text), probes, 0.5, **setting) == mask_hash(parse(WANDA), probes, 0.5,
                                                                       **setting)


@pytest.mark.parametrize("text", DIFFERENT)
def test_mask_hash_tells_different_metrics_apart(text):
    probes = _probes()
    assert mask_hash(parse(text), probes, 0.5) != mask_hash(parse(WANDA), probes, 0.5)


def test_mask_hash_depends_on_the_settings_and_the_probes():
    probes, tree = _probes(), parse(WANDA)
    h = mask_hash(tree, probes, 0.5)
    assert h == mask_hash(tree, probes, 0.5)
    assert h != mask_hash(tree, probes, 0.6)
    assert h != mask_hash(tree, probes, 0.5, scope="matrix")
    assert h != mask_hash(tree, _probes(seed=1), 0.5)
    assert mask_hash(tree, probes, 0.0, nm=(2, 4)) == mask_hash(tree, probes, 0.5, nm=(2, 4))


def test_mask_hash_errors():
    probes = [ProbeLayer(p.name, p.weight, None, p.grad) for p in _probes()]
    with pytest.raises(ValueError, match="absent from the probe set"):
        mask_hash(parse(WANDA), probes, 0.5)
    with pytest.raises(NonFiniteScoreError):
        mask_hash(parse("pow(pow(exp(G)))"), [ProbeLayer("l", torch.ones(2, 4),
                                                          grad=torch.full((2, 4), 60.0))], 0.5)
