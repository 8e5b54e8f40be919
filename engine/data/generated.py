"""Calibration windows sampled from the dense model itself (the text source `self`).

Shin et al. 2024 ("Rethinking Pruning Large Language Models: Benefits and Pitfalls of
Reconstruction Error Minimization") calibrate on text the model writes: each window starts with
a token drawn uniformly from the vocabulary, continues greedily up to `prefix` tokens in all,
then samples (temperature, top-k, top-p; Hugging Face generate's defaults: 1.0, 50, 1.0) up to
the window length.

Reproducible for a seed and independent of the global RNG: every random draw (the first tokens,
each sampled token) comes from one CPU `torch.Generator` seeded with the window set's `seed`,
and sampling runs on CPU from float32 probabilities, so the device only enters through the
model's logits. Windows are generated `GENERATION_BATCH` at a time with the model's KV cache
(a small decoding loop of our own: `model.generate` draws from the global RNG).

The ids are cached on disk per model (`cache_dir("generated") / fingerprint / key.pt`, the key a
hash of the settings, n, seqlen, seed and `GENERATION_VERSION`): a study, its resume, its
export and `prunestudio eval` on the same machine see the same windows, whatever device or dtype
each of them loads the model with. Their `tokens_hash` is recorded like any calibration set's,
so windows generated anew elsewhere that differ are refused as changed inputs.

`Windows.spans` of generated windows are `(-1, i)` for window i (no position in any text);
`text_hash` equals `tokens_hash` (there is no text).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from prunestudio.engine.data.sources import get_source
from prunestudio.engine.data.windows import Windows, build_windows
from prunestudio.engine.models.loading import LoadedModel, check_context
from prunestudio.engine.paths import cache_dir

from prunestudio.schema.window_spec import GenerationSettings, WindowSpec

log = logging.getLogger(__name__)

__all__ = ["GENERATION_BATCH", "GENERATION_VERSION", "build_any_windows", "generate_ids",
           "generate_windows", "generation_key", "is_generated_spec"]

# Bump when the way windows are generated changes, so stale cache files are never reused.
GENERATION_VERSION = 1
# Windows decoded together (part of the cache key: which random draw goes to which window and
# the batched arithmetic both depend on it).
GENERATION_BATCH = 16

ProgressFn = Callable[[int, int], None]


def is_generated_spec(spec: WindowSpec) -> bool:
    """Whether `spec` names a source generated from the model (`self`)."""
    return get_source(spec.source).generated


def build_any_windows(spec: WindowSpec, lm: LoadedModel,
                      progress: ProgressFn | None = None) -> Windows:
    """The windows of `spec`: generated from `lm` for a generated source, else cut from the
    text with `lm`'s tokenizer (`build_windows`)."""
    if is_generated_spec(spec):
        return generate_windows(spec, lm, progress=progress)
    return build_windows(spec, lm.tokenizer)


def _settings(spec: WindowSpec) -> GenerationSettings:
    return spec.generation if spec.generation is not None else GenerationSettings()


def generation_key(spec: WindowSpec) -> str:
    """The hash that names a generated window set in the cache (per model)."""
    recipe = {"version": GENERATION_VERSION, "batch": GENERATION_BATCH,
              "generation": _settings(spec).model_dump(mode="json"),
              "n": spec.n, "seqlen": spec.seqlen, "seed": spec.seed}
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_path(spec: WindowSpec, lm: LoadedModel) -> Path:
    return cache_dir("generated") / lm.fingerprint / f"{generation_key(spec)}.pt"


def _load_cached(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        ids = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
                and tuple(ids.shape) == shape):
            raise ValueError(f"expected int64 ids of shape {shape}, found "
                             f"{getattr(ids, 'dtype', type(ids).__name__)} "
                             f"{tuple(getattr(ids, 'shape', ()))}")
        return ids
    except Exception as exc:  # a corrupt cache file is regenerated, not trusted
        log.warning("ignoring unreadable generated-windows cache %s (%s); generating again",
                    path, exc)
        return None


def _save_cached(path: Path, ids: torch.Tensor) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(ids)}")
        torch.save(ids, tmp)
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file
    except OSError as exc:  # a full or read-only cache costs a regeneration next time
        log.warning("could not cache generated windows at %s (%s)", path, exc)


