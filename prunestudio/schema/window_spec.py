"""Which token windows of a text a study uses: the torch-free description.

The engine cuts the windows (``prunestudio.engine.data.windows.build_windows``) and records the
hash of the exact tokens; this is the part a study file and a recorded config carry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from .catalog import Catalog, catalog_for

__all__ = ["WindowSpec", "with_default_split"]


class WindowSpec(BaseModel):
    """Which token windows of a text to use.

    selection:
      contiguous - back-to-back windows starting at token `offset` (the perplexity protocol);
      random     - `n` windows at seeded random positions in tokens [offset, end);
      documents  - Wanda/SparseGPT C4 style: random documents with at least `seqlen` tokens,
                   one random window inside each.
    `n = None` (contiguous only) takes every full window to the end (tail dropped).
    `split = None` takes the source's evaluation split (its held-out text); a study config
    fills in the calibration split for [calibration] (see `with_default_split`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    split: str | None = None
    seqlen: int = Field(128, ge=2)
    n: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)
    end: int | None = Field(None, ge=1)
    selection: Literal["contiguous", "random", "documents"] = "contiguous"
    seed: int = 0

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> WindowSpec:
        catalog = catalog_for(info)
        if catalog is not None:
            source = catalog.source(self.source)  # unknown source -> error at config time
            if self.split is None:
                object.__setattr__(self, "split", source.default_split("evaluation"))
            source.check_split(self.split)  # unknown split -> the source's splits
        if self.selection != "contiguous" and self.n is None:
            raise ValueError(f"selection {self.selection!r} needs n (number of windows)")
        if self.end is not None and self.end <= self.offset:
            raise ValueError(f"end ({self.end}) must be greater than offset ({self.offset})")
        return self

    def label(self) -> str:
        return f"{self.source}:{self.split}"


def with_default_split(data: Any, role: str, catalog: Catalog | None) -> Any:
    """A window set as given in a config (a dict) with its source's default split for `role`
    ('calibration' or 'evaluation') filled in when it names none; anything else unchanged
    (validation reports it). Without a catalog (shape-only validation) unchanged."""
    if catalog is None or not isinstance(data, dict) or data.get("split") is not None:
        return data
    name = data.get("source")
    if not isinstance(name, str):
        return data
    try:
        source = catalog.source(name)
    except ValueError:
        return data  # WindowSpec names the unknown source and the allowed ones
    return {**data, "split": source.default_split(role)}
