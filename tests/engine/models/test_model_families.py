"""Every model family the engine names, a second mixture-of-experts layout and one model_type
with no family adapter: the adapter finds exactly the prunable layers an independent walk of the
module tree finds; Wanda, SparseGPT and magnitude realise 50 % and 2:4 on every layer, evaluate
and export; the calibration statistics equal ones computed from ordinary full-model forwards
(per block masks of Gemma 2 / 3, per-expert routed tokens of Mixtral); fused layers prune like
their unfused parts; an expert no token reaches falls back to magnitude, loudly.

References here are written in the test: the layer walk, the expert routing (softmax top-k from
the router's weight), the routed tokens' statistics, the masks — in float64 with plain loops,
reading weights straight from the modules.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from engine_testlib import (
    EXTRA_ARCHS,
    FAMILY_ARCHS,
    capture_linear_inputs,
    make_any_lm,
    make_lm,
    make_lm_from_config,
    random_ids,
    ref_hessian,
    ref_row_mask,
    ref_x_sqnorm,
    tiny_config,
)
from prunestudio.engine.calibration import BlockInputs, StatsCache, calibration_hash
from prunestudio.engine.data.windows import WindowSpec, build_windows
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.models.adapters import (
    GenericAdapter,
    adapter_for,
    supported_model_types,
)
from prunestudio.engine.pruning import prune_model
from torch import nn

from prunestudio.schema.spec import CandidateSpec, Pattern

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib

ALL_ARCHS = FAMILY_ARCHS + EXTRA_ARCHS
MOE_ARCHS = ("mixtral", "qwen2_moe")

# prunable layers of the 2-block tiny models, counted by hand from the transformers sources
LAYERS_PER_BLOCK = {
    "llama": 7, "mistral": 7, "qwen2": 7, "qwen3": 7, "gemma2": 7, "gemma3_text": 7,
    "olmo2": 7,  # q k v o gate up down
    "phi3": 4,  # qkv_proj o_proj gate_up_proj down_proj
    "phi": 6,  # q k v dense fc1 fc2
    "opt": 6,  # q k v out_proj fc1 fc2
    "falcon": 4, "gpt_neox": 4, "gpt2": 4,  # fused qkv, attention out, two MLP matrices
    "mixtral": 4 + 4 * 2,  # attention + 4 experts × (gate_up, down)
    "qwen2_moe": 4 + 4 * 2 + 3,  # + the shared expert's gate / up / down (its gate: a router)
    "starcoder2": 6,  # q k v o c_fc c_proj
}
FAMILY = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama",
          "gemma2": "gemma", "gemma3_text": "gemma", "olmo2": "olmo2", "phi3": "phi3",
          "phi": "phi", "opt": "opt", "falcon": "falcon", "gpt_neox": "gpt_neox",
          "gpt2": "gpt2", "mixtral": "moe", "qwen2_moe": "moe", "starcoder2": "generic"}
METHODS = ("magnitude", "wanda", "sparsegpt")
PATTERNS = ("unstructured", "2:4")


# ------------------------------------------------------------------ the independent walk

_INSIDE_BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.\d+\.")


def _is_router(name: str, modules: dict[str, nn.Module]) -> bool:
    """A module called gate / router / *_gate directly inside a block that has experts."""
    parent, _, last = name.rpartition(".")
    return (hasattr(modules.get(parent), "experts")
            and (last in ("gate", "router") or last.endswith("_gate")))


def walk_layers(model: nn.Module) -> dict[str, tuple[torch.Tensor, str]]:
    """Every prunable layer inside the decoder blocks, found by walking the module tree:
    name -> ((out, in) weight view read from the module, name of the parameter holding it).

    nn.Linear (weight (out, in)) and transformers' Conv1D (weight (in, out): transposed here);
    routers left out; a 3-D parameter of an experts module is one layer per expert, named
    `module.param[e]`, its slice [e] used as F.linear's weight by Mixtral / Qwen2-MoE
    ((E, out, in), read in their `Experts.forward`)."""
    modules = dict(model.named_modules())
    out: dict[str, tuple[torch.Tensor, str]] = {}
    for name, m in modules.items():
        if not _INSIDE_BLOCK.search(name):  # outside the blocks, or a block itself
            continue
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
            if _is_router(name, modules):
                continue
            w = m.weight.data
            out[name] = (w.t() if type(m).__name__ == "Conv1D" else w, f"{name}.weight")
        for pname, p in m.named_parameters(recurse=False):
            if p.dim() == 3:
                for e in range(p.shape[0]):
                    out[f"{name}.{pname}[{e}]"] = (p.data[e], f"{name}.{pname}")
    return out


def _block(name: str) -> int:
    return int(re.search(r"(?:layers|h)\.(\d+)\.", name).group(1))


# ------------------------------------------------------------------ expert routing, by hand


@torch.no_grad()
def ref_expert_inputs(model: nn.Module, ids: torch.Tensor
                      ) -> tuple[dict[str, list[torch.Tensor]], float]:
    """The rows every expert layer receives in ordinary full-model forwards (one window at a
    time), float64, with routing recomputed here: the sparse-MoE block's input h (forward
    pre-hook on `mlp`), p = softmax(h Wrᵀ), the top-k experts of each token; an expert's
    gate_up input is its tokens' h, its down input silu(gate) · up from its own gate_up slice
    (gate: the first half of the rows). Also returns the smallest gap between a token's k-th
    and (k+1)-th probability: the routing is unambiguous only when that is far above float32
    rounding."""
    layers = model.model.layers
    cfg = model.config
    k = cfg.num_experts_per_tok
    assert cfg.hidden_act == "silu"
    seen: dict[int, list[torch.Tensor]] = {b: [] for b in range(len(layers))}
    handles = [layers[b].mlp.register_forward_pre_hook(
        lambda mod, args, b=b: seen[b].append(args[0].detach().double().clone()))
        for b in range(len(layers))]
    try:
        for s in range(ids.shape[0]):
            model(ids[s : s + 1], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, list[torch.Tensor]] = {}
    gaps = []
    for b, chunks in seen.items():
        mlp = layers[b].mlp
        router = mlp.gate.weight.detach().double()
        n_exp = router.shape[0]
        gate_up = mlp.experts.gate_up_proj.detach().double()
        inter = mlp.experts.down_proj.shape[2]
        prefix = f"model.layers.{b}.mlp.experts"
        for e in range(n_exp):
            out[f"{prefix}.gate_up_proj[{e}]"] = []
            out[f"{prefix}.down_proj[{e}]"] = []
        for h in chunks:
            x = h.reshape(-1, h.shape[-1])
            probs = torch.softmax(x @ router.t(), dim=-1)
            chosen = []
            for t in range(x.shape[0]):
                p = probs[t].tolist()
                order = sorted(range(n_exp), key=lambda j: -p[j])
                gaps.append(p[order[k - 1]] - p[order[k]])
                chosen.append(set(order[:k]))
            for e in range(n_exp):
                rows = x[[t for t in range(x.shape[0]) if e in chosen[t]]]
                gu = rows @ gate_up[e].t()
                gate, up = gu[:, :inter], gu[:, inter:]
                out[f"{prefix}.gate_up_proj[{e}]"].append(rows)
                out[f"{prefix}.down_proj[{e}]"].append(gate * torch.sigmoid(gate) * up)
    return out, min(gaps)


def decisive_routing(lm):
    """Routers 10× their initial scale (std 0.02 gives near-uniform routing probabilities,
    whose top-k gaps come close to float32 rounding): a routing the float64 reference and
    the float32 model agree on, and experts that see clearly different token counts."""
    with torch.no_grad():
        for layer in lm.adapter.blocks(lm.model):
            layer.mlp.gate.weight.mul_(10.0)
    return lm


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * max(scale, 1e-3),
                               msg=lambda m: f"{what}: {m}")


# ------------------------------------------------------------------ 1. the layers found


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_adapter_finds_exactly_the_layers_a_walk_of_the_module_tree_finds(arch):
    lm = make_any_lm(arch)
    model = lm.model
    lins = lm.adapter.all_prunable_linears(model)
    walked = walk_layers(model)
    names = [lin.name for lin in lins]
    assert len(names) == len(set(names)) == len(walked) == 2 * LAYERS_PER_BLOCK[arch]
    assert set(names) == set(walked)
    assert lm.adapter.family == FAMILY[arch]
    assert isinstance(lm.adapter, GenericAdapter) == (arch == "starcoder2")
    for lin in lins:
        weight, _ = walked[lin.name]
        assert lin.block == _block(lin.name)
        assert lin.weight.shape == weight.shape and torch.equal(lin.weight, weight), lin.name
        assert lin.weight.data_ptr() == weight.data_ptr(), lin.name  # a view of the model
        assert lin.is_expert == lin.name.endswith("]")
        if lin.is_expert:
            assert lin.kind == ("expert_down" if ".down_proj[" in lin.name
                                else "expert_gate_up")
    modules = dict(model.named_modules())
    routers = [n for n in modules if _is_router(n, modules)]
    assert len(routers) == {"mixtral": 2, "qwen2_moe": 4}.get(arch, 0)  # gate (+ shared gate)
    for r in routers:
        assert all(lin.module is not modules[r] for lin in lins), r
        assert not any(n == r or n.startswith(r + "[") for n in names), r
    assert not any(n.endswith(".mlp.gate") for n in names)


# ------------------------------------------------------------------ 2. prune, evaluate, export


def _nm_groups_ok(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Every group of m consecutive input columns of every row holds exactly n zeros."""
    rows, cols = weight.shape
    zeros = (weight == 0).reshape(rows, cols // m, m).sum(-1)
    return bool((zeros == n).all())


@pytest.fixture(scope="module")
def windows():
    from engine_testlib import byte_tokenizer

    tok = byte_tokenizer()
    calib = build_windows(WindowSpec(source="pydoc", seqlen=32, n=4, selection="random",
                                     seed=0, end=20000), tok)
    evaluation = build_windows(WindowSpec(source="pydoc", seqlen=32, n=3, offset=20000), tok)
    return calib, evaluation


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_method_and_pattern_prunes_evaluates_and_exports(arch, windows, tmp_path):
    from transformers import AutoModelForCausalLM

    calib, evaluation = windows
    lm = make_any_lm(arch, seed=3)
    model = lm.model
    dense = {n: p.detach().clone() for n, p in model.state_dict().items()}
    pruned_params = {pname for _, pname in walk_layers(model).values()}
    stats = StatsCache(lm, calib.ids, calib.tokens_hash, use_disk=False)
    dense_ppl = perplexity(model, evaluation, lm.device).ppl
    for method in METHODS:
        for pattern in PATTERNS:
            what = f"{arch} {method} {pattern}"
            model.load_state_dict(dense)
            spec = CandidateSpec(method=method, pattern=Pattern.parse(pattern),
                                 sparsity=0.5 if pattern == "unstructured" else 0.0)
            result = prune_model(lm, spec, stats)
            walked = walk_layers(model)
            assert set(result.layer_sparsity) == set(walked), what
            assert result.uncalibrated == [], what
            for name, (w, _) in walked.items():
                zeros = int((w == 0).sum())
                if pattern == "2:4":
                    assert _nm_groups_ok(w), f"{what}: {name} is not 2:4"
                assert zeros == w.numel() // 2, f"{what}: {name} has {zeros}/{w.numel()} zeros"
                assert result.layer_sparsity[name] == pytest.approx(0.5), (what, name)
            for pname, p in model.state_dict().items():
                if pname not in pruned_params:  # embeddings, norms, biases, routers
                    assert torch.equal(p, dense[pname]), f"{what}: {pname} changed"
            assert all(bool(torch.isfinite(p).all()) for p in model.parameters()), what
            ppl = perplexity(model, evaluation, lm.device).ppl
            assert math.isfinite(ppl) and ppl > 1 and ppl != dense_ppl, (what, ppl)

            from prunestudio.engine.structured.export import export_pruned

            folder = tmp_path / f"{method}-{pattern.replace(':', '_')}"
            info = export_pruned(model, None, folder)
            assert info.plain_from_pretrained
            reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
            with torch.no_grad():
                want = model(evaluation.ids, use_cache=False).logits
                got = reloaded(evaluation.ids, use_cache=False).logits
            assert torch.equal(got, want), f"{what}: exported logits differ"


# ------------------------------------------------------------------ 3. fused = unfused


def _phi3_and_llama():
    """A tiny Phi-3 and a LLaMA holding the same weights: Phi-3's qkv_proj rows split into
    q / k / v, its gate_up_proj rows into gate / up (its MLP is up · act(gate) with gate the
    first half); the only config difference of the two forwards is LLaMA's default RMSNorm
    eps (1e-6 against Phi-3's 1e-5), set equal here."""
    phi = make_lm("phi3", seed=21)
    cfg = phi.model.config
    llama = make_lm_from_config(tiny_config("llama", rms_norm_eps=cfg.rms_norm_eps), seed=22)
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // heads
    inter = cfg.intermediate_size
    state = {}
    for name, p in phi.model.state_dict().items():
        if name.endswith("self_attn.qkv_proj.weight"):
            base = name.removesuffix("qkv_proj.weight")
            q, k, v = p.split([heads * hd, kv * hd, kv * hd])
            state.update({base + "q_proj.weight": q, base + "k_proj.weight": k,
                          base + "v_proj.weight": v})
        elif name.endswith("mlp.gate_up_proj.weight"):
            base = name.removesuffix("gate_up_proj.weight")
            state.update({base + "gate_proj.weight": p[:inter], base + "up_proj.weight": p[inter:]})
        else:
            state[name] = p
    missing, unexpected = llama.model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in n for n in missing), (missing, unexpected)
    assert phi.model.config._attn_implementation == llama.model.config._attn_implementation
    return phi, llama


