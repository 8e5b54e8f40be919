"""One registry rule for every seam: a member is a module of the seam's package.

`discover(package, base, key)` imports each module of `package` (not `base` nor `_private`
ones) and returns {the class's `key` attribute: class} for the subclasses of `base` that the
module defines with a non-empty key: pruning methods, measurements, proposers."""

from __future__ import annotations

import importlib
import pkgutil
import sys


def discover(package: str, base: type, key: str) -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(sys.modules[package].__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, base) and getattr(obj, key)
                    and obj.__module__ == module.__name__):
                found[getattr(obj, key)] = obj
    return found


class Registry:
    """The members of one seam, discovered on first use: `names()`, `get(key)` (a clear error
    naming the allowed keys)."""

    def __init__(self, package: str, base: type, key: str, what: str) -> None:
        self.package, self.base, self.key, self.what = package, base, key, what
        self._found: dict[str, type] | None = None

    def _members(self) -> dict[str, type]:
        if self._found is None:
            self._found = discover(self.package, self.base, self.key)
        return self._found

    def names(self) -> list[str]:
        return sorted(self._members())

    def get(self, key: str) -> type:
        members = self._members()
        if key not in members:
            raise ValueError(f"unknown {self.what} {key!r}; allowed: {', '.join(self.names())}")
        return members[key]
