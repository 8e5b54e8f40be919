"""Accuracy-predictor studies (kind predictor) side by side: per study the predictor's held-out
fit quality per round (Kendall τ, R², Spearman of the log-PPL predictor, k-fold out-of-fold),
the predicted-vs-measured rank agreement of its top-k picks, and the winner's held-out PPL and
accuracy beside uniform ratios, LLM-Pruner's default, the best random architecture and the
dense model; then the winners' per-block ratios.

    .venv/bin/python scripts/predictor_report.py STORE [STORE ...] [--markdown]

Reads the stores through their record API only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from prunestudio.store import open_store, queries
from report_tables import print_table

from prunestudio.schema import SEARCH_ROLE, TASK_ROLE, Candidate


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _acc(c: Candidate) -> float | None:
    accs = [m.value for m in c.metrics if m.role == TASK_ROLE and m.name == "acc"]
    return sum(accs) / len(accs) if accs else None


def _ppl(c: Candidate | None, role: str) -> float | None:
    m = c.ppl(role) if c is not None else None
    return m.value if m is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    fit_rows, result_rows, ratio_rows = [], [], []
    for path in args.stores:
        with open_store(path, readonly=True) as store:
            for s in queries.study_records(store):
                if s.kind != "predictor":
                    continue
                cands = store.candidate_records(s.id)
                fits = store.predictor_fits(s.id)
                tag = f"{s.name} (seed {s.seed})"
                for f in fits:
                    p = f["payload"]
                    if f["target"] == "selection":
                        fit_rows.append([tag, "top-k picks", str(len(p.get("top_k") or [])),
                                         _fmt(p.get("kendall")), "—", _fmt(p.get("spearman"))])
                    elif f["target"] == "log_ppl":
                        fit_rows.append([tag, f"round {f['round']}", str(p["n_train"]),
                                         _fmt(p.get("kendall")), _fmt(p.get("r2")),
                                         _fmt(p.get("spearman"))])
                roles = list(s.evaluation_roles)
                search = [c for c in cands if c.generation is not None and c.status == "done"
                          and _ppl(c, SEARCH_ROLE) is not None]
                winner = min(search, key=lambda c: (_ppl(c, SEARCH_ROLE), c.idx), default=None)
                refs: dict[str, Candidate] = {}
                randoms = []
                for c in cands:
                    name = (c.info or {}).get("baseline")
                    if name == "random":
                        randoms.append(c)
                    elif name:
                        refs[name] = c
                best_random = min((c for c in randoms if _ppl(c, SEARCH_ROLE) is not None),
                                  key=lambda c: (_ppl(c, SEARCH_ROLE), c.idx), default=None)
                for what, c in (("winner", winner), ("best random", best_random),
                                ("uniform", refs.get("uniform")),
                                ("llm_pruner", refs.get("llm_pruner")),
                                ("dense", refs.get("dense"))):
                    result_rows.append([tag, what, str(c.id) if c else "—",
                                        _fmt(_ppl(c, SEARCH_ROLE)),
                                        *[_fmt(_ppl(c, r)) for r in roles],
                                        _fmt(_acc(c) if c else None)])
                if winner is not None:
                    o = winner.spec.get("options") or {}
                    att = o.get("attention_ratios") or []
                    mlp = o.get("mlp_ratios") or []
                    ratio_rows.append([tag, str(winner.id),
                                       " ".join(f"{a:.2f}" for a in att),
                                       " ".join(f"{m:.2f}" for m in mlp)])
    print_table(["study", "fit", "points", "Kendall τ", "R²", "Spearman"], fit_rows, args.markdown)
    print()
    roles = ["in_domain", "out_of_domain"]
    print_table(["study", "candidate", "id", "search PPL", *[f"{r} PPL" for r in roles], "acc"],
           result_rows, args.markdown)
    print()
    print_table(["study", "winner", "attention ratios per block", "MLP ratios per block"],
           ratio_rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