@pytest.mark.parametrize("pattern", PATTERNS)
def test_wanda_on_fused_qkv_and_gate_up_equals_wanda_on_the_parts_stacked(pattern):
    phi, llama = _phi3_and_llama()
    ids = random_ids(4, 32, seed=21)
    with torch.no_grad():
        torch.testing.assert_close(phi.model(ids).logits, llama.model(ids).logits,
                                   rtol=1e-5, atol=1e-5)
    spec = CandidateSpec(method="wanda", pattern=Pattern.parse(pattern),
                         sparsity=0.5 if pattern == "unstructured" else 0.0)
    for lm in (phi, llama):
        prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids), use_disk=False))
    for b in range(2):
        p_att, p_mlp = phi.model.model.layers[b].self_attn, phi.model.model.layers[b].mlp
        l_att, l_mlp = llama.model.model.layers[b].self_attn, llama.model.model.layers[b].mlp
        pairs = {
            "qkv": (p_att.qkv_proj, (l_att.q_proj, l_att.k_proj, l_att.v_proj)),
            "o": (p_att.o_proj, (l_att.o_proj,)),
            "gate_up": (p_mlp.gate_up_proj, (l_mlp.gate_proj, l_mlp.up_proj)),
            "down": (p_mlp.down_proj, (l_mlp.down_proj,)),
        }
        for what, (fused, parts) in pairs.items():
            mask = fused.weight == 0
            stacked = torch.cat([m.weight == 0 for m in parts])
            assert int(mask.sum()) == mask.numel() // 2, (b, what)
            assert torch.equal(mask, stacked), f"block {b} {what}: fused and unfused masks differ"


