"""Recovery (engine/recovery.py): LoRA lowers the training loss of a pruned tiny model, repeats
exactly with a seed, merges into a plain model that keeps its zeros; a structured (shrunk)
model trains; QLoRA runs where bitsandbytes runs a 4-bit layer, else says so; the training
text never overlaps held-out text; the spec's optional `recovery` leaves existing hashes alone."""

from __future__ import annotations

import pytest
import tomllib
import torch
from engine_testlib import byte_tokenizer, make_lm
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.recovery import (
    RecoveryError,
    check_qlora,
    cut_training_windows,
    qlora_support,
    recover,
    recovered_spec,
    resolve_settings,
)
from tiny_models import tiny_study_toml

from prunestudio.schema.recovery import RecoverySection, RecoverySettings, recovery_label
from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import parse_config
from prunestudio.schema.window_spec import WindowSpec

CALIBRATION = WindowSpec(source="pydoc", split="all", seqlen=32, n=4)
FAST = {"steps": 12, "lr": 2e-3, "seqlen": 32, "n_windows": 8, "batch_size": 4}


def _pruned(folder, arch_sparsity: float = 0.5):
    """A tiny model with the smaller half of every prunable weight row set to zero."""
    lm = load_model(str(folder), device="cpu", dtype="float32")
    with torch.no_grad():
        for lin in lm.adapter.all_prunable_linears(lm.model):
            w = lin.weight
            k = int(w.shape[1] * arch_sparsity)
            idx = w.abs().argsort(dim=1, stable=True)[:, :k]
            w.scatter_(1, idx, 0.0)
    return lm


def _settings(**over) -> RecoverySettings:
    return resolve_settings(RecoverySettings(**{**FAST, **over}), CALIBRATION)


def _state(lm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in lm.model.named_parameters()}


def test_lora_lowers_the_training_loss_repeats_with_a_seed_and_merges_to_a_plain_model(
        tiny_model_dirs):
    settings = _settings()
    results, states = [], []
    for _ in range(2):
        lm = _pruned(tiny_model_dirs["llama"])
        before = _state(lm)
        zeros = {lin.name: (lin.weight == 0).clone()
                 for lin in lm.adapter.all_prunable_linears(lm.model)}
        windows = cut_training_windows(settings, lm)
        result = recover(lm, windows, settings)
        results.append(result)
        states.append(_state(lm))
    first, second = results
    assert first.loss_after < first.loss_before - 0.01, first.summary()
    assert first.steps == 12 and len(first.losses) == 12
    assert first.zeros_kept == sum(int(z.sum()) for z in zeros.values())
    assert first.losses == second.losses and first.loss_after == second.loss_after  # seeded
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])
    # a plain model: the same parameter names and shapes, no peft module or attribute left
    after = states[0]
    assert list(after) == list(before) and all(after[n].shape == before[n].shape for n in after)
    assert not any("lora" in n.lower() for n, _ in lm.model.named_modules())
    assert not hasattr(lm.model, "peft_config")
    for lin in lm.adapter.all_prunable_linears(lm.model):
        assert type(lin.module) is torch.nn.Linear
        assert torch.equal(lin.weight == 0, zeros[lin.name])  # keep_sparsity: the same zeros
    assert all(p.requires_grad for p in lm.model.parameters()) and not lm.model.training
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed and all(".layers." in n for n in changed)  # only the adapted layers moved
    metrics = {m["name"]: m for m in first.metrics()}
    assert metrics["train_loss_after"]["role"] == "recovery"
    assert metrics["train_loss_after"]["protocol"]["curve"][0] == pytest.approx(first.losses[0])
    assert (metrics["train_loss_before"]["dataset"], metrics["train_loss_before"]["n_samples"],
            metrics["train_loss_before"]["seqlen"]) == ("pydoc", 8, 32)


def test_without_keep_sparsity_the_merged_update_is_dense(tiny_model_dirs):
    # GPT-2: Conv1D layers (weights stored in × out), peft's fan_in_fan_out layout
    lm = _pruned(tiny_model_dirs["gpt2"])
    settings = _settings(keep_sparsity=False, target_modules=["fc2"])
    result = recover(lm, cut_training_windows(settings, lm), settings)
    assert result.loss_after < result.loss_before - 0.01, result.summary()
    assert result.zeros_kept == 0 and len(result.targets) == 2  # one fc2 (c_proj) per block
    for lin in lm.adapter.all_prunable_linears(lm.model):
        zero_share = float((lin.weight == 0).float().mean())
        assert zero_share < 0.01 if lin.kind == "fc2" else zero_share == pytest.approx(0.5)


