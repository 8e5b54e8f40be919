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

from prunestudio.store import Store, open_store, queries, task_metric_title


def _console(file=None):
    """Rich console; wide enough for the result tables when output is piped or captured."""
    from rich.console import Console

    file = file or sys.stdout
    # markup off: labels such as "magnitude[matrix] 50%" must print as they are
    return Console(file=file, width=None if file.isatty() else 160, markup=False)


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
    scope = (spec.get("options") or {}).get("scope")
    return f"{spec.get('method')}{f'[{scope}]' if scope else ''} {what}"


def ppl_metrics(cand: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The candidate's perplexities by evaluation role."""
    return {m["role"]: m for m in cand.get("metrics", []) if m["name"] == "ppl" and m["role"]}


def task_metrics_of(cand: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The candidate's task accuracies by (task, metric); where a task was measured more
    than once (the study's proxy, then `prunestudio eval` on more examples) the one on the
    most examples wins, the later one on a tie."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m in cand.get("metrics", []):
        if m["role"] != "task":
            continue
        key = (m["dataset"], m["name"])
        if key not in out or (m["n_samples"] or 0) >= (out[key]["n_samples"] or 0):
            out[key] = m
    return out


def task_columns(per_candidate: list[dict[tuple[str, str], Any]]) -> list[tuple[str, str]]:
    """(task, metric) pairs measured on any candidate (`task_metrics_of` of each): tasks in
    first-seen order, acc first."""
    found = list(dict.fromkeys(key for measured in per_candidate for key in measured))
    tasks = list(dict.fromkeys(t for t, _ in found))
    order = {"acc": 0, "acc_norm": 1}
    return sorted(found, key=lambda k: (tasks.index(k[0]), order.get(k[1], 2), k[1]))


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


SEARCH_KINDS = ("gp", "random")
SEARCH_ROLE = "search"


def study_payload(store: Store, study_key: int | str) -> dict[str, Any]:
    """The study and every candidate with spec, status, timings and metrics (with protocol);
    searches add generation, parents, info (expression, equivalence links) and a summary."""
    study = store.get_study(study_key)
    cands = store.candidates(study["id"], with_metrics=True)
    out = {
        "study": {k: study.get(k) for k in ("id", "name", "kind", "model", "status", "seed",
                                            "budget", "created_at", "started_at",
                                            "finished_at", "error", "config")},
        "candidates": [
            {"id": c["id"], "idx": c["idx"], "label": _label(c), "spec": c["spec"],
             "spec_hash": c["spec_hash"], "origin": c["origin"], "status": c["status"],
             "generation": c["generation"], "parents": c["parents"], "info": c["info"],
             "error": c["error"], "timings": c["timings"], "metrics": c["metrics"]}
            for c in cands
        ],
    }
    if study["kind"] in SEARCH_KINDS:
        out["search"] = search_summary(study, cands)
    return out


# ---------------------------------------------------------------- searches (gp / random)


def _fitness(c: dict[str, Any]) -> float | None:
    m = ppl_metrics(c).get(SEARCH_ROLE)
    return m["value"] if m else None


def _is_search_candidate(c: dict[str, Any]) -> bool:
    return c.get("generation") is not None and c.get("origin") != "baseline"


def search_summary(study: dict[str, Any], cands: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a search from its records (the same definitions as the engine's
    `SearchHistory.counts`): real evaluations, fitness reused by mask equivalence, failed,
    not evaluated, pending; the fraction of evaluations saved, evaluations per minute of
    candidate time, the best metric by search PPL and the finalists."""
    counts = {"candidates": 0, "evaluated": 0, "reused": 0, "failed": 0, "skipped": 0,
              "pending": 0}
    by_how = {"rank_key": 0, "mask": 0}
    seconds = 0.0
    for c in cands:
        if not _is_search_candidate(c):
            continue
        counts["candidates"] += 1
        info = c.get("info") or {}
        if c["status"] == "done" and _fitness(c) is not None:
            counts["evaluated"] += 1
        elif info.get("equivalent_to") is not None and _fitness(c) is not None:
            counts["reused"] += 1
            how = info.get("equivalence", "mask")
            by_how[how] = by_how.get(how, 0) + 1
        elif c["status"] == "failed":
            counts["failed"] += 1
        elif c["status"] in ("pending", "running"):
            counts["pending"] += 1
        else:
            counts["skipped"] += 1
        if c.get("started_at") and c.get("finished_at"):
            seconds += c["finished_at"] - c["started_at"]
    total = counts["evaluated"] + counts["reused"]
    scored = [(f, c["idx"], c) for c in cands if _is_search_candidate(c)
              and (f := _fitness(c)) is not None]
    best = min(scored, key=lambda t: (t[0], t[1]))[2] if scored else None
    finalists = sorted(
        (c for c in cands if any((m.get("protocol") or {}).get("stage") == "finalist"
                                 for m in c["metrics"])),
        key=lambda c: min(m["protocol"].get("finalist_rank", 99) for m in c["metrics"]
                           if (m.get("protocol") or {}).get("stage") == "finalist"))
    return {
        **counts,
        "reused_by": by_how,
        "saved_fraction": counts["reused"] / total if total else 0.0,
        "candidate_minutes": seconds / 60,
        "evaluations_per_minute": counts["evaluated"] / (seconds / 60) if seconds else 0.0,
        "budget": study.get("budget"),
        "best": None if best is None else {
            "id": best["id"], "expression": best["spec"]["options"].get("expression"),
            "search_ppl": _fitness(best), "generation": best["generation"],
            "origin": best["origin"]},
        "finalists": [c["id"] for c in finalists],
    }


def _expression(c: dict[str, Any]) -> str:
    spec = c["spec"]
    if spec.get("method") == "symbolic":
        return spec["options"].get("expression", "?")
    return _label(c)


def print_search_study(store: Store, study: dict[str, Any], cands: list[dict[str, Any]],
                       limit: int = 25, file=None) -> None:
    """A gp / random study: the best candidates by search PPL (proxy) with the held-out PPL
    (full) of finalists and baselines beside it, and what mask equivalence saved."""
    from rich.table import Table

    console = _console(file)
    summary = search_summary(study, cands)
    roles = [r for r in eval_roles(study, cands) if r != SEARCH_ROLE]
    finalists = summary["finalists"]
    rank = {cid: i + 1 for i, cid in enumerate(finalists)}

    def key(c: dict[str, Any]) -> tuple:
        f = _fitness(c)
        return (f is None, f if f is not None else 0.0, c["idx"])

    ordered = sorted(cands, key=key)
    if limit > 0:
        keep = {c["id"] for c in ordered[:limit]} | set(finalists) | {
            c["id"] for c in cands if c["origin"] == "baseline"}
        shown = [c for c in ordered if c["id"] in keep]
    else:
        shown = ordered
    table = Table(title=f"study {study['name']} (id {study['id']}) — {study['kind']} search on "
                  f"{study['model']}, seed {study['seed']} — {study['status']}",
                  title_justify="left")
    widest = max((len(_expression(c)) for c in shown), default=10)
    for col, justify in (("id", "right"), ("gen", "right"), ("origin", "left"),
                         ("parents", "left"), ("expression", "left"), ("status", "left"),
                         ("search PPL", "right")):
        if col == "expression":
            table.add_column(col, overflow="fold", min_width=min(widest, 56))
        else:
            table.add_column(col, justify=justify)
    for r in roles:
        table.add_column(f"{r} PPL", justify="right")
    table.add_column("final", justify="right")
    table.add_column("≡ of", justify="right")
    for c in shown:
        info = c.get("info") or {}
        ppl = ppl_metrics(c)
        status = c["status"]
        if info.get("equivalent_to") is not None:
            status = "reused"
        row = [str(c["id"]), "" if c["generation"] is None else str(c["generation"]),
               c["origin"], ",".join(map(str, c.get("parents") or [])) or "",
               _expression(c), status, _fmt(_fitness(c))]
        row += [_fmt(ppl[r]["value"]) if r in ppl else "" for r in roles]
        row.append(str(rank[c["id"]]) if c["id"] in rank else "")
        eq = info.get("equivalent_to")
        row.append("" if eq is None else f"{eq} ({info.get('equivalence', 'mask')})")
        style = ("red" if c["status"] == "failed" else "bold" if c["id"] in rank else
                 "dim" if eq is not None else None)
        table.add_row(*row, style=style)
    console.print(table)
    console.print("  search PPL: fitness on the search split (proxy); "
                  + ", ".join(f"{r} PPL" for r in roles)
                  + ": held-out text (full), measured for the finalists (final = rank by "
                  "search PPL) and baselines; ≡ of: mask-equivalent to that candidate (rank key "
                  "or identical pruned weights), its fitness reused", highlight=False)
    if limit > 0 and len(shown) < len(cands):
        console.print(f"  {len(cands) - len(shown)} more candidates: `--limit 0` shows all",
                      highlight=False)
    s = summary
    console.print(
        f"  search: {s['evaluated']} real evaluations (budget {s['budget']}), {s['failed']} "
        f"failed, {s['skipped']} not evaluated, {s['pending']} pending; "
        f"{s['evaluations_per_minute']:.2f} real evaluations per minute of candidate time",
        highlight=False)
    console.print(
        f"  mask equivalence: {s['reused']} fitness value(s) reused "
        f"({s['reused_by'].get('rank_key', 0)} by rank key, {s['reused_by'].get('mask', 0)} by "
        f"identical pruned weights) = {s['saved_fraction']:.1%} of evaluations saved",
        highlight=False)
    if s["best"]:
        b = s["best"]
        console.print(f"  best by search PPL: {b['expression']} (candidate {b['id']}, "
                      f"generation {b['generation']}, {b['origin']}): {_fmt(b['search_ppl'])}",
                      highlight=False)
    for r in [SEARCH_ROLE, *roles]:
        sample = next((ppl_metrics(c)[r] for c in cands if r in ppl_metrics(c)), None)
        if sample:
            console.print(f"  PPL {r}: {_protocol_line(sample)}", highlight=False)
    failed = [c for c in cands if c["status"] == "failed"]
    for c in failed[:5]:
        console.print(f"  candidate {c['id']} ({_expression(c)}) failed: "
                      f"{(c['error'] or '').splitlines()[0]}", highlight=False, style="red")
    if len(failed) > 5:
        console.print(f"  … {len(failed) - 5} more failed candidates", highlight=False)
    if study.get("error"):
        console.print(f"  study {study['status']}: {study['error'].splitlines()[0]}")


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "inf"
    return f"{value:,.2f}" if value < 1e5 else f"{value:.3g}"


def _protocol_line(m: dict[str, Any]) -> str:
    return (f"{m['dataset']}:{m['split']}, seqlen {m['seqlen']} × {m['n_samples']} windows, "
            f"{m['fidelity']}")


def _task_protocol_line(m: dict[str, Any], whose: str) -> str:
    p = m.get("protocol") or {}
    stderr = (f", stderr ±{p['stderr']:.3f} ({whose})" if isinstance(p.get("stderr"), float)
              else "")
    return (f"{m['dataset']} ({m['name']}), {m['n_samples']} examples, "
            f"{p.get('num_fewshot', 0)}-shot, {m['fidelity']}{stderr}, "
            f"lm-eval {p.get('lm_eval_version', '?')}")


def print_study(store: Store, study_key: int | str, sort_role: str | None = None,
                file=None, limit: int = 25) -> None:
    from rich.table import Table

    console = _console(file)
    study = store.get_study(study_key)
    cands = store.candidates(study["id"], with_metrics=True)
    if study["kind"] in SEARCH_KINDS and sort_role is None:
        print_search_study(store, study, cands, limit=limit, file=file)
        return
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
    accuracy = {c["id"]: task_metrics_of(c) for c in cands}
    task_cols = task_columns(list(accuracy.values()))
    for task, metric in task_cols:
        table.add_column(task_metric_title(task, metric), justify="right")
    table.add_column("time s", justify="right")  # prune + evaluate (+ tasks); split in --json
    for c in sorted_candidates(cands, role) if role else cands:
        ppl = ppl_metrics(c)
        # unstructured: realised sparsity of the pruned layers; structured: parameters removed
        sparsity = next((m["value"] for m in c["metrics"]
                         if m["name"] in ("sparsity", "param_ratio")), None)
        row = [str(c["id"]), _label(c), c["status"],
               "0" if c["spec"].get("method") == "dense" else
               (f"{sparsity:.4f}" if sparsity is not None else "—")]
        for r in roles:
            value = ppl[r]["value"] if r in ppl else None
            row.append(_fmt(value))
            if dense_ppl.get(r):
                row.append("—" if value is None else f"{value / dense_ppl[r]['value']:.2f}")
        row += [f"{accuracy[c['id']][k]['value']:.3f}" if k in accuracy[c["id"]] else "—"
                for k in task_cols]
        timings = c.get("timings") or {}
        row.append(_fmt(timings.get("total")))
        table.add_row(*row, style="red" if c["status"] == "failed" else None)
    console.print(table)
    for r in roles:
        sample = next((ppl_metrics(c)[r] for c in cands if r in ppl_metrics(c)), None)
        if sample:
            console.print(f"  PPL {r}: {_protocol_line(sample)}", highlight=False)
    for task, metric in task_cols:
        if metric != "acc" and (task, "acc") in task_cols:
            continue  # one line per task
        owner = next(c for c in ([dense] if dense else []) + cands
                     if (task, metric) in accuracy[c["id"]])
        whose = "dense" if owner is dense else f"candidate {owner['id']}"
        line = _task_protocol_line(accuracy[owner["id"]][(task, metric)], whose)
        console.print(f"  {task_metric_title(task, metric)}: {line}", highlight=False)
    for c in cands:
        if c["status"] == "failed":
            console.print(f"  candidate {c['id']} ({_label(c)}) failed: "
                          f"{(c['error'] or '').splitlines()[0]}", highlight=False, style="red")
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
    """List the studies. A 'running' study whose runner stopped beating (killed, machine
    lost) shows as 'stale' (``stale`` in --json, the stored ``status`` kept as it is)."""
    import shlex

    from prunestudio.store import STALE_AFTER
    from rich.table import Table

    with open_store(args.store, readonly=True) as store:
        studies = queries.list_studies(store)
        if args.json:
            print(json.dumps(studies, indent=2))
            return 0
        table = Table(title=f"studies in {store.path}", title_justify="left")
        for col in ("id", "name", "kind", "model", "status", "done", "failed", "budget",
                    "elapsed"):
            table.add_column(col, justify="right" if col in ("id", "done", "failed", "budget")
                             else "left")
        stale = [s for s in studies if s.get("stale")]
        for s in studies:
            budget = "—" if not s["budget"] else f"{s['n_budget_used']}/{s['budget']}"
            table.add_row(str(s["id"]), s["name"], s["kind"], s["model"],
                          "stale" if s.get("stale") else s["status"], str(s["n_done"]),
                          str(s["n_failed"]), budget, _elapsed(s))
        console = _console()
        console.print(table)
        for s in stale:
            console.print(
                f"{s['name']} is stale: status 'running' but no runner heartbeat in the last "
                f"{STALE_AFTER:.0f} s (its process was killed or its machine lost); resume "
                f"it with: prunestudio run --resume {shlex.quote(s['name'])} --store "
                f"{shlex.quote(str(store.path))}"
            )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with open_store(args.store, readonly=True) as store:
        if args.json:
            print(json.dumps(study_payload(store, args.study), indent=2))
        else:
            print_study(store, args.study, args.sort, limit=getattr(args, "limit", 25))
    return 0
