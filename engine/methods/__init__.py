"""Pruning methods, one module each, found by scanning this package.

Adding a method is adding a module that defines a `PruningMethod` subclass with a `name`.
"""

from __future__ import annotations

import importlib
import pkgutil

from prunestudio.engine.methods.base import PruningMethod

_REGISTRY: dict[str, PruningMethod] = {}


def _discover() -> None:
    if _REGISTRY:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, PruningMethod) and obj.name
                    and obj.__module__ == module.__name__):
                _REGISTRY[obj.name] = obj()


def method_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_method(name: str) -> PruningMethod:
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(method_names())}")
    return _REGISTRY[name]
