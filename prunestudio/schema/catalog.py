"""What the schema's validators look up in the engine's registries, without importing it.

A study file names pruning methods, text sources, lm-eval tasks, symbolic expressions and
measurements; whether a name exists (and what a method's options default to) is known only to
the engine's registries. The schema must not import the engine (it would pull in torch), so
the dependency points the other way: the engine installs a :class:`Catalog` when it is imported
(``prunestudio/engine/__init__.py``), and the schema's validators ask :func:`catalog_for`.

Two ways to validate:

* **full** (the default): every name is checked and a method's options get their defaults
  filled in, so equal candidates have equal canonical JSON. Needs the engine imported; without
  it :class:`CatalogMissingError` says so (never a silently half-checked spec).
* **shape only** (``model_validate(data, context=SHAPE_ONLY)``): types, ranges and structure
  only. This is how a torch-free reader (the TUI, the web app) reads back a config or spec the
  engine recorded, which the engine has already checked in full.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pydantic only for annotations: importing the schema stays light
    from pydantic import BaseModel, ValidationInfo

__all__ = ["SHAPE_ONLY", "Catalog", "CatalogMissingError", "MethodInfo", "SourceInfo",
           "catalog_for", "current_catalog", "install_catalog"]

SHAPE_ONLY: Mapping[str, Any] = {"shape_only": True}
"""Validation context for torch-free readers: check the shape, look nothing up."""


class CatalogMissingError(RuntimeError):
    """Full validation was asked for but no engine catalog is installed."""


class MethodInfo(Protocol):
    """What validation needs of a registered pruning method."""

    name: str
    structured: bool

    def validate_options(self, options: dict) -> BaseModel: ...

    def sparsity_from_options(self, options: Any) -> bool: ...


class SourceInfo(Protocol):
    """What validation needs of a text source."""

    generated: bool  # sampled from the model (`self`): calibration windows only

    def default_split(self, role: str = "evaluation") -> str: ...

    def check_split(self, split: str) -> None: ...

    def calibration_only(self, where: str) -> str: ...


class Catalog(Protocol):
    """The engine's registries, as validation sees them. Every lookup of an unknown name
    raises ``ValueError`` naming the allowed ones."""

    def method(self, name: str) -> MethodInfo: ...

    def source(self, name: str) -> SourceInfo: ...

    def tasks(self, names: list[str]) -> list[str]:
        """Task names and aliases, resolved to lm-eval task names."""
        ...

    def expression(self, text: str, *, known_names: bool = False) -> tuple[str, int]:
        """A symbolic metric (an expression; with ``known_names`` also a known metric's name)
        as (canonical text, depth of the deeper of the tree and its simplified form)."""
        ...

    def measurement_names(self) -> list[str]: ...

    def study_kinds(self) -> list[str]:
        """The kinds of the registered proposers (grid, gp, random, ...)."""
        ...


_installed: Catalog | None = None


def install_catalog(catalog: Catalog) -> None:
    """Called by the engine on import; a second call replaces the first (tests)."""
    global _installed
    _installed = catalog


def current_catalog() -> Catalog:
    if _installed is None:
        raise CatalogMissingError(
            "checking method, source, task and expression names needs the engine's registries: "
            "import prunestudio.engine first, or validate a recorded value with "
            "context=prunestudio.schema.SHAPE_ONLY")
    return _installed


def catalog_for(info: ValidationInfo | None) -> Catalog | None:
    """The catalog a validator should consult: None under ``SHAPE_ONLY``."""
    context = info.context if info is not None else None
    if isinstance(context, Mapping) and context.get("shape_only"):
        return None
    return current_catalog()
