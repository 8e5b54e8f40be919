"""The `symbolic` pruning method: options, needs, and exact agreement with the built-ins."""

from __future__ import annotations

import pytest
import torch
from prunestudio.engine.calibration import LayerStats, StatsCache, calibration_hash
from prunestudio.engine.masks import NonFiniteScoreError
from prunestudio.engine.methods import get_method, method_names
from prunestudio.engine.methods.base import LayerInputs, LayerTarget
from prunestudio.engine.models.adapters import PrunableLinear, adapter_for
from prunestudio.engine.models.loading import LoadedModel, model_fingerprint
from prunestudio.engine.pruning import WeightSnapshot, prune_model
from prunestudio.engine.symbolic import KNOWN_METRICS, mask_hash, parse, probe_layers
from torch import nn

from prunestudio.schema.spec import CandidateSpec

# (built-in method, its options, the same metric as an expression, symbolic scope)
PAIRS = [
    ("magnitude", {"scope": "row"}, KNOWN_METRICS["magnitude"], "row"),
    ("magnitude", {"scope": "matrix"}, KNOWN_METRICS["magnitude"], "matrix"),
    ("wanda", {}, KNOWN_METRICS["wanda"], "row"),
    ("gblm", {}, KNOWN_METRICS["gblm"], "row"),
]


def test_registered_with_options_validated_at_spec_time():
    assert "symbolic" in method_names()
    spec = CandidateSpec(method="symbolic", sparsity=0.5,
                         options={"expression": "mul(sqr(W),mms(G))"})
    assert spec.label.startswith("symbolic")
    opts = get_method("symbolic").validate_options({"expression": " Mul(w, SQRT(x)) "})
    assert opts.expression == "mul(W,sqrt(X))"  # canonical text
    assert opts.scope == "row"


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"expression": "mul(W,"}, ["'symbolic'", "at position 6", "got end of text", "expression"]),
        ({"expression": "mull(W,X)"}, ["unknown name 'mull'", "binary ops add, sub, mul, div"]),
        ({"expression": "sqrt(W,X)"}, ["'sqrt' takes 1 argument(s), got 2"]),
        ({}, ["expression"]),
        ({"expression": "W", "scope": "block"}, ["scope"]),
        ({"expression": "W", "threshold": 1}, ["threshold", "allowed options: expression, scope"]),
    ],
)
def test_bad_options_are_clear_errors(options, fragments):
    with pytest.raises(ValueError) as info:
        CandidateSpec(method="symbolic", sparsity=0.5, options=options)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_needs_follow_the_expression():
    method = get_method("symbolic")
    needs = {
        text: method.needs(method.validate_options({"expression": text}))
        for text in ("W", "mul(W,sqrt(X))", "mul(W,G)", KNOWN_METRICS["gblm"])
    }
    assert needs == {"W": frozenset(), "mul(W,sqrt(X))": {"x"}, "mul(W,G)": {"grad"},
                     KNOWN_METRICS["gblm"]: {"x", "grad"}}
    assert get_method("wanda").needs(get_method("wanda").validate_options({})) == {"x"}


# ---------------------------------------------------------------- one random layer


def _layer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(32, 12, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(12, 32, generator=g))
    stats = LayerStats(8, torch.rand(32, generator=g) * 50)
    grad = torch.rand(12, 32, generator=g) * 3
    return PrunableLinear("layer", 0, "q", lin), LayerInputs(stats, grad)


@pytest.mark.parametrize(("builtin", "builtin_opts", "expression", "scope"), PAIRS)
@pytest.mark.parametrize("target", [LayerTarget(0.5), LayerTarget(0.3), LayerTarget(0.5, (2, 4))])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_builtin_metrics_as_expressions_give_the_same_mask_on_a_layer(
        builtin, builtin_opts, expression, scope, target, seed):
    lin, inputs = _layer(seed)
    ref = get_method(builtin)
    sym = get_method("symbolic")
    expected = ref.mask(lin, target, inputs, ref.validate_options(builtin_opts))
    got = sym.mask(lin, target, inputs, sym.validate_options({"expression": expression,
                                                              "scope": scope}))
    assert torch.equal(got, expected)


def test_missing_statistics_and_non_finite_scores_are_errors():
    lin, inputs = _layer()
    sym = get_method("symbolic")
    with pytest.raises(RuntimeError, match="activation statistics"):
        sym.mask(lin, LayerTarget(0.5), LayerInputs(None, inputs.grad),
                 sym.validate_options({"expression": "mul(W,X)"}))
    with pytest.raises(RuntimeError, match="gradient statistics"):
        sym.mask(lin, LayerTarget(0.5), LayerInputs(inputs.stats, None),
                 sym.validate_options({"expression": "mul(W,G)"}))
    with pytest.raises(NonFiniteScoreError, match="symbolic score of layer"):
        sym.mask(lin, LayerTarget(0.5), inputs,
                 sym.validate_options({"expression": "pow(pow(exp(X)))"}))


# ---------------------------------------------------------------- a tiny random LLaMA


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNESTUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
        model = LlamaForCausalLM(config).eval()
        lm = LoadedModel(model=model, tokenizer=None, adapter=adapter_for(model), source="tiny",
                         description="tiny random LLaMA", fingerprint=model_fingerprint(model, "t"),
                         device=torch.device("cpu"), dtype=torch.float32)
        ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
        stats = StatsCache(lm, ids, calibration_hash(ids), batch_size=2, use_disk=False)
        yield lm, stats, WeightSnapshot(lm)


def _pruned_weights(tiny, spec: CandidateSpec) -> dict[str, torch.Tensor]:
    lm, stats, snapshot = tiny
    try:
        prune_model(lm, spec, stats, snapshot)
        return {lin.name: lin.weight.clone() for lin in lm.adapter.all_prunable_linears(lm.model)}
    finally:
        snapshot.restore()


@pytest.mark.parametrize(("builtin", "builtin_opts", "expression", "scope"), PAIRS)
@pytest.mark.parametrize("calibration", ["sequential", "dense"])
def test_builtin_metrics_as_expressions_prune_a_tiny_llama_identically(
        tiny, builtin, builtin_opts, expression, scope, calibration):
    common = dict(sparsity=0.5, calibration={"mode": calibration})
    ref = _pruned_weights(tiny, CandidateSpec(method=builtin, options=builtin_opts, **common))
    got = _pruned_weights(tiny, CandidateSpec(
        method="symbolic", options={"expression": expression, "scope": scope}, **common))
    assert ref.keys() == got.keys() and len(ref) == 14
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
        assert 0.45 < float((got[name] == 0).float().mean()) < 0.55


def test_pruner_zero_metric_prunes_the_tiny_llama_and_its_hash_matches_a_stripped_variant(tiny):
    lm, stats, _ = tiny
    weights = _pruned_weights(tiny, CandidateSpec(
        method="symbolic", sparsity=0.5, options={"expression": KNOWN_METRICS["pruner_zero"]}))
    assert all(0.45 < float((w == 0).float().mean()) < 0.55 for w in weights.values())
    probes = probe_layers(lm, stats, count=3)
    assert len(probes) == 3 and probes[0].grad is not None
    best = mask_hash(parse(KNOWN_METRICS["pruner_zero"]), probes, 0.5)
    assert best == mask_hash(parse(KNOWN_METRICS["pruner_zero_released"]), probes, 0.5)
    assert best == mask_hash(parse("sqrt(mul(sqr(W),mms(G)))"), probes, 0.5)
    assert best != mask_hash(parse(KNOWN_METRICS["wanda"]), probes, 0.5)
