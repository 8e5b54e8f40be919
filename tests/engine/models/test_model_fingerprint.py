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


def test_fingerprint_is_the_same_on_any_number_of_threads(tiny_model_dirs):
    """A driver (2 threads) and a Ray worker (1 thread) must agree: no floating-point sum
    enters the fingerprint. The legacy one (a parameter sum to 7 digits) did not always."""
    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu")
    with torch.no_grad():  # a parameter whose fp32 sum depends on the reduction order
        w = next(lm.model.parameters())
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 1e3)
    before = torch.get_num_threads()
    try:
        prints = set()
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            prints.add(model_fingerprint(lm.model, "default"))
    finally:
        torch.set_num_threads(before)
    assert len(prints) == 1


def test_a_fingerprint_an_older_release_recorded_is_still_the_same_model(tiny_model_dirs):
    from prunestudio.engine.identity import Identity, RecordedIdentity, mismatches
    from prunestudio.engine.models.loading import legacy_model_fingerprint

    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu")
    legacy = legacy_model_fingerprint(lm.model, lm.source)
    assert legacy != lm.fingerprint and lm.fingerprint_aliases == (legacy,)
    now = Identity(lm.fingerprint, "c", {}, lm.fingerprint_aliases)
    assert mismatches(RecordedIdentity((legacy, 1)), now, model_source="m") == []
    assert mismatches(RecordedIdentity((lm.fingerprint, 1)), now, model_source="m") == []
    other = mismatches(RecordedIdentity(("0123456789abcdef", 1)), now, model_source="m")
    assert len(other) == 1 and "0123456789abcdef" in other[0]
