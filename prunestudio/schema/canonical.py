"""Canonical JSON and spec hashes: one text (and one hash) per logical value."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "spec_hash", "HASH_CHARS"]

HASH_CHARS = 16  # hex characters kept from the sha256 digest (64 bits)


def _default(obj: Any) -> Any:
    # numpy scalars and arrays (and anything alike) without importing numpy.
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        raise TypeError("sets have no canonical order; pass a sorted list instead")
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` so that equal values give equal text.

    Keys are sorted, separators carry no whitespace, non-ASCII text is kept as is, tuples become
    lists and numpy scalars/arrays become plain numbers/lists. Floats are written as Python
    writes them: ``1.0`` stays ``1.0`` (and so hashes differently from ``1``), so callers should
    keep one numeric type per field. NaN and infinities raise ``ValueError``.
    """
    try:
        return json.dumps(
            obj,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_default,
        )
    except ValueError as exc:
        raise ValueError(f"value cannot be stored as JSON (NaN or infinity?): {exc}") from exc


def spec_hash(obj: Any) -> str:
    """First 16 hex characters of the sha256 of ``canonical_json(obj)`` (UTF-8)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:HASH_CHARS]
