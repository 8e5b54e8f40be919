"""Study configuration: what `prunestudio run CONFIG.toml` reads.

One pydantic model per TOML table, all with ``extra="forbid"`` so a typo is an error that names
the key, never a silently ignored setting. `load_config` turns any problem into a `ConfigError`
whose message names the file, the field path and what is allowed.
"""

from __future__ import annotations

import itertools
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from prunestudio.engine.data.windows import WindowSpec
from prunestudio.engine.spec import CandidateSpec, Pattern
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_STUDY = "default.toml"


class ConfigError(ValueError):
    """A study configuration that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySection(_Strict):
    name: str | None = Field(None, description="unique study name; default: <kind>-<id>")
    kind: Literal["grid"] = "grid"
    seed: int = 0


class ModelSection(_Strict):
    source: str = Field("default", description="'default', a hub id, a folder or a .gguf file")
    device: str = "auto"
    dtype: str = "auto"


class EvalSet(_Strict):
    """One perplexity evaluation: which windows, under which role and fidelity."""

    role: str = Field(description="e.g. in_domain (held-out text of the calibration source) "
                      "or out_of_domain")
    fidelity: Literal["proxy", "full"] = "full"
    windows: WindowSpec
    batch_size: int = Field(4, ge=1)


class GridSection(_Strict):
    """Methods × sparsities × patterns; unstructured patterns take every sparsity, N:M
    patterns fix their own (2:4 → 0.5)."""

    methods: list[str] = Field(default_factory=list)
    sparsities: list[float] = Field(default_factory=lambda: [0.5])
    patterns: list[str] = Field(default_factory=lambda: ["unstructured"])
    layer_ratios: Literal["uniform", "owl"] = "uniform"
    include_dense: bool = True

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            Pattern.parse(p)
        return v


class StudyConfig(_Strict):
    study: StudySection = StudySection()
    model: ModelSection = ModelSection()
    calibration: WindowSpec
    evaluation: list[EvalSet] = Field(min_length=1)
    grid: GridSection = GridSection()
    candidates: list[CandidateSpec] = Field(default_factory=list,
                                            description="explicit extra candidates")

    @field_validator("evaluation")
    @classmethod
    def _roles_unique(cls, v: list[EvalSet]) -> list[EvalSet]:
        roles = [e.role for e in v]
        if len(set(roles)) != len(roles):
            raise ValueError(f"evaluation roles must be unique; got {roles}")
        return v

    @property
    def primary_role(self) -> str:
        """The role results are sorted by: the first evaluation set."""
        return self.evaluation[0].role

    def candidate_specs(self) -> list[CandidateSpec]:
        """The grid expanded (dense first), then the explicit candidates; duplicates dropped."""
        specs: list[CandidateSpec] = []
        if self.grid.include_dense and self.grid.methods:
            specs.append(CandidateSpec(method="dense"))
        for method, pattern_text in itertools.product(self.grid.methods, self.grid.patterns):
            pattern = Pattern.parse(pattern_text)
            sparsities = [pattern.sparsity] if pattern.kind == "nm" else self.grid.sparsities
            for s in sparsities:
                specs.append(CandidateSpec(
                    method=method, sparsity=s, pattern=pattern,
                    layer_ratios=self.grid.layer_ratios if pattern.kind != "nm" else "uniform",
                ))
        specs.extend(self.candidates)
        seen, out = set(), []
        for spec in specs:
            if spec.hash() not in seen:
                seen.add(spec.hash())
                out.append(spec)
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _format_validation(exc: ValidationError, where: str) -> str:
    lines = [f"invalid study config {where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/ for examples)"
        elif err["type"] == "literal_error":
            msg = f"{msg}; got {err.get('input')!r}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], where: str = "") -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, where)) from None


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
