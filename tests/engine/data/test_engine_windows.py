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


@pytest.mark.parametrize("source,calibration,evaluation", [
    ("c4", "train", "validation"),
    ("wikitext2", "train", "test"),
    ("ptb", "train", "test"),
    ("bookcorpus", "train", "train"),
    ("pydoc", "all", "all"),
    ("shakespeare", "all", "all"),
])
def test_each_source_has_its_own_default_splits(source, calibration, evaluation):
    src = get_source(source)
    assert (src.default_split("calibration"), src.default_split("evaluation")) == (
        calibration, evaluation)
    assert calibration in src.splits and evaluation in src.splits
    # a window set without a split: the held-out split
    assert WindowSpec(source=source).split == evaluation


def _config(calibration: dict, *evaluation: dict, search: dict | None = None):
    from prunestudio.schema.study_file import parse_config

    data = {"calibration": calibration,
            "evaluation": [{"role": f"set{i}", "windows": w} for i, w in enumerate(evaluation)]}
    if search is not None:
        data.update(study={"kind": "gp"}, search={"split": search})
    return parse_config(data, "(test)")


def test_a_config_without_split_takes_the_sources_split_for_each_role():
    config = _config({"source": "c4", "n": 4, "selection": "documents"},
                     {"source": "c4"}, {"source": "wikitext2"}, {"source": "ptb", "split": "validation"})
    assert config.calibration.split == "train"
    assert [e.windows.split for e in config.evaluation] == ["validation", "test", "validation"]
    assert config.to_dict()["calibration"]["split"] == "train"  # recorded as resolved
    search = _config({"source": "wikitext2"}, {"source": "pydoc", "offset": 40000},
                     search={"source": "wikitext2", "n": 2})
    assert search.calibration.split == "train" and search.search.split.split == "test"


def test_offline_sources_keep_split_all_so_recorded_configs_do_not_change():
    from prunestudio.engine.studies.config import load_config

    config = _config({"source": "pydoc", "seqlen": 32, "n": 4}, {"source": "pydoc"},
                     {"source": "shakespeare"})
    assert config.calibration.split == "all"
    assert [e.windows.split for e in config.evaluation] == ["all", "all"]
    default = load_config(None).to_dict()
    assert default["calibration"]["split"] == "all"
    assert [e["windows"]["split"] for e in default["evaluation"]] == ["all", "hamlet"]


def test_an_unknown_split_lists_the_sources_splits_at_config_time():
    from prunestudio.schema.study_file import ConfigError

    with pytest.raises(ConfigError) as exc:
        _config({"source": "c4", "split": "all"}, {"source": "pydoc"})
    assert ("calibration: text source 'c4' has no split 'all'; allowed: train, validation "
            "(default: train for calibration, validation for evaluation)") in str(exc.value)
    with pytest.raises(ConfigError, match=r"evaluation\.0\.windows: text source 'shakespeare' "
                       r"has no split 'macbeth2'; allowed: all, .*hamlet"):
        _config({"source": "pydoc"}, {"source": "shakespeare", "split": "macbeth2"})


def test_prune_calib_overrides_drop_the_inherited_split_when_the_source_changes():
    from prunestudio.engine.studies.config import load_config, merge_window_overrides

    base = load_config(None).to_dict()["calibration"]  # pydoc, split all
    c4 = merge_window_overrides(base, {"source": "c4", "n": 8})
    assert "split" not in c4 and c4["n"] == 8 and c4["seqlen"] == base["seqlen"]
    assert _config(c4, {"source": "pydoc"}).calibration.split == "train"
    explicit = merge_window_overrides(base, {"source": "c4", "split": "validation"})
    assert explicit["split"] == "validation"
    same = merge_window_overrides(base, {"source": "pydoc", "n": 2})
    assert same["split"] == "all"


def test_c4_requests_the_train_shard_and_fails_cleanly_without_the_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def offline(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    split = _config({"source": "c4", "n": 2, "selection": "documents"},
                    {"source": "pydoc"}).calibration.split
    with pytest.raises(TextSourceError) as exc:
        get_source("c4").load(split)
    assert calls == [("allenai/c4", None, {
        "data_files": {"train": "en/c4-train.00000-of-01024.json.gz"}, "split": "train"})]
    text = str(exc.value)
    assert ("text source 'c4' split 'train' could not be loaded: it downloads the Hugging Face "
            "dataset allenai/c4, file en/c4-train.00000-of-01024.json.gz and needs the Hugging "
            "Face hub (network access)") in text
    assert "HF_HUB_OFFLINE" in text and "ConnectionError" in text and "'pydoc'" in text


def test_c4_validation_shard_is_what_an_evaluation_set_reads(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake(path, name=None, **kwargs):
        calls.append(kwargs["data_files"])
        return {"text": ["first document.", "second document."]}

    monkeypatch.setattr(datasets, "load_dataset", fake)
    split = _config({"source": "pydoc"}, {"source": "c4"}).evaluation[0].windows.split
    text = get_source("c4").load(split)
    assert calls == [{"validation": "en/c4-validation.00000-of-00008.json.gz"}]
    assert text.text == "first document. second document." and text.split == "validation"
