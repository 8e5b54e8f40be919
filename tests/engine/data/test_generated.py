"""Calibration windows sampled from the dense model (source `self`, Shin et al. 2024): seeded
and independent of the global RNG, cached per model, greedy prefix then sampling, checked
against a slow reference decoder (a full forward without cache over the growing prefix)."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch
from prunestudio.engine.data import generated
from prunestudio.engine.data.generated import (
    GENERATION_BATCH,
    build_any_windows,
    first_token_choices,
    generate_windows,
    sample_next,
)
from prunestudio.engine.data.sources import TextSourceError, get_source, load_text
from prunestudio.engine.data.windows import WindowSpec, build_windows
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.paths import cache_dir

from prunestudio.schema.window_spec import GenerationSettings

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu", dtype="float32")


def _spec(**kw) -> WindowSpec:
    return WindowSpec(**{"source": "self", "seqlen": 12, "n": 6, **kw})


def _cached_files():
    return sorted(cache_dir("generated").rglob("*.pt"))


@torch.no_grad()
def _reference_greedy(model, first: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy continuation without a KV cache: a full forward over the whole prefix per step."""
    ids = first.view(-1, 1).clone()
    while ids.shape[1] < length:
        logits = model(input_ids=ids, use_cache=False).logits[:, -1].float()
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


def test_the_source_is_registered_for_calibration_and_reads_no_text(byte_tok):
    source = get_source("self")
    assert source.generated and source.offline and source.splits == ("generated",)
    assert source.default_split("calibration") == source.default_split("evaluation") == (
        "generated")
    assert not get_source("pydoc").generated
    with pytest.raises(TextSourceError, match="generated from the study's dense model"):
        load_text("self", "generated")
    with pytest.raises(TextSourceError, match="calibration only"):
        build_windows(_spec(), byte_tok)  # never silently reads text


def test_same_seed_same_windows_across_cache_and_global_rng(llama, monkeypatch):
    spec = _spec()
    torch.manual_seed(1)
    first = generate_windows(spec, llama)  # cache miss: generated, then written
    files = _cached_files()
    assert len(files) == 1 and files[0].parent.name == llama.fingerprint
    assert first.ids.shape == (6, 12) and first.ids.dtype == torch.int64
    assert first.ids.device.type == "cpu"
    assert first.spans == tuple((-1, i) for i in range(6))
    digest = hashlib.sha256(first.ids.numpy().astype("int64").tobytes()).hexdigest()[:16]
    assert first.tokens_hash == first.text_hash == digest

    torch.manual_seed(12345)
    torch.rand(1000)  # the global RNG moved on: it must not matter

    def no_generation(*a, **k):
        raise AssertionError("a cached window set was generated again")

    with monkeypatch.context() as m:
        m.setattr(generated, "generate_ids", no_generation)
        hit = generate_windows(spec, llama)  # cache hit
    assert torch.equal(hit.ids, first.ids) and hit.tokens_hash == first.tokens_hash

    for f in files:
        f.unlink()
    torch.manual_seed(999)
    again = generate_windows(spec, llama)  # a fresh generation, other global RNG state
    assert torch.equal(again.ids, first.ids)

    other = generate_windows(_spec(seed=1), llama)
    assert not torch.equal(other.ids, first.ids) and other.tokens_hash != first.tokens_hash
    assert len(_cached_files()) == 2  # one file per seed


def test_first_tokens_are_never_special(llama):
    tok = llama.tokenizer
    choices = first_token_choices(llama)
    assert set(tok.all_special_ids).isdisjoint(choices.tolist())
    assert len(choices) == len(tok) - len(set(tok.all_special_ids))

    class FewWords:  # a tokenizer whose vocabulary is special but for two ids
        all_special_ids = [i for i in range(len(tok)) if i not in (5, 7)]

        def __len__(self):
            return len(tok)

    fake = type(llama)(**{**llama.__dict__, "tokenizer": FewWords()})
    w = generate_windows(_spec(n=40, seqlen=2, seed=3), fake)
    assert set(w.ids[:, 0].tolist()) == {5, 7}


def test_prefix_is_the_greedy_continuation(llama):
    n = GENERATION_BATCH + 4  # two batches
    w = generate_windows(_spec(n=n, seqlen=10), llama)
    reference = _reference_greedy(llama.model, w.ids[:, 0], 5)
    assert torch.equal(w.ids[:, :5], reference)  # tokens 1..prefix-1 greedy
    longer = generate_windows(_spec(n=n, seqlen=10, generation={"prefix": 7}), llama)
    assert torch.equal(longer.ids[:, :7], _reference_greedy(llama.model, longer.ids[:, 0], 7))


def test_top_k_one_sampling_equals_greedy_decoding(llama):
    for prefix in (1, 5):
        spec = _spec(n=5, seqlen=16, seed=4, generation={"prefix": prefix, "top_k": 1})
        w = generate_windows(spec, llama)
        assert torch.equal(w.ids, _reference_greedy(llama.model, w.ids[:, 0], 16))


def test_sampled_tokens_follow_the_settings():
    gen = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(400, 1)
    s = GenerationSettings(top_k=None)
    assert set(sample_next(logits, s, gen).tolist()) == {0, 1, 2, 3}
    assert set(sample_next(logits, GenerationSettings(top_k=2), gen).tolist()) == {0, 1}
    nucleus = GenerationSettings(top_k=None, top_p=0.7)  # 0.5 + 0.3 reach 0.7
    assert set(sample_next(logits, nucleus, gen).tolist()) == {0, 1}
    only_best = GenerationSettings(top_k=None, top_p=0.4)
    assert set(sample_next(logits, only_best, gen).tolist()) == {0}
    cold = GenerationSettings(top_k=None, temperature=0.05)
    assert (sample_next(logits, cold, gen) == 0).float().mean() > 0.99


