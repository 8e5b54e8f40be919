"""What a worker loads once per study and shares between candidates: `StudyContext`.

The model is loaded once, the calibration and evaluation windows are cut once (evaluation text
never overlaps calibration text), dense statistics are computed once (and cached on disk) and a
pristine copy of the prunable weights is kept, so a candidate restores only what it changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.data.generated import build_any_windows, is_generated_spec
from prunestudio.engine.data.windows import Windows, build_windows, check_disjoint
from prunestudio.engine.models.loading import LoadedModel, load_model
from prunestudio.engine.progress import Reporter
from prunestudio.engine.pruning import WeightSnapshot

from prunestudio.schema.study_file import StudyConfig, TasksSection


@dataclass
class EvalWindows:
    role: str
    fidelity: str
    windows: Windows
    batch_size: int


@dataclass
class StudyContext:
    """Everything loaded once per study and shared by its candidates."""

    lm: LoadedModel
    calibration: Windows
    evaluations: list[EvalWindows]
    stats: StatsCache
    snapshot: WeightSnapshot
    timings: dict[str, float] = field(default_factory=dict)
    tasks: TasksSection | None = None  # lm-eval accuracy after the perplexities
    search_split: EvalWindows | None = None  # searches: the fitness windows (cut once)
    search_parts: list[EvalWindows] = field(default_factory=list)  # tpe: one per split text
    search_parts_key: str | None = None  # the canonical JSON of the splits they were cut from
    _subset: tuple[tuple[int, ...], StatsCache] | None = None

    def stats_for(self, samples: tuple[int, ...] | None) -> StatsCache:
        """The statistics a spec prunes with: the whole calibration set, or the subset of its
        windows it names (`CandidateSpec.calibration_samples`; the last subset is kept, so a
        winner re-measured right after its trial does not recompute its gradients)."""
        if samples is None:
            return self.stats
        if self._subset is None or self._subset[0] != tuple(samples):
            self._subset = (tuple(samples), self.stats.subset(samples))
        return self._subset[1]


def cut_windows(config: StudyConfig, lm: LoadedModel, reporter: Reporter | None = None
                ) -> tuple[Windows, list[EvalWindows]]:
    """Calibration and evaluation windows; evaluation text never overlaps calibration text.
    Calibration windows of a generated source (`self`) are sampled from `lm`, which must still
    be the dense model (or come from its disk cache)."""
    spec = config.calibration
    if is_generated_spec(spec):
        reporter = reporter or Reporter()
        with reporter.task(f"generate calibration {spec.n}×{spec.seqlen}", spec.n) as bar:
            calibration = build_any_windows(spec, lm, progress=bar)
    else:
        calibration = build_windows(spec, lm.tokenizer)
    evaluations = []
    for ev in config.evaluation:
        windows = build_windows(ev.windows, lm.tokenizer)
        check_disjoint(calibration, windows)
        evaluations.append(EvalWindows(ev.role, ev.fidelity, windows, ev.batch_size))
    return calibration, evaluations


def prepare(config: StudyConfig, reporter: Reporter | None = None,
            lm: LoadedModel | None = None) -> StudyContext:
    """Load the model (unless given) and cut the windows: the once-per-study work."""
    reporter = reporter or Reporter()
    timings: dict[str, float] = {}
    if lm is None:
        reporter.message(f"loading model {config.model.source!r} ...")
        lm = load_model(config.model.source, device=config.model.device, dtype=config.model.dtype)
    timings["load"] = lm.load_seconds
    t0 = time.perf_counter()
    calibration, evaluations = cut_windows(config, lm, reporter)
    timings["windows"] = time.perf_counter() - t0
    calib_key = calibration_hash(calibration.ids, calibration.tokens_hash)
    stats = StatsCache(lm, calibration.ids, calib_key)
    return StudyContext(lm, calibration, evaluations, stats, WeightSnapshot(lm), timings,
                        tasks=config.tasks)


def input_identity(ctx: StudyContext) -> dict[str, str]:
    """What every candidate records of its inputs (checked on resume, export and eval)."""
    return {"model_fingerprint": ctx.lm.fingerprint,
            "calibration_tokens_hash": ctx.calibration.tokens_hash}
