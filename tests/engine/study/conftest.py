"""Fixtures of the study tests shared by several modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def llama4(tmp_path_factory) -> Path:
    """The tiny LLaMA (GQA: 4 query heads over 2 KV heads, 128 channels) with four blocks."""
    import torch
    from tiny_models import tiny_config, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("llama4")
    torch.manual_seed(0)
    config = tiny_config("llama")
    config.num_hidden_layers = 4
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
