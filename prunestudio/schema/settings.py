"""The torch-free part of a study configuration, as readers need it.

``prunestudio.schema.study_file.StudyConfig`` (pydantic) validates a TOML file and is what
the engine runs; its ``to_dict()`` is recorded in the store as the study's config. This module
reads that recorded dict back into typed, frozen values without importing the engine: the
study kind, its evaluation sets (role, fidelity, windows) and its search settings. Fields the
engine adds later are kept in ``raw`` and ignored here, so an older reader opens a newer
config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .constants import SEARCH_KINDS, SEARCH_ROLE

__all__ = ["EvalSettings", "SearchSettings", "StudySettings"]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """One perplexity evaluation of a study: its role, fidelity and windows."""

    role: str
    fidelity: str = "full"
    windows: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> EvalSettings:
        return cls(role=str(data["role"]), fidelity=str(data.get("fidelity") or "full"),
                   windows=_mapping(data.get("windows")))


@dataclass(frozen=True, slots=True)
class SearchSettings:
    """What readers need of a gp / random study's [search] table."""

    budget: int | None = None
    population: int | None = None
    finalists: int | None = None
    sparsity: float | None = None
    pattern: str | None = None
    split: Mapping[str, Any] = field(default_factory=dict, hash=False)
    baselines: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> SearchSettings:
        return cls(budget=data.get("budget"), population=data.get("population"),
                   finalists=data.get("finalists"), sparsity=data.get("sparsity"),
                   pattern=data.get("pattern"), split=_mapping(data.get("split")),
                   baselines=tuple(data.get("baselines") or ()))


@dataclass(frozen=True, slots=True)
class StudySettings:
    """A recorded study config, read back: kind, seed, evaluation sets, search settings."""

    kind: str | None = None
    seed: int | None = None
    evaluation: tuple[EvalSettings, ...] = ()
    search: SearchSettings | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    @classmethod
    def of(cls, config: Mapping[str, Any] | None, kind: str | None = None) -> StudySettings:
        """From the config dict a study recorded (``kind`` from the study row wins)."""
        data = _mapping(config)
        study = _mapping(data.get("study"))
        evaluation = tuple(EvalSettings.of(e) for e in data.get("evaluation") or ()
                           if isinstance(e, Mapping) and e.get("role"))
        search = data.get("search")
        return cls(kind=kind or study.get("kind"), seed=study.get("seed"),
                   evaluation=evaluation,
                   search=SearchSettings.of(search) if isinstance(search, Mapping) else None,
                   raw=data)

    @property
    def is_search(self) -> bool:
        return self.kind in SEARCH_KINDS

    @property
    def evaluation_roles(self) -> tuple[str, ...]:
        """The [[evaluation]] roles, in config order (never the search role)."""
        return tuple(e.role for e in self.evaluation)

    @property
    def primary_role(self) -> str | None:
        """The role the study is ranked by: the search fitness ('search') for a gp / random
        study, else the first evaluation set's role (None without one)."""
        if self.is_search:
            return SEARCH_ROLE
        return self.evaluation[0].role if self.evaluation else None