# ------------------------------------------------------------------ 4. per-expert statistics


@pytest.mark.parametrize("arch", MOE_ARCHS)
def test_per_expert_statistics_are_those_of_the_tokens_routed_to_it(arch):
    lm = decisive_routing(make_any_lm(arch, seed=4))
    ids = random_ids(4, 32, seed=4)
    ref, min_gap = ref_expert_inputs(lm.model, ids)
    assert min_gap > 1e-5  # no near-tie: float32 rounding moves a probability by < 1e-6
    got = StatsCache(lm, ids, calibration_hash(ids), use_disk=False).dense_layer_stats(
        want_hessian=True)
    n_experts = 4
    assert len(ref) == 2 * 2 * n_experts
    counts = []
    for name, rows in ref.items():
        st = got[name]
        tokens = sum(r.shape[0] for r in rows)
        counts.append(tokens)
        assert st.tokens == tokens and st.nsamples == 4, name
        assert tokens > 0, f"{name}: pick another seed, every expert should see tokens"
        _close(st.x_sqnorm, ref_x_sqnorm(rows, 4), f"{name} x_sqnorm")
        _close(st.hessian, ref_hessian(rows, 4), f"{name} hessian")
    # per block, top-2 of 4: the experts' token counts add up to twice the tokens
    per_block = [sum(c for n, c in zip(ref, counts, strict=True)
                     if n.startswith(f"model.layers.{b}.") and "gate_up" in n) for b in range(2)]
    assert per_block == [2 * 4 * 32] * 2
    assert len(set(counts)) > 1  # the routing is not uniform: the experts' sets differ


