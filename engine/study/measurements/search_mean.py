"""Search fitness over several texts: the mean perplexity of the search splits (AdaPruner's
objective averages WikiText-2 and PTB).

Records one ``ppl`` per split (role ``search_<source>``, `schema.search_part_roles`; its own
dataset / split / windows, fidelity ``proxy``) and their arithmetic mean as the fitness (role ``search``; dataset and split the
parts' joined with ``+``, n_samples their windows together, the parts in its protocol), so every
reader that ranks a search by its ``search`` metric ranks by the objective. The splits' windows
are cut once per worker (kept on the study context) and checked disjoint from the calibration
text and every evaluation set.
"""

from __future__ import annotations

from typing import Any

from prunestudio.engine.data.windows import WindowError, build_windows, check_disjoint
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.search.fitness_reuse import check_fitness
from prunestudio.engine.study.context import EvalWindows, StudyContext
from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings
from pydantic import Field

from prunestudio.schema import SEARCH_ROLE, search_part_roles
from prunestudio.schema.canonical import canonical_json
from prunestudio.schema.window_spec import WindowSpec


class Settings(NoSettings):
    splits: list[WindowSpec] = Field(min_length=1)
    batch_size: int = Field(4, ge=1)
    check_finite: bool = True


def search_parts(ctx: StudyContext, splits: list[WindowSpec], batch_size: int
                 ) -> list[EvalWindows]:
    """The splits' windows (cut on first use, then kept on `ctx`), disjoint from the
    calibration text and every evaluation set."""
    key = canonical_json([w.model_dump(mode="json") for w in splits])
    if ctx.search_parts_key == key and ctx.search_parts:
        return ctx.search_parts
    parts = []
    roles = search_part_roles([(w.source, w.split) for w in splits])
    for spec, role in zip(splits, roles, strict=True):
        windows = build_windows(spec, ctx.lm.tokenizer)
        for what, other in [("calibration", ctx.calibration)] + [
                (f"evaluation set {ev.role!r}", ev.windows) for ev in ctx.evaluations]:
            try:
                check_disjoint(other, windows)
            except WindowError as exc:
                raise WindowError(f"search split {spec.label()} overlaps the {what}: "
                                  f"{exc}") from None
        parts.append(EvalWindows(role, "proxy", windows, batch_size))
    ctx.search_parts, ctx.search_parts_key = parts, key
    return parts


def mean_metric(parts: list[Metric]) -> Metric:
    """The fitness record: the mean of the parts' PPLs, its identity joined from theirs."""
    seqlens = {m["seqlen"] for m in parts}
    protocol: dict[str, Any] = {
        "objective": f"mean PPL of {len(parts)} search split(s)",
        "parts": [{"dataset": m["dataset"], "split": m["split"], "seqlen": m["seqlen"],
                   "n_samples": m["n_samples"], "value": m["value"],
                   "offset": m["protocol"]["offset"],
                   "tokens_hash": m["protocol"]["tokens_hash"]} for m in parts]}
    return {"name": "ppl", "value": sum(m["value"] for m in parts) / len(parts),
            "dataset": "+".join(m["dataset"] for m in parts),
            "split": "+".join(m["split"] for m in parts),
            "seqlen": seqlens.pop() if len(seqlens) == 1 else None,
            "n_samples": sum(m["n_samples"] for m in parts), "fidelity": "proxy",
            "role": SEARCH_ROLE, "protocol": protocol}


class SearchMean(Measurement):
    name = "search_mean"
    settings_model = Settings
    timing = "evaluate"

    def measure(self, model, ctx) -> list[Metric]:
        s = self.settings
        parts = []
        for ev in search_parts(ctx.study, list(s.splits), s.batch_size):
            with ctx.reporter.task(f"ppl {ev.windows.spec.label()}", ev.windows.n) as bar:
                ppl = perplexity(model.model, ev.windows, model.device, ev.batch_size, bar)
            parts.append(ppl.metric(fidelity="proxy", role=ev.role, windows=ev.windows))
        fitness = mean_metric(parts)
        if s.check_finite:
            check_fitness(fitness["value"], f"candidate {ctx.candidate_id} {ctx.spec.label}")
        return parts + [fitness]
