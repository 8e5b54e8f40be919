"""Tiny models, a byte-level tokenizer and slow, obvious reference computations for the
engine tests.

Everything here is written independently of the engine's own numerical code: references loop
in Python, work in float64 and read weights straight from the modules (GPT-2's `Conv1D`
transposed by hand), so a test compares the engine against something it could disagree with.
"""

from __future__ import annotations

import copy
import math

import torch
from prunestudio.engine.models.adapters import adapter_for
from prunestudio.engine.models.loading import LoadedModel, model_fingerprint
from torch import nn

VOCAB = 256  # a byte-level tokenizer has exactly 256 ids
ARCHS = ("llama", "opt", "gpt_neox", "gpt2")
# every family the issue names, one tiny config each (tests/engine/models/test_model_families.py)
FAMILY_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "phi",
                "olmo2", "falcon", "gpt2", "opt", "gpt_neox", "mixtral")


def _llama_like() -> dict:
    import transformers as tf

    return {"mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config, "qwen3": tf.Qwen3Config,
            "gemma2": tf.Gemma2Config, "gemma3_text": tf.Gemma3TextConfig,
            "phi3": tf.Phi3Config, "olmo2": tf.Olmo2Config}


class _LazyTable(dict):
    def __missing__(self, key):
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return key in _llama_like()

    def __getitem__(self, key):
        return _llama_like()[key]


_LLAMA_LIKE = _LazyTable()


def tiny_config(arch: str, layers: int = 2, vocab: int = VOCAB, **overrides):
    """hidden 64, `layers` blocks, MLP width 128 (GPT-2: 256); every width divisible by 8."""
    import transformers as tf

    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch == "llama":  # GQA: 4 query heads share 2 KV heads
        cfg = tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, **common)
    elif arch == "opt":
        cfg = tf.OPTConfig(hidden_size=64, ffn_dim=128, num_hidden_layers=layers,
                           num_attention_heads=4, max_position_embeddings=256,
                           word_embed_proj_dim=64, **common)
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                               num_attention_heads=4, max_position_embeddings=256, **common)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=layers, n_head=4, n_positions=256, **common)
    elif arch in _LLAMA_LIKE:  # 4 query heads over 2 KV heads
        cfg = _LLAMA_LIKE[arch](hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=256, **common)
        if arch in ("gemma2", "gemma3_text"):  # head_dim 32 ≠ 64 / 4; block 0 sliding
            cfg.head_dim, cfg.sliding_window = 32, 8
            if arch == "gemma3_text":
                cfg.layer_types = ["sliding_attention", "full_attention"][:layers] + [
                    "full_attention"] * max(0, layers - 2)
        if arch == "qwen3":
            cfg.head_dim = 16
    elif arch == "phi":
        cfg = tf.PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                           num_attention_heads=4, max_position_embeddings=256, **common)
    elif arch == "falcon":  # multi-query: 4 query heads share one k and one v head
        cfg = tf.FalconConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                              max_position_embeddings=256, **common)
    elif arch == "mixtral":  # 4 experts, 2 per token
        cfg = tf.MixtralConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=layers,
                               num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=256, **common)
    else:
        raise ValueError(arch)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make_lm(arch: str = "llama", *, seed: int = 0, layers: int = 2, vocab: int = VOCAB,
            attn: str = "sdpa", tokenizer=None, **overrides) -> LoadedModel:
    """A randomly initialised tiny causal LM wrapped as the engine's `LoadedModel`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch, layers, vocab, **overrides)
    try:
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    except ValueError:  # Gemma 2 has no SDPA attention in transformers 5
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.eval()
    model.config.use_cache = False
    source = f"tiny-{arch}-{seed}"
    return LoadedModel(
        model=model, tokenizer=tokenizer, adapter=adapter_for(model), source=source,
        description=source, fingerprint=model_fingerprint(model, source),
        device=torch.device("cpu"), dtype=torch.float32,
    )


def random_ids(n: int, seqlen: int, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seqlen), generator=g)


def byte_tokenizer():
    """A byte-level tokenizer with no merges: one id per UTF-8 byte, vocabulary 256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


# ------------------------------------------------------------------ module-level helpers


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def logical_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) weight read straight from the module: Conv1D stores (in, out)."""
    w = module.weight.detach()
    return w.t() if is_conv1d(module) else w


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Linear / Conv1D inside the decoder blocks, by full module name (found by
    walking the model, not through the adapter)."""
    out = {}
    for name, m in model.named_modules():
        if (isinstance(m, nn.Linear) or is_conv1d(m)) and _block_of(name) is not None:
            out[name] = m
    return out


def _block_of(name: str) -> int | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in ("layers", "h") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def block_index(name: str) -> int:
    b = _block_of(name)
    if b is None:
        raise ValueError(f"{name} is not inside a decoder block")
    return b


