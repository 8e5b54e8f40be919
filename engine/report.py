"""`prunestudio studies` and `prunestudio show`: read the store, print tables or JSON.

Imports no torch (only the schema, the store and rich), so listing results is instant. Every
meaning (a candidate's label, its fitness, whether it is a reference, a study's primary role,
metric identities) comes from the schema's records; nothing is re-derived here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prunestudio.store import Store, queries
from prunestudio.store.records import candidate_record, study_record

from prunestudio.schema import (
    SEARCH_FULL_ROLE,
    SEARCH_ROLE,
    Candidate,
    Metric,
    Study,
    is_search_part,
    task_metric_title,
)
from prunestudio.schema.overfitting import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    overfitting_warnings,
)


def _console(file=None):
    """Rich console; wide enough for the result tables when output is piped or captured."""
    import sys

    from rich.console import Console

    file = file or sys.stdout
    # markup off: labels such as "magnitude[matrix] 50%" must print as they are
    return Console(file=file, width=None if file.isatty() else 160, markup=False)


def _records(study: Study | Mapping[str, Any], cands: Sequence[Candidate | Mapping[str, Any]]
             ) -> tuple[Study, list[Candidate]]:
    """Records from records or from the store's dicts (``get_study`` / ``candidates``)."""
    s = study if isinstance(study, Study) else study_record(study)
    return s, [c if isinstance(c, Candidate) else candidate_record(c) for c in cands]


def task_columns(cands: Sequence[Candidate]) -> list[tuple[str, str]]:
    """(task, metric) pairs measured on any candidate: tasks in first-seen order, acc
    first."""
    found = list(dict.fromkeys(key for c in cands for key in c.task_metrics))
    tasks = list(dict.fromkeys(t for t, _ in found))
    order = {"acc": 0, "acc_norm": 1}
    return sorted(found, key=lambda k: (tasks.index(k[0]), order.get(k[1], 2), k[1]))


def eval_roles(study: Study, cands: Sequence[Candidate]) -> list[str]:
    """Evaluation roles in config order, then any other perplexity roles found (never the
    search role: a search's fitness has its own column)."""
    roles = list(study.evaluation_roles)
    for c in cands:
        for role in c.ppl_by_role:
            if role not in roles and role not in (SEARCH_ROLE, SEARCH_FULL_ROLE):
                roles.append(role)
    return roles


def sorted_candidates(cands: Sequence[Candidate], role: str) -> list[Candidate]:
    """Done candidates by their `role` perplexity (missing last), then the rest by index."""
    def key(c: Candidate) -> tuple:
        ppl = c.ppl(role)
        return (c.status != "done", ppl is None, ppl.value if ppl else 0.0, c.idx)

    return sorted(cands, key=key)


def _candidate_payload(c: Candidate) -> dict[str, Any]:
    d = c.as_dict()
    return {"id": c.id, "idx": c.idx, "label": c.label, "spec": d["spec"],
            "spec_hash": c.spec_hash, "origin": c.origin, "status": c.status,
            "generation": c.generation, "parents": d["parents"], "info": d["info"],
            "error": c.error, "timings": d["timings"], "metrics": d["metrics"],
            "reference": c.is_reference}


def study_payload(store: Store, study_key: int | str) -> dict[str, Any]:
    """The study and every candidate with spec, status, timings and metrics (with protocol);
    searches add generation, parents, info (expression, equivalence links) and a summary."""
    study = store.study_record(study_key)
    cands = store.candidate_records(study.id)
    d = study.as_dict()
    out = {
        "study": {k: d.get(k) for k in ("id", "name", "kind", "model", "status", "seed",
                                        "budget", "created_at", "started_at", "finished_at",
                                        "error", "config")},
        "candidates": [_candidate_payload(c) for c in cands],
    }
    out["study"]["primary_role"] = study.primary_role
    if study.is_search:
        out["search"] = search_summary(study, cands)
    return out


# ---------------------------------------------------------------- searches (gp / random)


def _fitness(c: Candidate) -> float | None:
    m = c.fitness
    return m.value if m else None