def test_a_structured_shrunk_candidate_trains(tiny_model_dirs):
    from prunestudio.engine.runner import prepare, pruned_model

    config = parse_config(tomllib.loads(tiny_study_toml(tiny_model_dirs["llama"])))
    ctx = prepare(config)
    spec = CandidateSpec(method="structured", sparsity=0.3, options={"importance": "l2"})
    lm, _, shape = pruned_model(ctx, spec)
    assert shape is not None and lm is not ctx.lm
    full = sum(p.numel() for p in ctx.lm.model.parameters())
    shapes = {n: p.shape for n, p in lm.model.named_parameters()}
    assert sum(p.numel() for p in lm.model.parameters()) < full
    settings = resolve_settings(RecoverySettings(**FAST), config.calibration)
    held_out = [ev.windows for ev in ctx.evaluations]
    result = recover(lm, cut_training_windows(settings, lm, held_out), settings)
    assert result.loss_after < result.loss_before, result.summary()
    assert {n: p.shape for n, p in lm.model.named_parameters()} == shapes


def test_qlora_runs_where_bitsandbytes_runs_a_4bit_layer_else_says_so(tiny_model_dirs):
    reason = qlora_support("cpu")
    if reason is not None:  # this platform cannot: the error names it and the alternative
        with pytest.raises(RecoveryError, match="not supported on this platform") as exc:
            check_qlora("cpu")
        assert "method 'lora'" in str(exc.value) and "device cpu" in str(exc.value)
        pytest.skip(f"QLoRA is not supported here: {reason}")
    # GPT-2: Conv1D layers (transposed weights) become 4-bit Linear4bit and back
    from transformers.pytorch_utils import Conv1D

    lm = _pruned(tiny_model_dirs["gpt2"])
    zeros = {lin.name: (lin.weight == 0).clone()
             for lin in lm.adapter.all_prunable_linears(lm.model)}
    shapes = {n: p.shape for n, p in lm.model.named_parameters()}
    settings = _settings(method="qlora")
    result = recover(lm, cut_training_windows(settings, lm), settings)
    assert result.loss_after < result.loss_before - 0.01, result.summary()
    assert {n: p.shape for n, p in lm.model.named_parameters()} == shapes
    assert all(p.dtype == torch.float32 for p in lm.model.parameters())
    for lin in lm.adapter.all_prunable_linears(lm.model):
        assert type(lin.module) is Conv1D
        assert torch.equal(lin.weight == 0, zeros[lin.name])


def test_qlora_where_unsupported_names_the_platform_and_lora(monkeypatch):
    import prunestudio.engine.recovery as recovery

    monkeypatch.setattr(recovery, "_probe", lambda device, dtype: "no 4-bit kernels here")
    with pytest.raises(RecoveryError) as exc:
        check_qlora("cpu")
    text = str(exc.value)
    assert "'qlora' is not supported on this platform (device cpu, float32, bitsandbytes" in text
    assert "no 4-bit kernels here" in text and "Use method 'lora'" in text


def test_training_windows_never_overlap_held_out_text(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["llama"]), device="cpu", dtype="float32")
    from prunestudio.engine.data.windows import build_windows

    held_out = build_windows(WindowSpec(source="pydoc", split="all", seqlen=64, n=4,
                                        offset=200), lm.tokenizer)
    settings = _settings()  # 8 × 32 tokens from token 0: [0, 256) meets [200, 456)
    with pytest.raises(RecoveryError, match="must not overlap held-out text"):
        cut_training_windows(settings, lm, [held_out])
    moved = _settings(windows={**settings.windows.model_dump(), "offset": 456})
    assert cut_training_windows(moved, lm, [held_out]).spans[0] == (456, 488)


