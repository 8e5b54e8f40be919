"""Tiny randomly initialised causal LMs saved as real model folders (config, weights and a
tokenizer), so the CLI and the runner load them through `from_pretrained` like any user model.

The tokenizer is a byte-level BPE trained in a second on the offline corpus, so the offline text
sources tokenize into realistic ids.
"""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 384


def tiny_tokenizer():
    from prunestudio.engine.data.sources import load_text
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = load_text("pydoc", "all").text[:200_000]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text[i:i + 5000] for i in range(0, len(text), 5000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def tiny_config(arch: str):
    """hidden 64, 2 blocks; widths divisible by 8 so 2:4 and 4:8 apply everywhere."""
    import transformers as tf

    if arch == "llama":  # GQA: 4 query heads sharing 2 KV heads
        return tf.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              max_position_embeddings=512, tie_word_embeddings=True)
    if arch == "opt":
        return tf.OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=512,
                            word_embed_proj_dim=64, dropout=0.1)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4,
                                max_position_embeddings=512)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=512)
    if arch == "mixtral":  # 4 experts stored as 3-D parameters, 2 per token
        return tf.MixtralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, num_local_experts=4,
                                num_experts_per_tok=2, max_position_embeddings=512)
    if arch == "starcoder2":  # a model_type without a family adapter: generic discovery
        return tf.Starcoder2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=512,
                                   bos_token_id=0, eos_token_id=0)
    raise ValueError(arch)


def save_tiny_model(arch: str, folder: Path, seed: int = 0,
                    initializer_range: float | None = None) -> Path:
    """`initializer_range` (default 0.02) above ~0.3 gives logits that depend on the input
    strongly enough for pruning to change which choice a model prefers."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(arch)
    if initializer_range is not None:
        config.initializer_range = initializer_range
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def tiny_inputs_toml(model_dir: Path, *, eval_n: int = 4, out_of_domain: bool = True) -> str:
    """The [model], [calibration] (4 × 32 pydoc tokens) and [[evaluation]] tables of a small
    study on a tiny model: in-domain pydoc text and, optionally, Hamlet."""
    hamlet = f"""
[[evaluation]]
role = "out_of_domain"
windows = {{ source = "shakespeare", split = "hamlet", seqlen = 64, n = {eval_n} }}
""" if out_of_domain else ""
    return f"""
[model]
source = "{model_dir}"

[calibration]
source = "pydoc"
seqlen = 32
n = 4

[[evaluation]]
role = "in_domain"
windows = {{ source = "pydoc", seqlen = 64, n = {eval_n}, offset = 20000 }}
{hamlet}"""


def tiny_study_toml(model_dir: Path, *, methods: str = '["magnitude", "wanda"]',
                    patterns: str = '["unstructured", "2:4"]', extra: str = "") -> str:
    """A small grid study on a tiny model: 4 × 32 calibration tokens, two evaluation sets."""
    return tiny_inputs_toml(model_dir) + f"""
[grid]
methods = {methods}
sparsities = [0.5]
patterns = {patterns}
{extra}
"""


def slow_study_toml(model_dir: Path) -> str:
    """A study whose candidates take long enough (64 × 128-token evaluation windows on three
    methods × two patterns) that a signal sent while one is running lands inside it."""
    return tiny_study_toml(model_dir, methods='["magnitude", "wanda", "sparsegpt"]').replace(
        "seqlen = 64, n = 4, offset = 20000", "seqlen = 128, n = 64, offset = 20000")


def tiny_gp_toml(model_dir: Path, *, split_n: int = 2, budget: int = 8, name: str = "gp",
                 extra: str = "") -> str:
    """A small GP search (seed 2) on a tiny model: population 6, 4 iterations, 2 finalists."""
    return f"""
[study]
name = "{name}"
kind = "gp"
seed = 2
""" + tiny_inputs_toml(model_dir, eval_n=2, out_of_domain=False) + f"""
[search]
population = 6
iterations = 4
budget = {budget}
top_k = 4
seed_metrics = ["wanda"]
split = {{ source = "pydoc", seqlen = 64, n = {split_n}, offset = 4000 }}
finalists = 2
{extra}
"""
