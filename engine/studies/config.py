"""The study file on disk: the embedded default study, reading a TOML file, `--calib` overrides.

The models (`StudyConfig` and its sections) are torch-free and live in
``prunestudio.schema.study_file``; this module adds what reads files and package data.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from prunestudio.schema.study_file import ConfigError, StudyConfig, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_STUDY = "default.toml"


def merge_window_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`--calib KEY=VALUE,...` over a window set (e.g. the default study's calibration): when
    the overrides change the source but name no split, the inherited split belonged to the old
    source and is dropped, so the new source's default split for the role applies (c4 →
    train for calibration) instead of failing with "'c4' has no split 'all'".

    A generated source (`--calib source=self,n=32`: text sampled from the model) has no text
    to select from, so the inherited `offset`, `end` and `selection` are dropped too; its
    generation settings are given as `generation.KEY=VALUE` (e.g. `generation.top_k=40`,
    `generation.top_k=none`)."""
    overrides = dict(overrides)
    generation = {key.split(".", 1)[1]: _none(value) for key, value in overrides.items()
                  if key.startswith("generation.")}
    for key in [k for k in overrides if k.startswith("generation.")]:
        del overrides[key]
    if generation:
        inherited = base.get("generation") if isinstance(base.get("generation"), dict) else {}
        overrides["generation"] = {**inherited, **generation}
    merged = {**base, **overrides}
    if "source" in overrides and overrides["source"] != base.get("source"):
        if "split" not in overrides:
            merged.pop("split", None)
        if _generated(overrides["source"]):
            for key in ("offset", "end", "selection"):
                if key not in overrides:
                    merged.pop(key, None)
        elif "generation" not in overrides:
            merged.pop("generation", None)  # the old (generated) source's settings
    return merged


def _none(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def _generated(name: Any) -> bool:
    from prunestudio.engine.data.sources import SOURCES

    return isinstance(name, str) and name in SOURCES and SOURCES[name].generated


def default_config_text() -> str:
    return resources.files("prunestudio.engine.studies").joinpath(DEFAULT_STUDY).read_text()


def load_config(path: str | Path | None = None) -> StudyConfig:
    """Read a study TOML (None: the embedded default study)."""
    if path is None:
        text, where = default_config_text(), "(embedded default study)"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"study config {p} does not exist (give a .toml file)")
        text, where = p.read_text(), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"study config {where} is not valid TOML: {exc}") from None
    return parse_config(data, where)
