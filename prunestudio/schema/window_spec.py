"""Which token windows of a text a study uses: the torch-free description.

The engine cuts the windows (``prunestudio.engine.data.windows.build_windows``) and records the
hash of the exact tokens; this is the part a study file and a recorded config carry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from .catalog import Catalog, catalog_for

__all__ = ["GenerationSettings", "WindowSpec", "is_generated", "refuse_generated",
           "with_default_split"]


class GenerationSettings(BaseModel):
    """How the windows of a generated source (`self`) are sampled from the dense model (Shin
    et al. 2024): a first token drawn uniformly from the vocabulary (special tokens excluded),
    greedy decoding up to `prefix` tokens in all, then sampling up to the window length with
    `temperature`, `top_k` and `top_p` (the defaults are Hugging Face generate's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: int = Field(5, ge=1, description="tokens decoded greedily, the random first one "
                        "included (1: sampling right after the first token)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the sampling")
    top_k: int | None = Field(50, ge=1, description="sample among the k likeliest tokens "
                              "(None: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the smallest set of "
                         "likeliest tokens whose probability reaches top_p (1: off)")


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

    A generated source (`self`: text sampled from the model) has no text to select from: it
    needs `n`, takes no `offset`, `end` or `selection` other than the defaults, and samples by
    `generation` (default `GenerationSettings()`; `seed` seeds the sampling). Any other source
    takes no `generation`, and its dump has no `generation` key (recorded configs unchanged).
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
    generation: GenerationSettings | None = None

    @model_serializer(mode="wrap")
    def _drop_unset_generation(self, handler: SerializerFunctionWrapHandler,
                               info: SerializationInfo) -> dict:
        data = handler(self)
        if isinstance(data, dict) and data.get("generation", ...) is None:
            del data["generation"]  # text sources: the same dump (and hashes) as before
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> WindowSpec:
        catalog = catalog_for(info)
        if catalog is not None:
            source = catalog.source(self.source)  # unknown source -> error at config time
            if self.split is None:
                object.__setattr__(self, "split", source.default_split("evaluation"))
            source.check_split(self.split)  # unknown split -> the source's splits
            if source.generated:
                self._check_generated()
            elif self.generation is not None:
                raise ValueError(f"generation settings are for a generated source (self); "
                                 f"{self.source!r} is text: leave generation out")
        if self.selection != "contiguous" and self.n is None:
            raise ValueError(f"selection {self.selection!r} needs n (number of windows)")
        if self.end is not None and self.end <= self.offset:
            raise ValueError(f"end ({self.end}) must be greater than offset ({self.offset})")
        return self

    def _check_generated(self) -> None:
        if self.n is None:
            raise ValueError(f"text source {self.source!r} generates its windows: give n (the "
                             "number of windows to generate)")
        given = [f"{key} = {value!r}" for key, value, default in (
            ("selection", self.selection, "contiguous"), ("offset", self.offset, 0),
            ("end", self.end, None)) if value != default]
        if given:
            raise ValueError(f"text source {self.source!r} generates its windows: there is no "
                             f"text to select from, so {', '.join(given)} means nothing; leave "
                             "selection, offset and end out (the windows: n, seqlen, seed and "
                             "generation)")
        if self.generation is None:
            object.__setattr__(self, "generation", GenerationSettings())

    def label(self) -> str:
        return f"{self.source}:{self.split}"


def is_generated(name: str, catalog: Catalog | None) -> bool:
    """Whether the text source `name` is generated from the model (False without a catalog or
    for an unknown name: validation of the window set reports that)."""
    if catalog is None:
        return False
    try:
        return bool(catalog.source(name).generated)
    except ValueError:
        return False


def refuse_generated(spec: Any, where: str, catalog: Catalog | None) -> None:
    """A ValueError when the window set `spec` (a WindowSpec) of `where` (e.g.
    "[[evaluation]] 'in_domain'") names a generated source: those are for [calibration] only."""
    name = getattr(spec, "source", None)
    if not isinstance(name, str) or not is_generated(name, catalog):
        return
    raise ValueError(catalog.source(name).calibration_only(where))


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