def search_summary(study: Study | Mapping[str, Any],
                   cands: Sequence[Candidate | Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of a search from its records (the same definitions as the engine's
    `SearchHistory.counts`): real evaluations, fitness reused by mask equivalence, failed,
    not evaluated, pending; the fraction of evaluations saved, evaluations per minute of
    candidate time, the best metric by search PPL and the finalists. Takes records or the
    store's dicts."""
    study, cands = _records(study, cands)
    counts = {"candidates": 0, "evaluated": 0, "reused": 0, "failed": 0, "skipped": 0,
              "pending": 0}
    by_how = {"rank_key": 0, "mask": 0}
    seconds = 0.0
    for c in cands:
        if not c.is_search_candidate:
            continue
        counts["candidates"] += 1
        if c.status == "done" and c.fitness is not None:
            counts["evaluated"] += 1
        elif c.equivalent_to is not None and c.fitness is not None:
            counts["reused"] += 1
            how = c.equivalence or "mask"
            by_how[how] = by_how.get(how, 0) + 1
        elif c.status == "failed":
            counts["failed"] += 1
        elif c.status in ("pending", "running"):
            counts["pending"] += 1
        else:
            counts["skipped"] += 1
        if c.started_at and c.finished_at:
            seconds += c.finished_at - c.started_at
    total = counts["evaluated"] + counts["reused"]
    scored = [(f, c.idx, c) for c in cands if c.is_search_candidate
              and (f := _fitness(c)) is not None]
    finalists = sorted((c for c in cands if c.finalist_rank is not None),
                       key=lambda c: c.finalist_rank or 0)
    # the search's own choice: its first finalist (ranked noise-aware, re-measured fitness
    # first); without finalists, the lowest search PPL
    best = (finalists[0] if finalists and finalists[0].is_search_candidate
            else min(scored, key=lambda t: (t[0], t[1]))[2] if scored else None)
    return {
        **counts,
        "reused_by": by_how,
        "saved_fraction": counts["reused"] / total if total else 0.0,
        "candidate_minutes": seconds / 60,
        "evaluations_per_minute": counts["evaluated"] / (seconds / 60) if seconds else 0.0,
        "budget": study.budget,
        "best": None if best is None else {
            "id": best.id, "expression": best.expression, "label": best.label,
            "search_ppl": _fitness(best), "generation": best.generation,
            "origin": best.origin},
        "finalists": [c.id for c in finalists],
    }


def _what(c: Candidate) -> str:
    """A search table's candidate cell: the expression of a symbolic metric, else the label."""
    return c.expression or c.label


def print_search_study(store: Store, study: Study, cands: list[Candidate],
                       limit: int = 25, file=None) -> None:
    """A gp / random study: the best candidates by search PPL (proxy) with the held-out PPL
    (full) of finalists and baselines beside it, and what mask equivalence saved."""
    from rich.table import Table

    console = _console(file)
    summary = search_summary(study, cands)
    found = eval_roles(study, cands)
    parts = [r for r in found if is_search_part(r)]  # the texts an averaged fitness is over
    roles = [r for r in found if not is_search_part(r)]
    finalists = summary["finalists"]
    rank = {cid: i + 1 for i, cid in enumerate(finalists)}

    def key(c: Candidate) -> tuple:
        f = _fitness(c)
        return (f is None, f if f is not None else 0.0, c.idx)

    ordered = sorted(cands, key=key)
    if limit > 0:
        keep = {c.id for c in ordered[:limit]} | set(finalists) | {
            c.id for c in cands if c.is_reference}
        shown = [c for c in ordered if c.id in keep]
    else:
        shown = ordered
    table = Table(title=f"study {study.name} (id {study.id}) — {study.kind} search on "
                  f"{study.model}, seed {study.seed} — {study.status}",
                  title_justify="left")
    widest = max((len(_what(c)) for c in shown), default=10)
    for col, justify in (("id", "right"), ("gen", "right"), ("origin", "left"),
                         ("parents", "left"), ("expression", "left"), ("status", "left"),
                         ("search PPL", "right")):
        if col == "expression":
            table.add_column(col, overflow="fold", min_width=min(widest, 56))
        else:
            table.add_column(col, justify=justify)
    remeasured = any(SEARCH_FULL_ROLE in c.ppl_by_role for c in cands)
    if remeasured:
        table.add_column("re-measured", justify="right")
    for r in parts + roles:
        table.add_column(f"{r} PPL", justify="right")
    table.add_column("final", justify="right")
    table.add_column("≡ of", justify="right")
    workers = _several_workers(cands)
    if workers:
        table.add_column("worker")
    for c in shown:
        ppl = c.ppl_by_role
        eq = c.equivalent_to
        status = "reused" if eq is not None else c.status
        row = [str(c.id), "" if c.generation is None else str(c.generation),
               c.origin, ",".join(map(str, c.parents or [])) or "",
               _what(c), status, _fmt(_fitness(c))]
        if remeasured:
            full = ppl.get(SEARCH_FULL_ROLE)
            row.append(_fmt(full.value) if full is not None else "")
        row += [_fmt(ppl[r].value) if r in ppl else "" for r in parts + roles]
        row.append(str(rank[c.id]) if c.id in rank else "")
        row.append("" if eq is None else f"{eq} ({c.equivalence})")
        if workers:
            row.append(c.worker or "")
        style = ("red" if c.status == "failed" else "bold" if c.id in rank else
                 "dim" if eq is not None else None)
        table.add_row(*row, style=style)
    console.print(table)
    console.print("  search PPL: fitness on the search split (proxy"
                  + (f"; the mean of {', '.join(f'{r} PPL' for r in parts)}" if parts else "")
                  + "); "
                  + ("re-measured: the search PPL on more windows of the same text (successive "
                     "halving, full), which ranks the elites; " if remeasured else "")
                  + ", ".join(f"{r} PPL" for r in roles)
                  + ": held-out text (full), measured for the finalists (final = the search's "
                  "rank: re-measured fitness first, differences within the noise to the simpler "
                  "metric) and baselines; ≡ of: mask-equivalent to that candidate (rank key or "
                  "identical pruned weights), its fitness reused", highlight=False)
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
        console.print(f"  best: {b['expression'] or b['label']} (candidate "
                      f"{b['id']}, generation {b['generation']}, {b['origin']}): "
                      f"{_fmt(b['search_ppl'])}", highlight=False)
    _protocol_lines(console, cands, [SEARCH_ROLE, *parts, *roles])
    failed = [c for c in cands if c.status == "failed"]
    for c in failed[:5]:
        console.print(f"  candidate {c.id} ({_what(c)}) failed: {c.first_error_line or ''}",
                      highlight=False, style="red")
    if len(failed) > 5:
        console.print(f"  … {len(failed) - 5} more failed candidates", highlight=False)
    if study.error:
        console.print(f"  study {study.status}: {study.error.splitlines()[0]}")


def _several_workers(cands: Sequence[Candidate]) -> bool:
    """A study that ran on several workers (Ray) shows which one ran each candidate."""
    return len({c.worker for c in cands if c.worker}) > 1


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "inf"
    return f"{value:,.2f}" if value < 1e5 else f"{value:.3g}"


def _protocol_line(m: Metric) -> str:
    return (f"{m.dataset}:{m.split}, seqlen {m.seqlen} × {m.n_samples} windows, "
            f"{m.fidelity}")


def _protocol_lines(console, cands: Sequence[Candidate], roles: Sequence[str]) -> None:
    for r in roles:
        sample = next((m for c in cands if (m := c.ppl(r)) is not None), None)
        if sample:
            console.print(f"  PPL {r}: {_protocol_line(sample)}", highlight=False)


def _task_protocol_line(m: Metric, whose: str) -> str:
    p = m.protocol
    stderr = (f", stderr ±{p['stderr']:.3f} ({whose})" if isinstance(p.get("stderr"), float)
              else "")
    return (f"{m.dataset} ({m.name}), {m.n_samples} examples, "
            f"{p.get('num_fewshot', 0)}-shot, {m.fidelity}{stderr}, "
            f"lm-eval {p.get('lm_eval_version', '?')}")


def print_study(store: Store, study_key: int | str, sort_role: str | None = None,
                file=None, limit: int = 25) -> None:
    from rich.table import Table

    console = _console(file)
    study = store.study_record(study_key)
    cands = store.candidate_records(study.id)
    if study.is_search and sort_role is None:
        print_search_study(store, study, cands, limit=limit, file=file)
        return
    roles = eval_roles(study, cands)
    if study.is_search:  # sorted by a role on request: the fitness is one of the columns
        roles = [SEARCH_ROLE, *roles]
    role = sort_role or study.sort_role or (roles[0] if roles else None)
    if sort_role and sort_role not in roles:
        raise ValueError(f"no evaluation role {sort_role!r} in study {study.name}; "
                         f"roles: {', '.join(roles) or 'none'}")
    dense = next((c for c in cands if c.is_dense and c.status == "done"), None)
    dense_ppl = dense.ppl_by_role if dense else {}

    table = Table(title=f"study {study.name} (id {study.id}) — {study.kind} on "
                  f"{study.model} — {study.status}", title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("candidate")
    table.add_column("status")
    table.add_column("sparsity", justify="right")
    for r in roles:
        table.add_column(f"PPL {r}", justify="right")
        if dense_ppl.get(r):
            table.add_column("×dense", justify="right")
    task_cols = task_columns(cands)
    for task, metric in task_cols:
        table.add_column(task_metric_title(task, metric), justify="right")
    calib = any(c.find(CALIBRATION_ERROR, RECONSTRUCTION_ROLE) for c in cands)
    if calib:  # reconstructed candidates: their error against the dense model (calibration)
        table.add_column("calib err", justify="right")
    table.add_column("time s", justify="right")  # prune + evaluate (+ tasks); split in --json
    workers = _several_workers(cands)
    if workers:
        table.add_column("worker")
    for c in sorted_candidates(cands, role) if role else cands:
        ppl = c.ppl_by_role
        accuracy = c.task_metrics
        # unstructured: realised sparsity of the pruned layers; structured: parameters removed
        sparsity = c.sparsity
        row = [str(c.id), c.label, c.status,
               "0" if c.is_dense else (f"{sparsity:.4f}" if sparsity is not None else "—")]
        for r in roles:
            value = ppl[r].value if r in ppl else None
            row.append(_fmt(value))
            if dense_ppl.get(r):
                row.append("—" if value is None else f"{value / dense_ppl[r].value:.2f}")
        row += [f"{accuracy[k].value:.3f}" if k in accuracy else "—" for k in task_cols]
        if calib:
            value = c.value(CALIBRATION_ERROR, RECONSTRUCTION_ROLE)
            row.append("—" if value is None else f"{value:.4f}")
        row.append(_fmt(c.timings.get("total")))
        if workers:
            row.append(c.worker or "")
        table.add_row(*row, style="red" if c.status == "failed" else None)
    console.print(table)
    for warning in overfitting_warnings(cands, study.evaluation_roles):
        # one line each, never wrapped: a script may grep for them
        console.print(f"warning: {warning.text}", highlight=False, soft_wrap=True,
                      style="yellow")
    _protocol_lines(console, cands, roles)
    for task, metric in task_cols:
        if metric != "acc" and (task, "acc") in task_cols:
            continue  # one line per task
        owner = next(c for c in ([dense] if dense else []) + cands
                     if (task, metric) in c.task_metrics)
        whose = "dense" if owner is dense else f"candidate {owner.id}"
        line = _task_protocol_line(owner.task_metrics[(task, metric)], whose)
        console.print(f"  {task_metric_title(task, metric)}: {line}", highlight=False)
    for c in cands:
        if c.status == "failed":
            console.print(f"  candidate {c.id} ({c.label}) failed: {c.first_error_line or ''}",
                          highlight=False, style="red")
    if study.error:
        console.print(f"  study {study.status}: {study.error.splitlines()[0]}")


def _elapsed(study: Mapping[str, Any] | Study) -> str:
    s = study if isinstance(study, Study) else study_record(study)
    if not s.started_at:
        return "—"
    return f"{s.elapsed(time.time()) or 0.0:,.0f}s"


def print_studies(store: Store, file=None) -> None:
    from rich.table import Table

    table = Table(title=f"studies in {store.path}", title_justify="left")
    for col in ("id", "name", "kind", "model", "status", "done", "failed", "budget", "elapsed"):
        table.add_column(col, justify="right" if col in ("id", "done", "failed", "budget")
                         else "left")
    for s in queries.study_records(store):
        counts = s.counts
        assert counts is not None
        table.add_row(str(s.id), s.name, s.kind, s.model, s.shown_status,
                      str(counts.done), str(counts.failed),
                      "—" if not s.budget else f"{counts.budget_used}/{s.budget}", _elapsed(s))
    _console(file).print(table)

