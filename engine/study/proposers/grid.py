"""Grid studies: every candidate of the config (methods × sparsities × patterns, plus
[[candidates]]), recorded at once, then evaluated in order on the full evaluation sets."""

from __future__ import annotations

from typing import Any

from prunestudio.engine.study.executor import CandidateResult, Job
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    Proposal,
    Proposer,
    Round,
    model_loaded,
)

from prunestudio.schema import Candidate, task_metric_title
from prunestudio.schema.overfitting import overfitting_warnings

#: what every grid candidate measures, in this order (then the study's extra measurements)
GRID_MEASUREMENTS = ("sparsity", "reconstruction", "perplexity", "tasks", "efficiency")


def summary(metrics: list[dict[str, Any]]) -> str:
    return ", ".join([f"{m['role']} {m['name']} {m['value']:.3f}" for m in metrics
                      if m["name"] == "ppl"]
                     + [f"{task_metric_title(m['dataset'], 'acc')} {m['value']:.3f}"
                        for m in metrics if m["role"] == "task" and m["name"] == "acc"])


class GridProposer(Proposer):
    kind = "grid"

    def __init__(self, config) -> None:
        self.config = config
        self.extra = list(getattr(config.study, "measurements", None) or [])
        self._asked = False

    @classmethod
    def from_config(cls, config) -> GridProposer:
        return cls(config)

    def restore(self, candidates, description) -> list[Note]:
        super().restore(candidates, description)
        d = description
        return [Note(f"{model_loaded(d)} ({d['dtype']})")]

    def ask(self) -> Round | None:
        if self._asked:
            return None
        self._asked = True
        return Round([Proposal(spec.canonical(), "baseline" if spec.method == "dense" else "grid")
                      for spec in self.config.candidate_specs()])

    def todo(self, round: Round) -> list[Item]:
        """Every pending candidate of the study, in recording order."""
        return [Item(c) for c in sorted(self.candidates.values(), key=lambda c: c["idx"])
                if c["status"] == "pending"]

    def plan(self, item: Item) -> Job:
        names = [*GRID_MEASUREMENTS, *(m for m in self.extra if m not in GRID_MEASUREMENTS)]
        return Job(item.id, item.candidate["spec"], [{"name": n} for n in names])

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        cid, label, text = item.id, result.info["label"], summary(result.metrics)
        notes = [Note(f"candidate {cid} {label}: {text}", candidate_id=cid,
                      progress=self.progress())]
        notes += self._same_structure(cid, result.info)
        notes += self._overfitting(cid)
        notes.append(Note(f"  {cid:>4} {label:<22} {text}", console=True))
        return notes

    def _overfitting(self, cid: int) -> list[Note]:
        """Reconstruction sweeps (Shin et al. 2024): when this candidate ends a step of a sweep
        where calibration error fell but held-out PPL rose, a warning event (the rule is the
        schema's, the same `show`, the TUI and the web app apply)."""
        if not (self.candidates.get(cid, {}).get("spec") or {}).get("reconstruction"):
            return []
        roles = [ev.role for ev in self.config.evaluation]
        records = [Candidate.of(c) for c in self.candidates.values()]
        return [Note(w.text, level="warning", candidate_id=cid)
                for w in overfitting_warnings(records, roles)
                if cid in (w.low_candidate, w.high_candidate)]

    def _same_structure(self, cid: int, info: dict[str, Any]) -> list[Note]:
        """Two specs of one study that realise the same structure are one model measured twice
        (e.g. two ratios rounding to the same number of heads): say so."""
        key = (info.get("structured") or {}).get("structure_key")
        if not key:
            return []
        twins = [c["id"] for c in sorted(self.candidates.values(), key=lambda c: c["idx"])
                 if c["id"] != cid and c["status"] == "done"
                 and ((c.get("info") or {}).get("structured") or {}).get("structure_key") == key]
        if not twins:
            return []
        return [Note(f"candidate {cid} {info.get('label')} realises the same structure as "
                     f"candidate(s) {', '.join(map(str, twins))}: the same model under two "
                     "specs (the realised ratios are in their metrics)", level="warning",
                     candidate_id=cid)]
