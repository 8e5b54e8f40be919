"""Search fitness: perplexity on the search split (role ``search``, fidelity ``proxy``).

The split is cut once per study (`cut_search_split`), disjoint from the calibration text and
from every evaluation set. With successive halving (`[search] halving`, gp / random studies)
it is cut *longer* — `halving.windows` windows from the same offset — and the proxy fitness is
its first `split.n` windows (exactly the windows, and the figure, it would be without
halving); the higher-fidelity fitness (role ``search_full``, fidelity ``full``) is every
window, so it includes more tokens of the same text. The whole extended split is checked
disjoint. The higher fidelity has a role of its own so that the proxy stays every candidate's
fitness for the readers (a ``full`` figure of role ``search`` would outrank it where present
and mix two scales in one column).

Settings: `fidelity` — ``proxy`` (the proxy windows), ``full`` (every window of the split) or
``both`` (one forward over every window, recorded as both figures); `check_finite` — a NaN /
inf fitness fails the candidate (`NonFiniteFitnessError`), as a search candidate must;
baselines record what they get; `protocol` — extra protocol keys recorded with each figure
(e.g. ``stage = "halving"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from prunestudio.engine.data.windows import WindowError, Windows, build_windows, check_disjoint
from prunestudio.engine.evaluate.perplexity import from_window_nll, window_nll
from prunestudio.engine.search.fitness_reuse import check_fitness
from prunestudio.engine.search.state import HALVING_ROLE
from prunestudio.engine.study.context import EvalWindows, StudyContext
from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings

from prunestudio.schema import SEARCH_ROLE
from prunestudio.schema.study_file import StudyConfig

HALVING_KINDS = ("gp", "random")  # the searches whose [search] settings run successive halving


@dataclass
class SearchSplit(EvalWindows):
    """The search split's windows (`windows`: all of them, extended for halving) and the
    proxy's (`proxy`: its first split.n; the same object as `windows` without halving)."""

    proxy: Windows | None = None

    @property
    def proxy_windows(self) -> Windows:
        return self.proxy if self.proxy is not None else self.windows

    @property
    def extended(self) -> bool:
        return self.proxy_windows.n < self.windows.n


def full_windows(config: StudyConfig) -> int | None:
    """Windows of the higher-fidelity fitness of this study, None without halving."""
    if config.study.kind not in HALVING_KINDS or config.search is None:
        return None
    return config.search.full_windows


def cut_search_split(config: StudyConfig, ctx: StudyContext) -> EvalWindows:
    """The search split's windows, checked disjoint from calibration and every evaluation set
    (extended to the higher fidelity's windows when the search halves)."""
    settings = config.search
    proxy = build_windows(settings.split, ctx.lm.tokenizer)
    windows, n_full = proxy, full_windows(config)
    if n_full is not None:
        spec = settings.split.model_copy(update={"n": n_full})
        try:
            windows = build_windows(spec, ctx.lm.tokenizer)
        except WindowError as exc:
            raise WindowError(f"search.split extended to halving.windows = {n_full}: {exc}; "
                              "lower halving.windows or move the split") from None
        if not (windows.ids[: proxy.n] == proxy.ids).all():  # the prefix property of cuts
            raise WindowError(f"search.split extended to {n_full} windows does not start with "
                              f"the proxy's {proxy.n} windows ({spec.label()})")
    pairs = [("calibration", ctx.calibration)] + [
        (f"evaluation set {ev.role!r}", ev.windows) for ev in ctx.evaluations]
    for what, other in pairs:
        try:
            check_disjoint(other, windows)
        except WindowError as exc:
            extended = (f" (the split extended to halving.windows = {windows.n})"
                        if n_full else "")
            raise WindowError(f"search.split overlaps the {what}{extended}: {exc}") from None
    return SearchSplit(SEARCH_ROLE, "proxy", windows, settings.batch_size,
                       proxy=proxy if n_full is not None else None)


class Settings(NoSettings):
    check_finite: bool = True
    fidelity: Literal["proxy", "full", "both"] = "proxy"
    protocol: dict[str, Any] = {}


class Fitness(Measurement):
    name = "fitness"
    settings_model = Settings
    timing = "evaluate"

    def measure(self, model, ctx) -> list[Metric]:
        ev = ctx.study.search_split
        if ev is None:
            raise ValueError("the fitness measurement needs a search split ([search] split)")
        s = self.settings
        proxy = ev.proxy_windows if isinstance(ev, SearchSplit) else ev.windows
        if s.fidelity != "proxy" and proxy.n == ev.windows.n:
            raise ValueError("a full-fidelity fitness needs a search split extended for "
                             "halving ([search] halving)")
        whole = proxy if s.fidelity == "proxy" else ev.windows
        title = "ppl search split" + ("" if s.fidelity == "proxy" else f" ({whole.n} windows)")
        with ctx.reporter.task(title, whole.n) as bar:
            # the proxy's windows in batches of their own, then the rest: the proxy figure is
            # the one a proxy-only measurement gives, to the last bit
            nll = window_nll(model.model, proxy.ids, model.device, ev.batch_size,
                             lambda i, _: bar(i, whole.n))
            if whole.n > proxy.n:
                rest = window_nll(model.model, whole.ids[proxy.n:], model.device,
                                  ev.batch_size, lambda i, _: bar(proxy.n + i, whole.n))
                nll = torch.cat([nll, rest])
        out = []
        if s.fidelity in ("proxy", "both"):
            ppl = from_window_nll(nll[: proxy.n], proxy.seqlen)
            out.append(ppl.metric(fidelity="proxy", role=SEARCH_ROLE, windows=proxy))
        if s.fidelity in ("full", "both"):
            ppl = from_window_nll(nll, whole.seqlen)
            out.append(ppl.metric(fidelity="full", role=HALVING_ROLE, windows=whole))
        expression = ctx.spec.options.get("expression") or ctx.spec.label
        for metric in out:
            metric["protocol"].update(s.protocol)
            if s.check_finite:
                check_fitness(metric["value"], f"candidate {ctx.candidate_id} {expression}"
                              + (f" ({metric['n_samples']} windows)"
                                 if metric["role"] == HALVING_ROLE else ""))
        return out
