"""`prunestudio studies` and `prunestudio show`: read the store, print tables or JSON.

Imports no torch (only the store and rich), so listing results is instant.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from prunestudio.store import Store, open_store, queries


def _console(file=None):
    """Rich console; wide enough for the result tables when output is piped or captured."""
    from rich.console import Console

    file = file or sys.stdout
    return Console(file=file, width=None if file.isatty() else 160)


def _label(cand: dict[str, Any]) -> str:
    info = cand.get("info") or {}
    if info.get("label"):
        return info["label"]
    spec = cand["spec"]
    if spec.get("method") == "dense":
        return "dense"
    pattern = spec.get("pattern") or {}
    what = (f"{pattern['n']}:{pattern['m']}" if pattern.get("kind") == "nm"
            else f"{spec.get('sparsity', 0):.0%}")
    return f"{spec.get('method')} {what}"


def ppl_metrics(cand: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The candidate's perplexities by evaluation role."""
    return {m["role"]: m for m in cand.get("metrics", []) if m["name"] == "ppl" and m["role"]}


def eval_roles(study: dict[str, Any], cands: list[dict[str, Any]]) -> list[str]:
    """Evaluation roles in config order, then any others found in the metrics."""
    roles = [e["role"] for e in (study.get("config") or {}).get("evaluation", [])]
    for c in cands:
        for role in ppl_metrics(c):
            if role not in roles:
                roles.append(role)
    return roles


def sorted_candidates(cands: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """Done candidates by their `role` perplexity (missing last), then the rest by index."""
    def key(c: dict[str, Any]) -> tuple:
        ppl = ppl_metrics(c).get(role)
        return (c["status"] != "done", ppl is None, ppl["value"] if ppl else 0.0, c["idx"])

    return sorted(cands, key=key)


def study_payload(store: Store, study_key: int | str) -> dict[str, Any]:
    """The study and every candidate with spec, status, timings and metrics (with protocol)."""
    study = store.get_study(study_key)
    cands = store.candidates(study["id"], with_metrics=True)
    return {
        "study": {k: study.get(k) for k in ("id", "name", "kind", "model", "status", "seed",
                                            "budget", "created_at", "started_at",
                                            "finished_at", "error", "config")},
        "candidates": [
            {"id": c["id"], "idx": c["idx"], "label": _label(c), "spec": c["spec"],
             "spec_hash": c["spec_hash"], "origin": c["origin"], "status": c["status"],
             "error": c["error"], "timings": c["timings"], "metrics": c["metrics"]}
            for c in cands
        ],
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "inf"
    return f"{value:,.2f}" if value < 1e5 else f"{value:.3g}"


def _protocol_line(m: dict[str, Any]) -> str:
    return (f"{m['dataset']}:{m['split']}, seqlen {m['seqlen']} × {m['n_samples']} windows, "
            f"{m['fidelity']}")


def print_study(store: Store, study_key: int | str, sort_role: str | None = None,
                file=None) -> None:
    from rich.table import Table

    console = _console(file)
    study = store.get_study(study_key)
    cands = store.candidates(study["id"], with_metrics=True)
    roles = eval_roles(study, cands)
    role = sort_role or (roles[0] if roles else None)
    if sort_role and sort_role not in roles:
        raise ValueError(f"no evaluation role {sort_role!r} in study {study['name']}; "
                         f"roles: {', '.join(roles) or 'none'}")
    dense = next((c for c in cands if c["spec"].get("method") == "dense"
                  and c["status"] == "done"), None)
    dense_ppl = ppl_metrics(dense) if dense else {}

    table = Table(title=f"study {study['name']} (id {study['id']}) — {study['kind']} on "
                  f"{study['model']} — {study['status']}", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("candidate")
    table.add_column("status")
    table.add_column("sparsity", justify="right")
    for r in roles:
        table.add_column(f"PPL {r}", justify="right")
        if dense_ppl.get(r):
            table.add_column("×dense", justify="right")
    table.add_column("prune s", justify="right")
    table.add_column("eval s", justify="right")
    for c in sorted_candidates(cands, role) if role else cands:
        ppl = ppl_metrics(c)
        sparsity = next((m["value"] for m in c["metrics"] if m["name"] == "sparsity"), None)
        row = [str(c["id"]), _label(c), c["status"],
               "0" if c["spec"].get("method") == "dense" else
               (f"{sparsity:.4f}" if sparsity is not None else "—")]
        for r in roles:
            value = ppl[r]["value"] if r in ppl else None
            row.append(_fmt(value))
            if dense_ppl.get(r):
                row.append("—" if value is None else f"{value / dense_ppl[r]['value']:.2f}")
        timings = c.get("timings") or {}
        row += [_fmt(timings.get("prune")), _fmt(timings.get("evaluate"))]
        table.add_row(*row, style="red" if c["status"] == "failed" else None)
    console.print(table)
    for r in roles:
        sample = next((ppl_metrics(c)[r] for c in cands if r in ppl_metrics(c)), None)
        if sample:
            console.print(f"  PPL {r}: {_protocol_line(sample)}", highlight=False)
    for c in cands:
        if c["status"] == "failed":
            console.print(f"  [red]candidate {c['id']} ({_label(c)}) failed:[/red] "
                          f"{(c['error'] or '').splitlines()[0]}", highlight=False)
    if study.get("error"):
        console.print(f"  study {study['status']}: {study['error'].splitlines()[0]}")


def _elapsed(study: dict[str, Any]) -> str:
    start = study.get("started_at")
    if not start:
        return "—"
    end = study.get("finished_at") or time.time()
    return f"{end - start:,.0f}s"


def print_studies(store: Store, file=None) -> None:
    from rich.table import Table

    table = Table(title=f"studies in {store.path}", title_justify="left")
    for col in ("id", "name", "kind", "model", "status", "done", "failed", "budget", "elapsed"):
        table.add_column(col, justify="right" if col in ("id", "done", "failed", "budget")
                         else "left")
    for s in queries.list_studies(store):
        table.add_row(str(s["id"]), s["name"], s["kind"], s["model"], s["status"],
                      str(s["n_done"]), str(s["n_failed"]), str(s["budget"] or "—"),
                      _elapsed(s))
    _console(file).print(table)


def cmd_studies(args: argparse.Namespace) -> int:
    with open_store(args.store, readonly=True) as store:
        if args.json:
            print(json.dumps(queries.list_studies(store), indent=2))
        else:
            print_studies(store)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args.store, readonly=True) as store:
        if args.json:
            print(json.dumps(study_payload(store, args.study), indent=2))
        else:
            print_study(store, args.study, args.sort)
    return 0