@torch.no_grad()
def capture_linear_inputs(model: nn.Module, names: list[str], ids: torch.Tensor,
                          batch_size: int = 1) -> dict[str, list[torch.Tensor]]:
    """Inputs each named module receives during ordinary full-model forwards (own hooks)."""
    modules = dict(model.named_modules())
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(module, args, output, n=n):
            got[n].append(args[0].detach().double().clone())

        handles.append(modules[n].register_forward_hook(hook))
    try:
        for s in range(0, ids.shape[0], batch_size):
            model(ids[s : s + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return got


def ref_x_sqnorm(inputs: list[torch.Tensor], nsamples: int) -> torch.Tensor:
    """Σ over every token of x² per input column, divided by the number of samples."""
    width = inputs[0].shape[-1]
    total = torch.zeros(width, dtype=torch.float64)
    for x in inputs:
        for tok in x.reshape(-1, width):
            total += tok * tok
    return total / nsamples


def ref_hessian(inputs: list[torch.Tensor], nsamples: int) -> torch.Tensor:
    """2/n Σ x xᵀ over every token, n = number of samples."""
    width = inputs[0].shape[-1]
    total = torch.zeros(width, width, dtype=torch.float64)
    for x in inputs:
        for tok in x.reshape(-1, width):
            total += torch.outer(tok, tok)
    return total * 2.0 / nsamples


def ref_row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output row, the k = int(in · s) lowest scores (ties: lower column first)."""
    rows, cols = score.shape
    k = int(cols * sparsity)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        vals = score[r].tolist()
        order = sorted(range(cols), key=lambda j: (vals[j], j))
        for j in order[:k]:
            mask[r, j] = True
    return mask


def ref_wanda_sequential(lm: LoadedModel, ids: torch.Tensor, sparsity: float,
                         batch_size: int = 2, grads: dict[str, torch.Tensor] | None = None,
                         sequential: bool = True) -> dict[str, torch.Tensor]:
    """Wanda the slow way on a deep copy: block by block, full-model forwards with hooks on the
    block's layers (earlier blocks already pruned), a per-row Python mask for every layer.

    With `grads` the score is GBLM's |W|·sqrt(X) + |W|·G; with `sequential=False` every
    block's X comes from the dense model.
    """
    model = copy.deepcopy(lm.model)
    lins = linear_modules(model)
    n_blocks = 1 + max(block_index(n) for n in lins)
    masks = {}
    dense_inputs = None if sequential else capture_linear_inputs(model, list(lins), ids, batch_size)
    for b in range(n_blocks):
        names = [n for n in lins if block_index(n) == b]
        inputs = dense_inputs or capture_linear_inputs(model, names, ids, batch_size)
        for n in names:
            x = ref_x_sqnorm(inputs[n], ids.shape[0])
            w = logical_weight(lins[n]).double()
            score = w.abs() * x.sqrt().reshape(1, -1)
            if grads is not None:
                score = score + w.abs() * grads[n].double()
            mask = ref_row_mask(score, sparsity)
            masks[n] = mask
            with torch.no_grad():
                logical_weight(lins[n]).masked_fill_(mask, 0)  # a view: prunes the copy
    return masks


def ref_token_nll(model: nn.Module, ids: torch.Tensor) -> tuple[float, int]:
    """Σ −log p(token_{t+1} | ≤ t) over every window and position, and the count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for w in ids:
            logits = model(w.unsqueeze(0), use_cache=False).logits[0].double()
            for t in range(w.shape[0] - 1):
                logp = torch.log_softmax(logits[t], dim=-1)
                total += -float(logp[int(w[t + 1])])
                count += 1
    return total, count


def ref_ppl(model: nn.Module, ids: torch.Tensor) -> float:
    total, count = ref_token_nll(model, ids)
    return math.exp(total / count)


# ------------------------------------------------------------------ beyond FAMILY_ARCHS

# A second mixture-of-experts layout (shared expert, a Linear gate beside the router) and a
# model_type with no family adapter (generic discovery).
EXTRA_ARCHS = ("qwen2_moe", "starcoder2")


def extra_tiny_config(arch: str, layers: int = 2, vocab: int = VOCAB):
    """Tiny configs for EXTRA_ARCHS, sized like `tiny_config`'s."""
    import transformers as tf

    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                  hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256)
    if arch == "qwen2_moe":  # 4 routed experts (2 per token) and one shared expert
        return tf.Qwen2MoeConfig(intermediate_size=128, moe_intermediate_size=32,
                                 shared_expert_intermediate_size=64, num_experts=4,
                                 num_experts_per_tok=2, **common)
    if arch == "starcoder2":  # LayerNorm, biases, c_fc / c_proj MLP: no family adapter
        return tf.Starcoder2Config(intermediate_size=128, **common)
    raise ValueError(arch)


def make_lm_from_config(config, *, seed: int = 0, attn: str = "sdpa",
                        source: str | None = None) -> LoadedModel:
    """`make_lm` for any config: a randomly initialised causal LM as a `LoadedModel`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    model.eval()
    model.config.use_cache = False
    source = source or f"tiny-{config.model_type}-{seed}"
    return LoadedModel(
        model=model, tokenizer=None, adapter=adapter_for(model), source=source,
        description=source, fingerprint=model_fingerprint(model, source),
        device=torch.device("cpu"), dtype=torch.float32,
    )


def make_any_lm(arch: str, *, seed: int = 0, layers: int = 2) -> LoadedModel:
    """`make_lm` for FAMILY_ARCHS and EXTRA_ARCHS alike."""
    if arch in EXTRA_ARCHS:
        return make_lm_from_config(extra_tiny_config(arch, layers), seed=seed)
    return make_lm(arch, seed=seed, layers=layers)
