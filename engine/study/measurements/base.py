"""The Measurement seam: one module per measurement, found by scanning this package.

A measurement has a `name` (what a job asks for), a pydantic `settings_model` (unknown keys are
errors), the `timing` key its seconds add to in the candidate's timings, and

    measure(model, ctx) -> list[metric record]

where `model` is the (pruned) `LoadedModel` to measure and `ctx` a `MeasureContext` (the
worker's `StudyContext`, the candidate's spec and what its pruning did). Each record carries
its identity (name, role, dataset, split, seqlen, n_samples, fidelity — the store's
`METRIC_KEYS`) and its protocol, so reports and UIs build their columns from what they find.
`applies(ctx)` says whether it runs for this candidate at all (no timing is recorded if not).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from prunestudio.engine.models.loading import LoadedModel
    from prunestudio.engine.progress import Reporter
    from prunestudio.engine.study.context import StudyContext
    from prunestudio.engine.study.executor import Pruned

    from prunestudio.schema.spec import CandidateSpec

Metric = dict[str, Any]  # a store metric record (keys: prunestudio.schema.METRIC_KEYS)


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class MeasureContext:
    study: StudyContext
    spec: CandidateSpec
    pruned: Pruned
    reporter: Reporter
    candidate_id: int | None = None


class Measurement(ABC):
    name: ClassVar[str] = ""
    settings_model: ClassVar[type[BaseModel]] = NoSettings
    timing: ClassVar[str | None] = "evaluate"  # key in the candidate's timings (None: untimed)

    def __init__(self, settings: BaseModel | None = None):
        self.settings = settings if settings is not None else self.settings_model()

    def applies(self, ctx: MeasureContext) -> bool:
        return True

    @abstractmethod
    def measure(self, model: LoadedModel, ctx: MeasureContext) -> list[Metric]:
        """Metric records of `model` (the pruned candidate)."""