def test_unknown_target_modules_list_the_allowed_ones(tiny_model_dirs):
    lm = _pruned(tiny_model_dirs["llama"])
    settings = _settings(target_modules=["q", "nope"])
    with pytest.raises(RecoveryError, match=r"\['nope'\] match no prunable linear") as exc:
        recover(lm, cut_training_windows(settings, lm), settings)
    assert "kinds q, k, v, o, gate, up, down" in str(exc.value) and "q_proj" in str(exc.value)


def test_settings_validate_and_resolve_their_windows():
    s = RecoverySettings()
    assert (s.method, s.steps, s.total_steps, s.windows) == ("lora", 100, 100, None)
    assert RecoverySettings(epochs=2, n_windows=10, batch_size=4).total_steps == 5
    for bad, field in (({"steps": 5, "epochs": 1}, "steps or epochs"), ({"r": 0}, "r"),
                       ({"method": "dora"}, "method"), ({"dropout": 1.0}, "dropout"),
                       ({"warmup_steps": 100}, "warmup_steps"), ({"oops": 1}, "oops"),
                       ({"windows": {"source": "pydoc", "seqlen": 64, "n": 4}, "seqlen": 32},
                        "disagrees")):
        with pytest.raises(ValueError, match=field):
            RecoverySettings(**bad)
    resolved = resolve_settings(RecoverySettings(seqlen=64, n_windows=5),
                                WindowSpec(source="pydoc", split="all", seqlen=32, n=4,
                                           offset=100, end=9000))
    assert resolved.windows.model_dump() == {
        "source": "pydoc", "split": "all", "seqlen": 64, "n": 5, "offset": 100, "end": 9000,
        "selection": "contiguous", "seed": 0}
    # resolved settings read back equal (what a recorded spec holds)
    assert RecoverySettings.model_validate(resolved.recipe()) == resolved
    section = RecoverySection(best=2, r=4)
    assert section.settings() == RecoverySettings(r=4)


def test_the_optional_recovery_field_keeps_existing_spec_hashes():
    # hashes recorded before CandidateSpec had a `recovery` field
    known = {
        "7cfde24f2d31015f": CandidateSpec(method="dense"),
        "8918b8f44e0af958": CandidateSpec(method="wanda", sparsity=0.5),
        "c868f2ca0f2bd09b": CandidateSpec(method="magnitude", sparsity=0.5, layer_ratios="owl"),
        "d90e613a453389de": CandidateSpec(method="wanda", pattern={"kind": "nm", "n": 2, "m": 4}),
        "fec1b3af60237e36": CandidateSpec(method="symbolic", sparsity=0.5,
                                          options={"expression": "mul(W,X)"}),
        "2c04f8eb101545c7": CandidateSpec(method="structured", sparsity=0.2),
    }
    for digest, spec in known.items():
        assert spec.hash() == digest and "recovery" not in spec.canonical()
    parent = known["8918b8f44e0af958"]
    settings = resolve_settings(RecoverySettings(), CALIBRATION)
    spec = recovered_spec(parent, settings)
    assert spec.hash() != parent.hash() and spec.canonical()["recovery"]["method"] == "lora"
    assert CandidateSpec.model_validate(spec.canonical()).hash() == spec.hash()
    assert recovered_spec(parent, resolve_settings(RecoverySettings(seed=1), CALIBRATION)
                          ).hash() != spec.hash()
    assert recovery_label(spec.canonical()["recovery"]) == "+lora r8"
    with pytest.raises(RecoveryError, match="already recovered"):
        recovered_spec(spec, settings)


