"""Proposers, one module each; a study kind is the `kind` of the proposer that runs it.

Adding a search is adding a module here that defines a `Proposer` subclass with a `kind`
(see docs/loop.md; `random.py` is the worked example). Found by scanning this package.
"""

from __future__ import annotations

from prunestudio.engine.registry import Registry
from prunestudio.engine.study.proposers.base import Proposer

_REGISTRY = Registry(__name__, Proposer, "kind", "study kind")


def proposer_kinds() -> list[str]:
    return _REGISTRY.names()


def proposer_class(kind: str) -> type[Proposer]:
    return _REGISTRY.get(kind)


def make_proposer(config) -> Proposer:
    """The proposer of the config's study kind."""
    return proposer_class(config.study.kind).from_config(config)


__all__ = ["make_proposer", "proposer_class", "proposer_kinds"]
