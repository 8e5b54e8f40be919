"""Pruning methods, one module each, found by scanning this package.

Adding a method is adding a module that defines a `PruningMethod` (prunes layers in place) or a
`ShapeChangingMethod` (returns a smaller model) subclass with a `name`.
"""

from __future__ import annotations

from prunestudio.engine.methods.base import MethodBase, PruningMethod, ShapeChangingMethod
from prunestudio.engine.registry import discover

_REGISTRY: dict[str, MethodBase] = {}


def _discover() -> None:
    if not _REGISTRY:
        _REGISTRY.update({k: cls() for k, cls in discover(__name__, MethodBase, "name").items()})


def method_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodBase:
    """The method of either kind (`PruningMethod` or `ShapeChangingMethod`) called `name`."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(method_names())}")
    return _REGISTRY[name]


def is_shape_changing(name: str) -> bool:
    return isinstance(get_method(name), ShapeChangingMethod)


__all__ = ["MethodBase", "PruningMethod", "ShapeChangingMethod", "get_method",
           "is_shape_changing", "method_names"]