def test_the_study_hook_recovers_the_best_candidate_and_restores_the_weights(
        tmp_path, tiny_model_dirs):
    from prunestudio.engine.evaluate.perplexity import perplexity
    from prunestudio.engine.recovery import recover_candidates
    from prunestudio.engine.runner import launch_study, prepare, pruned_model
    from prunestudio.store import open_store

    config = parse_config(tomllib.loads(tiny_study_toml(
        tiny_model_dirs["llama"], methods='["magnitude"]', patterns='["unstructured"]',
        extra='[tasks]\nnames = ["offline"]\nlimit = 4')))
    db = tmp_path / "s.db"
    study_id, status = launch_study(config, db)
    assert status == "finished"
    ctx = prepare(config)
    pristine = _state(ctx.lm)
    with open_store(db) as store:
        best = min((c for c in store.candidate_records(study_id) if not c.is_reference),
                   key=lambda c: next(m.value for m in c.metrics
                                      if m.name == "ppl" and m.role == "in_domain"))
        new_ids = recover_candidates(store, study_id, RecoverySection(best=1, **FAST), ctx)
        assert len(new_ids) == 1
        new = store.candidate_record(new_ids[0])
        assert (new.origin, new.parents, new.status) == ("recovered", (best.id,), "done")
        assert new.spec["recovery"]["steps"] == 12
        acc = next(m for m in new.metrics if m.name == "acc")  # the study's [tasks], after
        assert (acc.role, acc.n_samples) == ("task", 4)
        assert acc.protocol["before"] == next(m.value for m in best.metrics if m.name == "acc")
        # a second call finds the recovery recorded: nothing new
        assert recover_candidates(store, study_id, RecoverySection(best=1, **FAST), ctx) == []
    assert all(torch.equal(p, pristine[n]) for n, p in _state(ctx.lm).items())

    # re-pruning the recorded recovered spec (what export / eval do) rebuilds the recovered
    # model: pruning a spec with a recovery trains it again, deterministically
    spec = CandidateSpec.model_validate(new.spec)
    lm, _, _ = pruned_model(ctx, spec, snapshot=ctx.snapshot)
    ev = ctx.evaluations[0]
    ppl = perplexity(lm.model, ev.windows, lm.device, ev.batch_size).ppl
    recorded = next(m for m in new.metrics if m.name == "ppl" and m.role == ev.role)
    assert ppl == pytest.approx(recorded.value, rel=1e-6)
    assert recorded.protocol["before"] == next(m.value for m in best.metrics
                                               if m.name == "ppl" and m.role == ev.role)
    ctx.snapshot.restore()
    assert all(torch.equal(p, pristine[n]) for n, p in _state(ctx.lm).items())


def test_a_study_calibrated_on_generated_text_recovers_on_the_text_train_names():
    """Recovery never trains on `self` windows: --train names the text (its split defaults to
    the new source's calibration split), without it the message says what to give."""
    from prunestudio.engine.recovery import RecoveryError, resolve_settings

    from prunestudio.schema.recovery import RecoverySettings
    from prunestudio.schema.window_spec import WindowSpec

    calibration = WindowSpec(source="self", n=4, seqlen=32)
    resolved = resolve_settings(RecoverySettings(), calibration,
                                {"source": "pydoc", "n": 8, "offset": 1000})
    assert (resolved.windows.source, resolved.windows.split) == ("pydoc", "all")
    assert (resolved.windows.n, resolved.windows.offset, resolved.windows.seqlen) == (8, 1000, 128)
    assert resolved.windows.generation is None
    with pytest.raises(RecoveryError, match="--train source=pydoc"):
        resolve_settings(RecoverySettings(), calibration)


def test_on_a_mixture_of_experts_lora_adapts_the_attention_and_keeps_every_expert_zero():
    lm = make_lm("mixtral", tokenizer=byte_tokenizer())
    with torch.no_grad():
        for lin in lm.adapter.all_prunable_linears(lm.model):
            w = lin.weight  # an expert's (out, in) slice of the 3-D parameter
            w.scatter_(1, w.abs().argsort(dim=1, stable=True)[:, :w.shape[1] // 2], 0.0)
    zeros = {lin.name: (lin.weight == 0).clone()
             for lin in lm.adapter.all_prunable_linears(lm.model)}
    settings = _settings(steps=6)
    result = recover(lm, cut_training_windows(settings, lm), settings)
    assert result.loss_after < result.loss_before, result.summary()
    assert [t.rsplit(".", 1)[-1] for t in result.targets] == ["q_proj", "k_proj", "v_proj",
                                                               "o_proj"] * 2
    for lin in lm.adapter.all_prunable_linears(lm.model):
        assert torch.equal(lin.weight == 0, zeros[lin.name]), lin.name
    with pytest.raises(RecoveryError, match=r"\['expert_down'\] name experts .* allowed: the "
                       r"attention and other linear layers, kinds q, k, v, o"):
        recover(lm, cut_training_windows(settings, lm), _settings(target_modules=["expert_down"]))
