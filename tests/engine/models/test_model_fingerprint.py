"""The model fingerprint identifies weights and architecture, not the folder they came from."""

from __future__ import annotations

import torch
from prunestudio.engine.models.loading import load_model, model_fingerprint


def test_fingerprint_ignores_the_folder_and_sees_the_weights(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu")
    before = model_fingerprint(lm.model, "default")
    # the default model's first load (from the GGUF) and later loads (from the cached fp32
    # copy) differ only in the folder named in the config
    lm.model.config._name_or_path = "/somewhere/else"
    assert model_fingerprint(lm.model, "default") == before
    with torch.no_grad():
        next(lm.model.parameters()).view(-1)[0] += 1.0
    assert model_fingerprint(lm.model, "default") != before
    assert model_fingerprint(lm.model, "other-source") != model_fingerprint(lm.model, "default")