def test_unreadable_cache_is_generated_again(llama, caplog):
    spec = _spec(seed=7)
    good = generate_windows(spec, llama)
    (path,) = _cached_files()
    path.write_bytes(b"not a tensor")
    with caplog.at_level(logging.WARNING, logger=generated.__name__):
        again = generate_windows(spec, llama)
    assert "ignoring unreadable generated-windows cache" in caplog.text
    assert torch.equal(again.ids, good.ids)
    torch.save(torch.zeros(2, 2, dtype=torch.int64), path)  # wrong shape: not trusted either
    assert torch.equal(generate_windows(spec, llama).ids, good.ids)


def test_dispatch_generates_or_cuts_text(llama):
    text = WindowSpec(source="pydoc", seqlen=16, n=3)
    assert torch.equal(build_any_windows(text, llama).ids,
                       build_windows(text, llama.tokenizer).ids)
    assert torch.equal(build_any_windows(_spec(), llama).ids, generate_windows(_spec(), llama).ids)
    with pytest.raises(ValueError, match="is text, not generated"):
        generate_windows(text, llama)


def _self_config(model_dir, seed: int = 0):
    from tiny_models import tiny_inputs_toml

    from prunestudio.schema.study_file import parse_config

    text = tiny_inputs_toml(model_dir, out_of_domain=False).replace(
        'source = "pydoc"\nseqlen = 32\nn = 4',
        f'source = "self"\nseqlen = 32\nn = 4\nseed = {seed}')
    assert 'source = "self"' in text
    return parse_config(tomllib.loads(text + '\n[grid]\nmethods = ["magnitude"]\n'))


def test_a_study_calibrated_on_self_prepares_reproducible_windows(tiny_model_dirs, llama):
    from prunestudio.engine.study.context import cut_windows, prepare

    config = _self_config(tiny_model_dirs["llama"])
    assert config.calibration.generation == GenerationSettings()
    assert config.to_dict()["calibration"]["generation"]["top_k"] == 50
    ctx = prepare(config, lm=llama)
    assert ctx.calibration.ids.shape == (4, 32)
    for f in _cached_files():
        f.unlink()
    torch.manual_seed(3)
    again, evaluations = cut_windows(config, llama)
    assert torch.equal(again.ids, ctx.calibration.ids)
    assert evaluations[0].windows.spec.source == "pydoc"
    other, _ = cut_windows(_self_config(tiny_model_dirs["llama"], seed=1), llama)
    assert not torch.equal(other.ids, ctx.calibration.ids)


def test_export_of_a_self_calibrated_candidate_checks_its_windows(tmp_path, tiny_model_dirs,
                                                                 llama):
    from prunestudio.engine.candidate_jobs import candidate_context, recorded_config
    from prunestudio.engine.identity import IdentityMismatchError
    from prunestudio.engine.progress import Reporter
    from prunestudio.engine.runner import launch_study
    from prunestudio.store import open_store

    store_path = tmp_path / "s.db"
    study_id, status = launch_study(_self_config(tiny_model_dirs["llama"]), store_path, lm=llama)
    assert status == "finished"
    with open_store(store_path, readonly=True) as store:
        study = store.get_study(study_id)
        cand = store.candidates(study_id, with_metrics=True)[-1]
    config = recorded_config(study)  # the recorded config (with its generation) parses back
    assert config.calibration.source == "self"
    ctx = candidate_context(store_path, cand, study, config, Reporter(), "export")
    assert ctx.calibration.tokens_hash == cand["info"]["calibration_tokens_hash"]

    (path,) = _cached_files()
    torch.save(torch.flip(ctx.calibration.ids, dims=[1]).contiguous(), path)  # other windows
    with pytest.raises(IdentityMismatchError, match="calibration tokens now hash"):
        candidate_context(store_path, cand, study, config, Reporter(), "export")


@pytest.mark.parametrize("arch", ["opt", "gpt_neox", "gpt2"])
def test_other_families_decode_with_their_cache(tiny_model_dirs, arch):
    lm = load_model(str(tiny_model_dirs[arch]), device="cpu", dtype="float32")
    lm.model.train()  # OPT has dropout: generation runs in eval mode and restores the mode
    w = generate_windows(_spec(n=3, seqlen=10, generation={"top_k": 1}), lm)
    assert lm.model.training
    lm.model.eval()
    assert torch.equal(w.ids, _reference_greedy(lm.model, w.ids[:, 0], 10))


def test_prune_calib_self_runs_and_self_evaluation_is_refused(tmp_path, tiny_model_dirs):
    """`prunestudio prune --calib source=self,...` over the default study's pydoc calibration
    (offset given there): generated calibration; `--eval source=self` is a config error."""
    from cli_testlib import cli, cli_error

    model = str(tiny_model_dirs["llama"])
    common = ["--model", model, "--quiet", "--store", str(tmp_path / "s.db"),
              "--methods", "magnitude"]
    cli("prune", *common, "--calib", "source=self,n=2,seqlen=16,generation.top_k=5",
        "--eval", "role=in_domain,source=pydoc,n=2,seqlen=32,offset=20000")
    from prunestudio.store import open_store

    with open_store(tmp_path / "s.db", readonly=True) as store:
        study = store.get_study(1)
    calibration = study["config"]["calibration"]
    assert calibration["source"] == "self" and calibration["generation"]["top_k"] == 5
    err = cli_error("prune", *common, "--calib", "source=self,n=2,seqlen=16",
                    "--eval", "role=in_domain,source=self,n=2,seqlen=32")
    assert "is for [calibration] only" in err and "pydoc" in err
