"""Token windows for calibration and evaluation, with their exact provenance.

A `WindowSpec` says which text, which split and which token positions; `build_windows` turns it
into an (n, seqlen) tensor plus a hash of those exact tokens, so a candidate records precisely
which windows it used and two studies with the same windows share cached statistics.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
from prunestudio.engine.data.sources import load_text

from prunestudio.schema.window_spec import WindowSpec


class WindowError(ValueError):
    """Windows that cannot be cut from the text as asked."""


@dataclass(frozen=True)
class Windows:
    spec: WindowSpec
    ids: torch.Tensor  # (n, seqlen) int64
    spans: tuple[tuple[int, int], ...]  # token [start, end) of each window in the joined text
    text_hash: str
    tokens_hash: str

    @property
    def n(self) -> int:
        return self.ids.shape[0]

    @property
    def seqlen(self) -> int:
        return self.ids.shape[1]


def tokenizer_identity(tokenizer) -> str:
    vocab = getattr(tokenizer, "vocab_size", 0)
    return f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}:{vocab}"


@lru_cache(maxsize=8)
def _tokenize_cached(source: str, split: str, tok_key: str, tokenizer_ref) -> torch.Tensor:
    text = load_text(source, split).text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = tokenizer_ref()
        # Tokenized once, as one string: the perplexity protocol's "join, tokenize once".
        old = getattr(tokenizer, "model_max_length", None)
        tokenizer.model_max_length = int(1e30)
        try:
            ids = tokenizer(text, return_tensors="pt").input_ids[0]
        finally:
            if old is not None:
                tokenizer.model_max_length = old
    return ids


class _Ref:
    """Hashable by identity: lets lru_cache key on a tokenizer object."""

    def __init__(self, obj):
        self.obj = obj

    def __call__(self):
        return self.obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _Ref) and other.obj is self.obj


def tokenize_text(source: str, split: str, tokenizer) -> torch.Tensor:
    return _tokenize_cached(source, split, tokenizer_identity(tokenizer), _Ref(tokenizer))


def build_windows(spec: WindowSpec, tokenizer) -> Windows:
    text = load_text(spec.source, spec.split)
    L = spec.seqlen
    if spec.selection == "documents":
        ids, spans = _document_windows(spec, tokenizer, text.documents)
    else:
        all_ids = tokenize_text(spec.source, spec.split, tokenizer)
        end = len(all_ids) if spec.end is None else min(spec.end, len(all_ids))
        avail = end - spec.offset
        if spec.selection == "contiguous":
            n = spec.n if spec.n is not None else avail // L
            if n < 1 or n * L > avail:
                raise WindowError(
                    f"{spec.label()} has {len(all_ids)} tokens; {spec.n or 1} window(s) of {L} "
                    f"from token {spec.offset}{f' to {end}' if spec.end else ''} need "
                    f"{(spec.n or 1) * L} tokens but only {max(avail, 0)} are available"
                )
            starts = [spec.offset + i * L for i in range(n)]
        else:  # random
            if avail < L:
                raise WindowError(
                    f"{spec.label()} has only {max(avail, 0)} tokens in [{spec.offset}, {end}): "
                    f"too short for windows of {L}"
                )
            rng = random.Random(spec.seed)
            starts = [spec.offset + rng.randint(0, avail - L) for _ in range(spec.n)]
        ids = torch.stack([all_ids[s : s + L] for s in starts])
        spans = tuple((s, s + L) for s in starts)
    tokens_hash = hashlib.sha256(ids.numpy().astype("int64").tobytes()).hexdigest()[:16]
    return Windows(spec, ids, spans, text.content_hash, tokens_hash)


def _document_windows(spec: WindowSpec, tokenizer, documents) -> tuple[torch.Tensor, tuple]:
    rng = random.Random(spec.seed)
    L = spec.seqlen
    out, spans = [], []
    tries = 0
    while len(out) < spec.n:
        tries += 1
        if tries > 100 * spec.n + 1000:
            raise WindowError(
                f"{spec.label()}: could not find {spec.n} documents with at least {L} tokens"
            )
        i = rng.randint(0, len(documents) - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids = tokenizer(documents[i], return_tensors="pt").input_ids[0]
        if len(ids) <= L:
            continue
        s = rng.randint(0, len(ids) - L - 1)
        out.append(ids[s : s + L])
        spans.append((-(i + 1), s))  # document windows: (−doc index − 1, start in doc)
    return torch.stack(out), tuple(spans)


def check_disjoint(calibration: Windows, evaluation: Windows) -> None:
    """Evaluation text must never overlap calibration text (same source and split)."""
    if (calibration.spec.source, calibration.spec.split) != (
        evaluation.spec.source,
        evaluation.spec.split,
    ):
        return
    if calibration.spec.selection == "documents":
        raise WindowError(
            f"evaluation on {evaluation.spec.label()} uses the same text as document-sampled "
            "calibration; evaluate on another split or source"
        )
    for a0, a1 in calibration.spans:
        for b0, b1 in evaluation.spans:
            if a0 < b1 and b0 < a1:
                raise WindowError(
                    f"evaluation windows on {evaluation.spec.label()} overlap the calibration "
                    f"windows (tokens [{a0}, {a1}) and [{b0}, {b1})); move the evaluation offset "
                    "or restrict calibration with `end`"
                )
