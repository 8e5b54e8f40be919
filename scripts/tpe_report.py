"""TPE against random search, from a store of AdaPruner studies (kind tpe): per seed, each
sampler's final best objective, the trial at which it first came within 1 % of that best, the
trial at which TPE first reached random's final best (the goal: at most half the trials), and
the winners' held-out PPL and accuracy beside LLM-Pruner's default and the dense model.

    .venv/bin/python scripts/tpe_report.py STORE [--markdown]

Studies are paired by seed (one per sampler); a study whose trials are not all finished is
reported as far as it got. Reads the store through its record API only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from prunestudio.store import open_store, queries
from report_tables import print_table

from prunestudio.schema import SEARCH_ROLE, TASK_ROLE, Candidate

TOLERANCE = 0.01


def objective(c: Candidate) -> float | None:
    m = c.ppl(SEARCH_ROLE)
    return m.value if m is not None and math.isfinite(m.value) else None


def best_so_far(trials: Sequence[Candidate]) -> list[float]:
    """Running minimum of the objective by trial number (failed trials keep the last)."""
    out, best = [], math.inf
    for c in sorted(trials, key=lambda c: c.generation):
        v = objective(c) if c.status == "done" else None
        if v is not None:
            best = min(best, v)
        out.append(best)
    return out


def first_within(curve: Sequence[float], target: float, tolerance: float = 0.0) -> int | None:
    """1-based trial count at which the curve first reaches target · (1 + tolerance)."""
    for i, v in enumerate(curve, 1):
        if v <= target * (1 + tolerance):
            return i
    return None


def held_out(c: Candidate | None) -> dict[str, float | None]:
    if c is None:
        return {}
    out: dict[str, float | None] = {}
    for role, m in c.ppl_by_role.items():
        if role != SEARCH_ROLE and not role.startswith(SEARCH_ROLE + "_"):
            out[role] = m.value
    accs = [m.value for m in c.metrics if m.role == TASK_ROLE and m.name == "acc"]
    out["acc"] = sum(accs) / len(accs) if accs else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--markdown", action="store_true", help="tables in Markdown")
    args = ap.parse_args(argv)
    with open_store(args.store, readonly=True) as store:
        studies = [s for s in queries.study_records(store) if s.kind == "tpe"]
        by_seed: dict[int, dict[str, tuple]] = {}
        for s in studies:
            cands = store.candidate_records(s.id)
            sampler = (s.config.get("tpe") or {}).get("sampler", "tpe")
            by_seed.setdefault(s.seed, {})[sampler] = (s, cands)
    rows, finals = [], []
    for seed in sorted(by_seed):
        pair = by_seed[seed]
        curves, bests = {}, {}
        for sampler, (s, cands) in pair.items():
            trials = [c for c in cands if c.generation is not None]
            curves[sampler] = best_so_far(trials)
            bests[sampler] = curves[sampler][-1] if curves[sampler] else math.inf
            winner = min((c for c in trials if objective(c) is not None),
                         key=lambda c: (objective(c), c.generation), default=None)
            refs = {(c.info or {}).get("baseline"): c for c in cands
                    if c.generation is None}
            finals.append((seed, sampler, s.name, winner, refs))
        row = {"seed": seed}
        for sampler in ("tpe", "random"):
            if curves.get(sampler):
                row[f"{sampler}_trials"] = len(curves[sampler])
                row[f"{sampler}_best"] = bests[sampler]
                row[f"{sampler}_within_1pct"] = first_within(curves[sampler], bests[sampler],
                                                             TOLERANCE)
        if curves.get("tpe") and curves.get("random"):
            reach = first_within(curves["tpe"], bests["random"])
            row["tpe_reaches_random_best"] = reach
            row["goal_met"] = reach is not None and reach <= len(curves["random"]) / 2
        rows.append(row)

    def fmt(v) -> str:
        if v is None:
            return "—"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cols = ["seed", "tpe_trials", "tpe_best", "tpe_within_1pct", "random_trials", "random_best",
            "random_within_1pct", "tpe_reaches_random_best", "goal_met"]
    print_table(cols, [[fmt(r.get(c)) for c in cols] for r in rows], args.markdown)
    print()
    roles = sorted({k for _, _, _, w, refs in finals for c in [w, *refs.values()]
                    for k in held_out(c)} - {"acc"}) + ["acc"]
    cols2 = ["seed", "study", "candidate", "objective", *roles]
    out = []
    for seed, sampler, name, winner, refs in finals:
        for what, c in (("winner", winner), *(((k or "?"), v) for k, v in sorted(
                refs.items(), key=lambda kv: str(kv[0])) if sampler == "tpe")):
            h = held_out(c)
            out.append([str(seed), name, f"{what} #{c.id}" if c else what,
                        fmt(objective(c) if c else None), *[fmt(h.get(r)) for r in roles]])
    print_table(cols2, out, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
