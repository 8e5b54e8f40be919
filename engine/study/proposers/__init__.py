"""Proposers, one module each; a study kind is the `kind` of the proposer that runs it.

Adding a search is adding a module here that defines a `Proposer` subclass with a `kind`
(see docs/loop.md; `random.py` is the worked example). Found by scanning this package.
"""

from __future__ import annotations

from prunestudio.engine.registry import discover
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    Proposal,
    Proposer,
    Reuse,
    Round,
    Skip,
)

_REGISTRY: dict[str, type[Proposer]] = {}


def _discover() -> None:
    if not _REGISTRY:
        _REGISTRY.update(discover(__name__, Proposer, "kind"))


def proposer_kinds() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def proposer_class(kind: str) -> type[Proposer]:
    _discover()
    if kind not in _REGISTRY:
        raise ValueError(f"unknown study kind {kind!r}; allowed: {', '.join(proposer_kinds())}")
    return _REGISTRY[kind]


def make_proposer(config) -> Proposer:
    """The proposer of the config's study kind."""
    return proposer_class(config.study.kind).from_config(config)


__all__ = ["Item", "Note", "Proposal", "Proposer", "Reuse", "Round", "Skip", "make_proposer",
           "proposer_class", "proposer_kinds"]
