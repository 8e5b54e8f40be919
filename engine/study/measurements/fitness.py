"""Search fitness: perplexity on the search split (role ``search``, fidelity ``proxy``).

The split is cut once per study (`cut_search_split`), disjoint from the calibration text and
from every evaluation set. Settings: `check_finite` — a NaN / inf fitness fails the candidate
(`NonFiniteFitnessError`), as a search candidate must; baselines record what they get.
"""

from __future__ import annotations

from prunestudio.engine.data.windows import WindowError, build_windows, check_disjoint
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.search.fitness_reuse import check_fitness
from prunestudio.engine.study.context import EvalWindows, StudyContext
from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings

from prunestudio.schema import SEARCH_ROLE
from prunestudio.schema.study_file import StudyConfig


def cut_search_split(config: StudyConfig, ctx: StudyContext) -> EvalWindows:
    """The search split's windows, checked disjoint from calibration and every evaluation set."""
    settings = config.search
    windows = build_windows(settings.split, ctx.lm.tokenizer)
    pairs = [("calibration", ctx.calibration)] + [
        (f"evaluation set {ev.role!r}", ev.windows) for ev in ctx.evaluations]
    for what, other in pairs:
        try:
            check_disjoint(other, windows)
        except WindowError as exc:
            raise WindowError(f"search.split overlaps the {what}: {exc}") from None
    return EvalWindows(SEARCH_ROLE, "proxy", windows, settings.batch_size)


class Settings(NoSettings):
    check_finite: bool = True


class Fitness(Measurement):
    name = "fitness"
    settings_model = Settings
    timing = "evaluate"

    def measure(self, model, ctx) -> list[Metric]:
        ev = ctx.study.search_split
        if ev is None:
            raise ValueError("the fitness measurement needs a search split ([search] split)")
        with ctx.reporter.task("ppl search split", ev.windows.n) as bar:
            ppl = perplexity(model.model, ev.windows, model.device, ev.batch_size, bar)
        metric = ppl.metric(fidelity="proxy", role=SEARCH_ROLE, windows=ev.windows)
        if self.settings.check_finite:
            expression = ctx.spec.options.get("expression") or ctx.spec.label
            check_fitness(metric["value"], f"candidate {ctx.candidate_id} {expression}")
        return [metric]