# ------------------------------------------------------------------ 5. an expert no token reaches


def starve_expert(model: nn.Module, block: int = 0, expert: int = 3) -> None:
    """Make `expert` of `block` unreachable. Hidden coordinate 0 becomes a constant channel:
    every token embedding gets +1 there (what attention and the experts add to it is two
    orders smaller, so it stays positive) and nothing reads it — q / k / v, the experts and
    the routers get zero weight on it — except the starved expert's router row, -100·e₀, whose
    logit is then far below every other expert's for every token. The other experts' routing
    still varies with the token (nothing constant leaks into the other coordinates)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] += 1.0
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.weight[:, 0] = 0.0
            layer.mlp.experts.gate_up_proj[:, :, 0] = 0.0
            layer.mlp.gate.weight[:, 0] = 0.0
        row = model.model.layers[block].mlp.gate.weight[expert]
        row.zero_()
        row[0] = -100.0


def ref_magnitude_mask(weight: torch.Tensor, pattern: str) -> torch.Tensor:
    """Magnitude, one threshold per matrix (the fallback's scope): the round(numel / 2)
    smallest |W| (ties: lower flat index first); 2:4: the 2 smallest of each 4 columns."""
    rows, cols = weight.shape
    vals = weight.abs().reshape(-1).tolist()
    mask = torch.zeros(rows * cols, dtype=torch.bool)
    if pattern == "unstructured":
        for j in sorted(range(len(vals)), key=lambda j: (vals[j], j))[: round(len(vals) / 2)]:
            mask[j] = True
    else:
        for start in range(0, len(vals), 4):
            group = sorted(range(start, start + 4), key=lambda j: (vals[j], j))
            for j in group[:2]:
                mask[j] = True
    return mask.reshape(rows, cols)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_an_expert_no_token_reaches_is_pruned_by_magnitude_and_named(method, windows):
    calib, evaluation = windows
    lm = make_lm("mixtral", seed=5)
    starve_expert(lm.model)
    ref, _ = ref_expert_inputs(lm.model, calib.ids)
    reached = {n: sum(r.shape[0] for r in rows) for n, rows in ref.items()}
    starved = ["model.layers.0.mlp.experts.gate_up_proj[3]",
               "model.layers.0.mlp.experts.down_proj[3]"]
    assert [n for n, c in reached.items() if c == 0] == starved  # and every other expert fed
    dense = {n: p.detach().clone() for n, p in lm.model.state_dict().items()}
    stats = StatsCache(lm, calib.ids, calib.tokens_hash, use_disk=False)
    for pattern in PATTERNS:
        lm.model.load_state_dict(dense)
        spec = CandidateSpec(method=method, pattern=Pattern.parse(pattern),
                             sparsity=0.5 if pattern == "unstructured" else 0.0)
        result = prune_model(lm, spec, stats)
        assert result.uncalibrated == starved, pattern
        (warning,) = result.warnings()
        assert "2 layer(s) received no calibration token" in warning
        assert all(n in warning for n in starved) and "magnitude" in warning
        walked = walk_layers(lm.model)
        for name in starved:
            expert_param = name.split("[")[0].removeprefix("model.layers.0.mlp.experts.")
            before = dense[f"model.layers.0.mlp.experts.{expert_param}"][3]
            mask = ref_magnitude_mask(before, pattern)
            after, _ = walked[name]
            assert torch.equal(after, before.masked_fill(mask, 0)), (pattern, name)
        for name, (w, _) in walked.items():  # every layer, calibrated or not, at 50 %
            assert int((w == 0).sum()) == w.numel() // 2, (pattern, name)
        assert all(bool(torch.isfinite(p).all()) for p in lm.model.parameters()), pattern
        assert math.isfinite(perplexity(lm.model, evaluation, lm.device).ppl), pattern


# ------------------------------------------------------------------ 6. calibration statistics


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_dense_statistics_equal_ones_from_ordinary_full_model_forwards(arch):
    """The engine's block walk (block inputs captured once, each block called with its own
    keyword arguments) gives every layer the statistics an ordinary forward gives it."""
    lm = make_any_lm(arch, seed=6)
    if arch in MOE_ARCHS:
        decisive_routing(lm)
    ids = random_ids(4, 32, seed=6)  # 32 tokens: longer than Gemma's sliding window of 8
    got = StatsCache(lm, ids, calibration_hash(ids), use_disk=False).dense_layer_stats(
        want_hessian=True)
    walked = walk_layers(lm.model)
    assert set(got) == set(walked)
    plain = [n for n in walked if not n.endswith("]")]
    rows = capture_linear_inputs(lm.model, plain, ids)
    if arch in MOE_ARCHS:
        experts, min_gap = ref_expert_inputs(lm.model, ids)
        assert min_gap > 1e-5
        rows.update(experts)
    for name in walked:
        st = got[name]
        assert st.nsamples == 4, name
        assert st.tokens == sum(r.reshape(-1, r.shape[-1]).shape[0] for r in rows[name]), name
        _close(st.x_sqnorm, ref_x_sqnorm(rows[name], 4), f"{arch} {name} x_sqnorm")
        _close(st.hessian, ref_hessian(rows[name], 4), f"{arch} {name} hessian")


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_gemma_blocks_get_their_own_attention_masks(arch):
    """Block 0 attends within a sliding window of 8, block 1 globally; calling block 1 with
    block 0's keyword arguments (mask, and for Gemma 3 its local rotary embeddings) changes
    its statistics, so the equality above could fail — and does not."""
    from prunestudio.engine.calibration import prune_sequentially

    lm = make_lm(arch, seed=7)
    assert lm.model.config.sliding_window == 8
    layer_types = getattr(lm.model.config, "layer_types", None)
    assert layer_types[:2] == ["sliding_attention", "full_attention"]
    ids = random_ids(4, 32, seed=7)
    cache = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    got = cache.dense_layer_stats()
    names = [n for n in walk_layers(lm.model) if _block(n) == 1]
    rows = capture_linear_inputs(lm.model, names, ids)
    inputs = cache.block_inputs()
    wrong: dict = {}
    prune_sequentially(lm, BlockInputs(inputs.hidden, inputs.kwargs, None),  # block 0's args
                       lambda i, lins, st: wrong.update(st))
    differs = []
    for name in names:
        want = ref_x_sqnorm(rows[name], 4)
        _close(got[name].x_sqnorm, want, name)
        if not torch.allclose(wrong[name].x_sqnorm.double(), want, rtol=1e-3, atol=1e-6):
            differs.append(name.rsplit(".", 2)[-2] + "." + name.rsplit(".", 1)[-1])
    # q / k / v read block 1's input (the same either way); what follows attention differs
    assert {"self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} <= set(differs)


# ------------------------------------------------------------------ 7. generic discovery, studies


def test_a_model_type_without_a_family_gets_generic_discovery():
    lm = make_any_lm("starcoder2")
    assert "starcoder2" not in supported_model_types()  # no family knows it
    adapter = adapter_for(lm.model)
    assert isinstance(adapter, GenericAdapter) and adapter.blocks_path == "model.layers"
    assert not adapter.structured
    assert isinstance(adapter_for("starcoder2"), GenericAdapter)  # by model_type too
    # roles from common module names; `c_proj` is ambiguous (GPT-2's attention output and
    # MLP output), so the MLP's keeps its relative name as its kind
    assert [lin.kind for lin in adapter.prunable_linears(lm.model, 0)] == [
        "q", "k", "v", "o", "fc1", "mlp.c_proj"]
    # Wanda on it: the per-row mask of |W|·sqrt(X) with X from the model's own forward
    ids = random_ids(4, 32, seed=8)
    walked = walk_layers(lm.model)
    block0 = [n for n in walked if _block(n) == 0]
    own = capture_linear_inputs(lm.model, block0, ids)
    before = {n: walked[n][0].double().clone() for n in block0}
    prune_model(lm, CandidateSpec(method="wanda", sparsity=0.5),
                StatsCache(lm, ids, calibration_hash(ids), use_disk=False))
    for n in block0:
        x = ref_x_sqnorm(own[n], 4)
        expect = ref_row_mask(before[n].abs() * x.sqrt().reshape(1, -1), 0.5)
        assert torch.equal(walk_layers(lm.model)[n][0] == 0, expect), n


def _study_events(store_path, study_id) -> list[dict]:
    from prunestudio.store import open_store, queries

    with open_store(store_path, readonly=True) as store:
        return queries.events_since(store, study_id, 0)[0]


def _run_study(model_dir, store_path, methods: str):
    from prunestudio.engine.runner import launch_study
    from prunestudio.store import open_store
    from tiny_models import tiny_study_toml

    from prunestudio.schema.study_file import parse_config

    config = parse_config(tomllib.loads(tiny_study_toml(model_dir, methods=methods)), "(test)")
    study_id, status = launch_study(config, store_path)
    with open_store(store_path, readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    return status, cands, _study_events(store_path, study_id)


def test_a_study_on_a_generic_model_finishes_and_says_how_layers_were_found(tmp_path):
    from tiny_models import save_tiny_model
    from transformers import AutoModelForCausalLM

    model_dir = save_tiny_model("starcoder2", tmp_path / "starcoder2")
    rel = [n.removeprefix("model.layers.0.") for n in walk_layers(
        AutoModelForCausalLM.from_pretrained(model_dir)) if _block(n) == 0]
    status, cands, events = _run_study(model_dir, tmp_path / "s.db", '["wanda"]')
    assert status == "finished"
    assert [(c["spec"]["method"], c["status"]) for c in cands] == [
        ("dense", "done"), ("wanda", "done"), ("wanda", "done")]
    (layout,) = [e["message"] for e in events if "generic discovery" in e["message"]]
    assert "model_type 'starcoder2'" in layout and "2 decoder blocks at model.layers" in layout
    assert f"{len(rel)} prunable linear layers in each: {', '.join(rel)};" in layout
    for c in cands[1:]:
        assert any(m["name"] == "ppl" and math.isfinite(m["value"]) for m in c["metrics"])


def test_a_study_on_a_mixture_of_experts_records_its_layout_and_a_starved_expert(tmp_path):
    from tiny_models import save_tiny_model
    from transformers import AutoModelForCausalLM

    model_dir = save_tiny_model("mixtral", tmp_path / "mixtral")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    starve_expert(model)
    model.save_pretrained(model_dir)
    status, cands, events = _run_study(model_dir, tmp_path / "s.db", '["wanda"]')
    assert status == "finished"
    messages = [e["message"] for e in events]
    (layout,) = [m for m in messages if m.startswith("mixture of experts")]
    assert "4 experts per block" in layout and "routers are never pruned" in layout
    starved = ["model.layers.0.mlp.experts.gate_up_proj[3]",
               "model.layers.0.mlp.experts.down_proj[3]"]
    pruned = [c for c in cands if c["spec"]["method"] == "wanda"]
    assert len(pruned) == 2 and all(c["status"] == "done" for c in pruned)
    for c in pruned:
        assert c["info"]["uncalibrated_layers"] == starved
    warnings = [e for e in events if e["level"] == "warning"
                and "received no calibration token" in e["message"]]
    assert len(warnings) == 2 and all(starved[0] in e["message"] for e in warnings)