def generate_windows(spec: WindowSpec, lm: LoadedModel,
                     progress: ProgressFn | None = None) -> Windows:
    """`spec.n` windows of `spec.seqlen` tokens sampled from `lm` (see the module docstring),
    from the disk cache when this model generated them before. `progress(done, total)` is
    called after each batch of a real generation."""
    if not is_generated_spec(spec):
        raise ValueError(f"{spec.label()} is text, not generated from the model: cut it with "
                         "build_windows (or build_any_windows)")
    if spec.n is None:
        raise ValueError(f"{spec.label()}: generated windows need n (the number of windows)")
    shape = (spec.n, spec.seqlen)
    path = _cache_path(spec, lm)
    ids = _load_cached(path, shape)
    if ids is None:
        check_context(lm, spec.seqlen, f"generated calibration windows ({spec.label()})")
        ids = generate_ids(lm, n=spec.n, seqlen=spec.seqlen, seed=spec.seed,
                           settings=_settings(spec), progress=progress)
        _save_cached(path, ids)
    tokens_hash = hashlib.sha256(ids.numpy().astype("int64").tobytes()).hexdigest()[:16]
    spans = tuple((-1, i) for i in range(spec.n))
    return Windows(spec, ids, spans, tokens_hash, tokens_hash)


def vocabulary_size(lm: LoadedModel) -> int:
    """Token ids the model can read and the tokenizer can write: an embedding padded beyond
    the tokenizer's vocabulary has rows no text ever produces."""
    rows = lm.model.get_input_embeddings().num_embeddings
    try:
        words = len(lm.tokenizer)
    except TypeError:
        words = int(getattr(lm.tokenizer, "vocab_size", rows))
    return min(rows, words)


def first_token_choices(lm: LoadedModel) -> torch.Tensor:
    """The ids a window may start with: the vocabulary without the tokenizer's special ids."""
    vocab = vocabulary_size(lm)
    allowed = torch.ones(vocab, dtype=torch.bool)
    special = [i for i in getattr(lm.tokenizer, "all_special_ids", None) or () if 0 <= i < vocab]
    allowed[special] = False
    choices = allowed.nonzero().squeeze(-1)
    if len(choices) == 0:
        raise ValueError("the tokenizer's vocabulary has only special tokens: nothing to "
                         "start a generated window with")
    return choices


def sample_next(logits: torch.Tensor, settings: GenerationSettings,
                generator: torch.Generator) -> torch.Tensor:
    """One token per row of float32 CPU `logits` (batch, vocab): temperature, then top-k, then
    top-p (as Hugging Face's logits warpers), then a draw from `generator`."""
    scores = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < scores.shape[-1]:
        kth = torch.topk(scores, settings.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if settings.top_p < 1.0:
        ordered, order = torch.sort(scores, dim=-1, descending=False, stable=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1.0 - settings.top_p)
        drop[..., -1:] = False  # the likeliest token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate_ids(lm: LoadedModel, *, n: int, seqlen: int, seed: int,
                 settings: GenerationSettings, progress: ProgressFn | None = None
                 ) -> torch.Tensor:
    """(n, seqlen) int64 ids on CPU, generated without a cache (see `generate_windows`)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    choices = first_token_choices(lm)
    first = choices[torch.randint(len(choices), (n,), generator=generator)]
    vocab = vocabulary_size(lm)
    model = lm.model
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, n, GENERATION_BATCH):
                out.append(_decode(model, first[start:start + GENERATION_BATCH], seqlen,
                                   settings, generator, vocab, lm.device))
                if progress is not None:
                    progress(min(start + GENERATION_BATCH, n), n)
    finally:
        model.train(was_training)
    return torch.cat(out).to(torch.int64)


def _decode(model, first: torch.Tensor, seqlen: int, settings: GenerationSettings,
            generator: torch.Generator, vocab: int, device) -> torch.Tensor:
    """One batch: greedy up to `settings.prefix` tokens (the first included), then sampled;
    the KV cache carries the prefix, so each step feeds the model one token per window."""
    ids = torch.empty((len(first), seqlen), dtype=torch.int64)
    ids[:, 0] = first
    keyword = _cache_keyword(model)
    past = None
    current = first
    for t in range(1, seqlen):
        result = model(input_ids=current.view(-1, 1).to(device), use_cache=True,
                       **({keyword: past} if past is not None else {}))
        past = getattr(result, "cache", None)
        if past is None:
            past = result.past_key_values
        logits = result.logits[:, -1, :vocab].float().cpu()
        current = logits.argmax(dim=-1) if t < settings.prefix else sample_next(
            logits, settings, generator)
        ids[:, t] = current
    return ids


def _cache_keyword(model) -> str:
    """The forward argument that takes the KV cache: `cache` (transformers ≥ 5.2x), else the
    older `past_key_values`."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"
