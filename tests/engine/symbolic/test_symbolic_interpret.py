"""The interpreter: op definitions, shapes, numerical safety on extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prunestudio.engine.symbolic import (
    EPS,
    evaluate,
    known_metric,
    parse,
)
from symbolic_testlib import trees

OUT, IN = 3, 4




# zeros, subnormals, tiny, ordinary, huge, near fp32 max
extreme = st.one_of(
    st.sampled_from([0.0, 1e-45, 1e-38, 1e-30, 1e-8, 0.5, 1.0, 3.0, 1e8, 1e30, 3.0e38, float(torch.finfo(torch.float32).max)]),
    st.floats(min_value=0, max_value=float(torch.finfo(torch.float32).max), allow_nan=False, allow_infinity=False, width=32),
)


def tensors(shape: tuple[int, ...], values=extreme) -> st.SearchStrategy[torch.Tensor]:
    n = math.prod(shape)
    return st.lists(values, min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.float32).reshape(shape)
    )


@settings(max_examples=300, deadline=None)
@given(tree=trees(), W=tensors((OUT, IN)), G=tensors((OUT, IN)), X=tensors((IN,)))
def test_random_trees_never_crash_and_have_the_weight_shape(tree, W, G, X):
    out = evaluate(tree, W=W, X=X, G=G)
    assert out.shape == (OUT, IN)
    assert out.dtype == torch.float32
    assert out.is_contiguous()


def _v(text: str, W, X=None, G=None) -> torch.Tensor:
    return evaluate(parse(text), W=W, X=X, G=G)


def test_op_definitions_on_known_values():
    W = torch.tensor([[0.0, 1.0, 4.0, 9.0]])
    assert torch.equal(_v("sqr(W)", W), W * W)
    assert torch.equal(_v("neg(W)", W), -W)
    assert torch.equal(_v("sqrt(neg(W))", W), W.sqrt())  # sqrt reads |x|
    assert torch.allclose(_v("log(W)", W), torch.log(W + EPS))
    assert _v("log(W)", W)[0, 0] == pytest.approx(math.log(EPS))
    assert torch.equal(_v("pow(neg(W))", W), -(W**3))  # odd, sign-preserving cube
    assert torch.equal(_v("skip(W)", W), W)
    assert torch.allclose(_v("mms(W)", W), W / 9.0)
    assert torch.allclose(_v("norm1(W)", W), W / 14.0)
    assert torch.allclose(_v("norm2(W)", W), W / W.norm())
    z = _v("zsn(W)", W)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(z.std(correction=0)) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(_v("tanh(W)", W), torch.tanh(W))


def test_exp_is_clamped_and_div_guarded():
    W = torch.tensor([[0.0, 1e3]])
    assert torch.allclose(_v("exp(W)", W), torch.tensor([[1.0, math.exp(50.0)]]))
    assert torch.allclose(_v("exp(neg(W))", W), torch.tensor([[1.0, math.exp(-50.0)]]))
    num = torch.tensor([[1.0, 1.0]])
    G = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(_v("div(W,G)", num, G=G), torch.tensor([[1 / EPS, 0.5]]))
    # sign-preserving: dividing by a negative denominator stays negative, also near 0
    assert torch.all(_v("div(W,neg(G))", num, G=G)[0, 1] < 0)
    assert torch.all(torch.isfinite(_v("div(W,sub(G,G))", num, G=G)))


def test_whole_tensor_ops_on_constant_input_are_finite():
    W = torch.full((2, 3), 5.0)
    for name in ("mms", "zsn", "norm1", "norm2"):
        assert torch.all(torch.isfinite(_v(f"{name}(sub(W,W))", W)))
    assert torch.equal(_v("mms(W)", W), torch.zeros(2, 3))


def test_norms_do_not_overflow_on_huge_values():
    W = torch.tensor([[3e30, 4e30]])
    assert torch.allclose(_v("norm2(W)", W), torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(_v("norm1(W)", W), torch.tensor([[3 / 7, 4 / 7]]))
    assert torch.allclose(_v("zsn(W)", W), torch.tensor([[-1.0, 1.0]]), atol=1e-5)


def test_x_only_subtrees_are_rows_broadcast_over_w():
    W = torch.rand(5, 4)
    X = torch.tensor([1.0, 2.0, 3.0, 5.0])
    out = _v("mms(X)", W, X=X)
    assert out.shape == (5, 4)
    assert torch.allclose(out, ((X - 1) / 4).expand(5, 4))  # scaled over the in columns
    assert torch.allclose(_v("norm1(X)", W, X=X), (X / X.sum()).expand(5, 4))


def test_known_metrics_match_their_formulas():
    torch.manual_seed(0)
    W, G, X = torch.rand(6, 8), torch.rand(6, 8), torch.rand(8) * 10
    xs = X.sqrt().reshape(1, -1)
    assert torch.equal(evaluate(known_metric("magnitude"), W=W), W)
    assert torch.equal(evaluate(known_metric("wanda"), W=W, X=X), W * xs)
    assert torch.equal(evaluate(known_metric("gblm"), W=W, X=X, G=G), W * xs + W * G)
    best = W * W * (G - G.min()) / (G.max() - G.min() + EPS)
    assert torch.allclose(evaluate(known_metric("pruner_zero"), W=W, G=G), best)
    assert torch.equal(evaluate(known_metric("pruner_zero"), W=W, G=G),
                       evaluate(known_metric("pruner_zero_released"), W=W, G=G))


def test_result_never_aliases_the_callers_tensor():
    W = torch.rand(2, 3)
    for text in ("W", "skip(W)", "skip(skip(W))"):
        out = _v(text, W)
        out.zero_()
        assert W.abs().sum() > 0


def test_leaf_validation_errors():
    W = torch.rand(2, 3)
    with pytest.raises(ValueError, match="reads X"):
        _v("mul(W,X)", W)
    with pytest.raises(ValueError, match="reads G"):
        _v("mul(W,G)", W)
    with pytest.raises(ValueError, match="3 input columns"):
        _v("mul(W,X)", W, X=torch.ones(4))
    with pytest.raises(ValueError, match="shape"):
        _v("mul(W,G)", W, G=torch.ones(3, 2))
    with pytest.raises(ValueError, match="non-negative"):
        _v("W", -W)
    with pytest.raises(ValueError, match="2-D"):
        _v("W", torch.ones(3))


def test_inputs_are_computed_in_fp32():
    W = torch.rand(2, 3, dtype=torch.bfloat16)
    X = torch.rand(3, dtype=torch.float64)
    assert _v("mul(W,sqrt(X))", W, X=X).dtype == torch.float32


@pytest.mark.parametrize("shape", [(1536, 576), (300, 200), (1, 70000), (40000, 3), (7,)])
def test_total_is_the_same_on_any_thread_count_and_close_to_a_float64_sum(shape):
    from prunestudio.engine.symbolic.ops import total

    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))).exp()
    threads = torch.get_num_threads()
    try:
        sums = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            sums.append(total(x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(s, sums[0]) for s in sums)
    reference = math.fsum(x.double().reshape(-1).tolist())  # exact, then rounded once
    assert float(sums[0]) == pytest.approx(reference, rel=1e-6)


def test_whole_operand_ops_give_the_same_bits_on_any_thread_count():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(2, 70000, generator=g).exp()  # one reduction over more than torch's grain
    G = torch.randn(2, 70000, generator=g).exp()
    threads = torch.get_num_threads()
    try:
        for text in ("zsn(W)", "norm1(G)", "norm2(mul(W,G))", "sub(mms(W),abs(zsn(G)))"):
            results = []
            for n in (1, 2):
                torch.set_num_threads(n)
                results.append(_v(text, W, G=G))
            assert torch.equal(results[0], results[1]), text
    finally:
        torch.set_num_threads(threads)
    # and the definitions: population std, l1 and l2 norms (float64 references)
    w = W.double()
    assert torch.allclose(_v("zsn(W)", W).double(), (w - w.mean()) / w.std(correction=0),
                          atol=1e-5)
    assert torch.allclose(_v("norm2(W)", W).double(), w / w.norm(), rtol=1e-5)
