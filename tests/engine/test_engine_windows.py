"""Token windows from the offline text sources, tokenized with a byte-level tokenizer so every
window can be checked against the raw bytes of the text."""

from __future__ import annotations

import pydantic
import pytest
from prunestudio.engine.data.sources import TextSourceError, get_source, load_text
from prunestudio.engine.data.windows import WindowError, WindowSpec, build_windows, check_disjoint


def _raw(source: str, split: str) -> bytes:
    return load_text(source, split).text.encode()


def test_contiguous_windows_cover_the_text_back_to_back(byte_tok):
    raw = _raw("shakespeare", "hamlet")
    w = build_windows(WindowSpec(source="shakespeare", split="hamlet", seqlen=64), byte_tok)
    assert w.n == len(raw) // 64  # every full window, the tail dropped
    assert w.spans[0] == (0, 64) and w.spans[-1] == ((w.n - 1) * 64, w.n * 64)
    assert byte_tok.decode(w.ids[:3].reshape(-1).tolist()).encode() == raw[: 3 * 64]
    assert w.text_hash == load_text("shakespeare", "hamlet").content_hash


def test_random_windows_are_seeded_and_inside_the_range(byte_tok):
    raw = _raw("pydoc", "all")
    spec = WindowSpec(source="pydoc", seqlen=32, n=6, selection="random", seed=3,
                      offset=1000, end=5000)
    a, b = build_windows(spec, byte_tok), build_windows(spec, byte_tok)
    assert a.spans == b.spans and a.tokens_hash == b.tokens_hash
    other = build_windows(spec.model_copy(update={"seed": 4}), byte_tok)
    assert other.spans != a.spans and other.tokens_hash != a.tokens_hash
    for (s, e), ids in zip(a.spans, a.ids, strict=True):
        assert 1000 <= s and e <= 5000 and e - s == 32
        assert byte_tok.decode(ids.tolist()).encode() == raw[s:e]


def test_document_windows_come_from_long_enough_documents(byte_tok):
    docs = load_text("pydoc", "all").documents
    spec = WindowSpec(source="pydoc", seqlen=48, n=5, selection="documents", seed=1)
    w = build_windows(spec, byte_tok)
    assert w.ids.shape == (5, 48)
    for (neg_doc, start), ids in zip(w.spans, w.ids, strict=True):
        doc = docs[-neg_doc - 1].encode()
        assert len(doc) > 48
        assert byte_tok.decode(ids.tolist()).encode() == doc[start : start + 48]


def test_window_longer_than_the_text_is_a_window_error(byte_tok):
    n_bytes = len(_raw("shakespeare", "hamlet"))
    with pytest.raises(WindowError, match=rf"has {n_bytes} tokens.*need {n_bytes + 1} tokens"):
        build_windows(WindowSpec(source="shakespeare", split="hamlet", seqlen=n_bytes + 1),
                      byte_tok)
    with pytest.raises(WindowError, match="need 640 tokens but only 600 are available"):
        build_windows(WindowSpec(source="shakespeare", split="hamlet", seqlen=64, n=10,
                                 offset=n_bytes - 600), byte_tok)
    with pytest.raises(WindowError, match="too short for windows of 64"):
        build_windows(WindowSpec(source="shakespeare", split="hamlet", seqlen=64, n=2,
                                 selection="random", offset=100, end=150), byte_tok)


def test_calibration_and_evaluation_windows_must_not_overlap(byte_tok):
    calib = build_windows(WindowSpec(source="pydoc", seqlen=32, n=4, selection="random",
                                     seed=0, end=2000), byte_tok)
    overlapping = build_windows(WindowSpec(source="pydoc", seqlen=64, n=40), byte_tok)
    with pytest.raises(WindowError, match="overlap the calibration windows"):
        check_disjoint(calib, overlapping)
    after = build_windows(WindowSpec(source="pydoc", seqlen=64, n=4, offset=2000), byte_tok)
    check_disjoint(calib, after)  # disjoint: no error
    other_split = build_windows(WindowSpec(source="shakespeare", split="hamlet", seqlen=64, n=2),
                                byte_tok)
    check_disjoint(calib, other_split)
    docs = build_windows(WindowSpec(source="pydoc", seqlen=32, n=2, selection="documents"),
                         byte_tok)
    with pytest.raises(WindowError, match="document-sampled calibration"):
        check_disjoint(docs, after)


def test_unknown_sources_and_splits_list_the_allowed_values():
    with pytest.raises(TextSourceError, match=r"unknown text source 'wikitext'; allowed: .*pydoc"):
        get_source("wikitext")
    with pytest.raises(pydantic.ValidationError, match=r"unknown text source 'nope'.*shakespeare"):
        WindowSpec(source="nope")
    with pytest.raises(TextSourceError, match=r"no split 'test'; allowed: all"):
        load_text("pydoc", "test")
    with pytest.raises(pydantic.ValidationError, match=r"selection 'random' needs n"):
        WindowSpec(source="pydoc", selection="random")
    with pytest.raises(pydantic.ValidationError, match=r"end \(10\) must be greater than offset"):
        WindowSpec(source="pydoc", offset=10, end=10)
    with pytest.raises(pydantic.ValidationError, match="seqlen"):
        WindowSpec(source="pydoc", seqlen=1)
