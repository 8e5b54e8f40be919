"""Handlers of the job subcommands (`run`, `prune`, `export`, `methods`); the parser lives in
`prunestudio.cli` so that listing commands never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prunestudio.engine.progress import Reporter, RichReporter
from prunestudio.engine.report import print_study, study_payload
from prunestudio.engine.studies.config import (
    ConfigError,
    StudyConfig,
    load_config,
    merge_window_overrides,
    parse_config,
)
from prunestudio.store import open_store


def _reporter(args: argparse.Namespace) -> Reporter:
    if getattr(args, "quiet", False):
        from prunestudio.engine.models.loading import quiet_libraries

        quiet_libraries()
        return Reporter()
    return RichReporter()


def _lock_timeout(args: argparse.Namespace) -> float:
    return float(getattr(args, "lock_timeout", None) or 30.0)


def failed_candidates(store, study_id: int) -> list[dict[str, Any]]:
    """The failures that make a finished study's exit code 3: every failed candidate of a grid
    study; of a search, its failed baselines (a proposed metric that fails is part of a search,
    recorded and shown, not an error of the run)."""
    study = store.get_study(study_id)
    failed = store.candidates(study_id, status="failed")
    if study["kind"] in ("gp", "random"):
        failed = [c for c in failed if c["origin"] == "baseline"]
    return failed


def _finish(args: argparse.Namespace, study_id: int, status: str) -> int:
    with open_store(args.store, readonly=True, timeout=_lock_timeout(args)) as store:
        if args.json:
            print(json.dumps(study_payload(store, study_id), indent=2))
        else:
            print_study(store, study_id)
            print(f"\nstore: {args.store} — `prunestudio show {study_id} --store {args.store}`")
        failed = failed_candidates(store, study_id) if status == "finished" else []
    if status not in ("finished", "cancelled"):
        return 1
    if failed:
        ids = ", ".join(str(c["id"]) for c in failed[:10]) + (" …" if len(failed) > 10 else "")
        print(f"prunestudio {args.command}: {len(failed)} candidate(s) failed (ids {ids}); "
              f"their errors: `prunestudio show {study_id} --store {args.store}` (exit code 3)",
              file=sys.stderr)
        return 3
    return 0


def _override_model(data: dict[str, Any], args: argparse.Namespace) -> None:
    model = data.setdefault("model", {})
    for key in ("model", "device", "dtype"):
        value = getattr(args, key, None)
        if value is not None:
            model["source" if key == "model" else key] = value


def cmd_run(args: argparse.Namespace) -> int:
    from prunestudio.engine.runner import run_study

    config = None
    if args.resume is None:
        config = load_config(args.config)
        if args.model or args.device or args.dtype:
            data = config.to_dict()
            _override_model(data, args)
            config = parse_config(data, args.config or "(default study)")
    elif args.config:
        raise ConfigError("give either CONFIG.toml or --resume STUDY, not both")
    study_id, status = run_study(config, args.store, name=args.name, resume=args.resume,
                                 reporter=_reporter(args),
                                 allow_changed_inputs=args.allow_changed_inputs,
                                 lock_timeout=_lock_timeout(args))
    return _finish(args, study_id, status)


def parse_key_values(text: str, what: str) -> dict[str, Any]:
    """`source=pydoc,n=16` → {'source': 'pydoc', 'n': 16} (ints and floats converted)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConfigError(f"{what}: expected KEY=VALUE pairs separated by commas; got {part!r}")
        key, value = (s.strip() for s in part.split("=", 1))
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def _split_list(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    return items


def _metric_expressions(args: argparse.Namespace) -> list[str]:
    """Canonical texts of --metric and --metric-from; a malformed one is a ConfigError with the
    parser's message (position and what was expected)."""
    from prunestudio.engine.symbolic import ExpressionError, parse, to_text

    out = []
    for text in getattr(args, "metric", None) or []:
        try:
            out.append(to_text(parse(text)))
        except ExpressionError as exc:
            raise ConfigError(f"--metric {text!r}: {exc}") from None
    if getattr(args, "metric_from", None):
        expression, note = best_metric_of_study(args.store, args.metric_from)
        print(f"prunestudio prune: --metric-from {args.metric_from}: {note}", file=sys.stderr)
        out.append(expression)
    return list(dict.fromkeys(out))


def best_metric_of_study(store_path: str, study_key: str) -> tuple[str, str]:
    """The expression of the best symbolic candidate of a study: lowest search-split PPL (the
    search's own choice, no held-out text involved); for a study without a search split, the
    lowest PPL of its first evaluation role. Returns (expression, a note saying which)."""
    with open_store(store_path, readonly=True) as store:
        study = store.get_study(study_key)
        cands = store.candidates(study["id"], with_metrics=True)
    roles = [e["role"] for e in (study.get("config") or {}).get("evaluation", [])]
    best = None
    for role in ("search", *roles[:1]):
        scored = [
            (m["value"], c["idx"], c) for c in cands
            if c["spec"].get("method") == "symbolic" and c["status"] in ("done", "skipped")
            for m in c["metrics"] if m["name"] == "ppl" and m["role"] == role
        ]
        if scored:
            value, _, cand = min(scored, key=lambda t: (t[0], t[1]))
            best = (cand["spec"]["options"]["expression"],
                    f"candidate {cand['id']} of study {study['name']}, {role} PPL {value:.3f}")
            break
    if best is None:
        raise ConfigError(f"study {study['name']} has no evaluated symbolic metric to reuse "
                          "(run a gp or random study first)")
    expression, note = best
    return expression, f"{expression} ({note})"


def prune_config(args: argparse.Namespace) -> StudyConfig:
    """The study `prunestudio prune` runs: the default study's text, the flags' grid, plus one
    symbolic candidate per --metric expression at every sparsity and pattern."""
    data = load_config(None).to_dict()
    _override_model(data, args)
    try:
        sparsities = [float(s) for s in _split_list(args.sparsities, "sparsities")]
    except ValueError:
        raise ConfigError(f"--sparsities must be numbers in [0, 1); got {args.sparsities!r}") from None
    expressions = _metric_expressions(args)
    methods_text = getattr(args, "methods", None)
    if methods_text is None:
        methods_text = "" if expressions else "wanda"
    methods = _split_list(methods_text, "methods") if methods_text else []
    patterns = _split_list(args.patterns, "patterns")
    data["grid"] = {
        "methods": methods,
        "sparsities": sparsities,
        "patterns": patterns,
        "layer_ratios": args.layer_ratios,
        "include_dense": not args.no_dense,
    }
    data["candidates"] = _metric_candidates(expressions, sparsities, patterns, args)
    if data["candidates"] and not methods and not args.no_dense:
        data["candidates"].insert(0, {"method": "dense"})
    data["study"]["name"] = args.name
    if args.calib:
        data["calibration"] = merge_window_overrides(data["calibration"],
                                                     parse_key_values(args.calib, "--calib"))
    if args.eval:
        sets = []
        for text in args.eval:
            kv = parse_key_values(text, "--eval")
            head = {k: kv.pop(k) for k in ("role", "fidelity", "batch_size") if k in kv}
            if "role" not in head:
                raise ConfigError(f"--eval {text!r}: give role=..., e.g. role=in_domain")
            sets.append({**head, "windows": kv})
        data["evaluation"] = sets
    data.pop("tasks", None)  # the default study's accuracy task only with --tasks
    if args.tasks:
        data["tasks"] = {"names": _split_list(args.tasks, "tasks"), "limit": args.task_limit}
    elif args.task_limit is not None:
        raise ConfigError("--task-limit needs --tasks (e.g. --tasks offline --task-limit 100)")
    config = parse_config(data, "(prunestudio prune flags)")
    if args.option:
        config = _with_options(config, args.option)
    return config


def _metric_candidates(expressions: list[str], sparsities: list[float], patterns: list[str],
                       args: argparse.Namespace) -> list[dict[str, Any]]:
    from prunestudio.engine.spec import Pattern

    out = []
    for expression in expressions:
        for text in patterns:
            try:
                pattern = Pattern.parse(text)
            except ValueError as exc:
                raise ConfigError(f"--patterns: {exc}") from None
            nm = pattern.kind == "nm"
            for s in [pattern.sparsity] if nm else sparsities:
                out.append({
                    "method": "symbolic", "sparsity": s, "pattern": pattern.model_dump(),
                    "layer_ratios": "uniform" if nm else args.layer_ratios,
                    "calibration": {"mode": getattr(args, "metric_calibration", "sequential")},
                    "options": {"expression": expression},
                })
    return out


def option_value(text: str, option: str) -> Any:
    """One `--option` value: JSON when it is JSON (numbers, true/false, null, lists such as
    [1.0, 0.5], objects), else the text itself (`row`, `taylor_second`)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        if text[:1] in "[{":
            raise ConfigError(f"--option {option!r}: the value {text!r} is not valid JSON; give "
                              "lists and objects as JSON, e.g. structured.layer_ratios="
                              "[0.5,0.25] (quote it in the shell)") from None
        return text


def _with_options(config: StudyConfig, options: list[str]) -> StudyConfig:
    """Apply `METHOD.KEY=VALUE` options (one per flag; VALUE may be a JSON list) to the grid's
    candidates of that method."""
    per_method: dict[str, dict[str, Any]] = {}
    for text in options:
        if "=" not in text or "." not in text.split("=", 1)[0]:
            raise ConfigError(f"--option {text!r}: expected METHOD.KEY=VALUE, e.g. "
                              "magnitude.scope=row or structured.layer_ratios=[0.5,0.25]")
        lhs, rhs = text.split("=", 1)
        method, key = (part.strip() for part in lhs.split(".", 1))
        per_method.setdefault(method, {})[key] = option_value(rhs, text)
    unknown = set(per_method) - set(config.grid.methods)
    if unknown:
        raise ConfigError(f"--option names method(s) {sorted(unknown)} that are not in --methods "
                          f"({', '.join(config.grid.methods)})")
    data = config.to_dict()
    specs = [s.canonical() for s in config.candidate_specs()]
    for s in specs:
        s["options"] = {**s["options"], **per_method.get(s["method"], {})}
    data["grid"]["methods"] = []
    data["grid"]["include_dense"] = False
    data["candidates"] = specs
    return parse_config(data, "(prunestudio prune flags)")


def cmd_prune(args: argparse.Namespace) -> int:
    from prunestudio.engine.runner import run_study

    reporter = _reporter(args)
    config = prune_config(args)
    study_id, status = run_study(config, args.store, name=args.name, reporter=reporter,
                                 lock_timeout=_lock_timeout(args))
    return _finish(args, study_id, status)


def cmd_methods(args: argparse.Namespace) -> int:
    from prunestudio.engine.methods import get_method, method_names

    for name in method_names():
        method = get_method(name)
        fields = method.options_model.model_fields
        opts = ", ".join(f"{k} (required)" if f.is_required() else f"{k}={f.default!r}"
                         for k, f in fields.items()) or "no options"
        needs = [n for n, flag in (("X", method.needs_x), ("H", method.needs_hessian),
                                   ("G", method.needs_grad)) if flag]
        print(f"{name:<11} {method.description}\n{'':<11} options: {opts}; "
              f"statistics: {', '.join(needs) or 'none'}")
    return 0


def _recorded_candidate(args: argparse.Namespace, action: str) -> tuple[dict, dict]:
    """(candidate, study) of a recorded candidate that `action` may re-prune: a failed one is
    refused before anything loads (it would fail again), naming its recorded error."""
    with open_store(args.store, readonly=True, timeout=_lock_timeout(args)) as store:
        cand = store.candidate(args.candidate)
        study = store.get_study(cand["study_id"])
    if cand["status"] == "failed":
        first = (cand.get("error") or "no error recorded").strip().splitlines()[0]
        raise ConfigError(
            f"candidate {cand['id']} of study {study['name']} failed when the study ran "
            f"({first}); {action} re-prunes it from its spec, which would fail again. "
            f"`prunestudio show {study['name']}` lists its error; pick a candidate with status "
            "done")
    return cand, study


def _candidate_context(args: argparse.Namespace, reporter: Reporter, action: str):
    """(candidate, study, StudyContext) for a recorded candidate: its study's model, loaded
    fresh, with the study's calibration and evaluation windows — refused when the model or the
    text's fingerprints differ from the recorded ones (unless --allow-changed-inputs)."""
    from prunestudio.engine.runner import check_inputs_unchanged, prepare

    cand, study = _recorded_candidate(args, action)
    config = parse_config(study["config"], f"(study {study['name']})")
    if getattr(args, "device", None) or getattr(args, "dtype", None):
        data = config.to_dict()
        _override_model(data, args)
        config = parse_config(data, f"(study {study['name']})")
    from prunestudio.engine.models.loading import validate_model_options

    validate_model_options(config.model.device, config.model.dtype)
    ctx = prepare(config, reporter)
    allow = bool(getattr(args, "allow_changed_inputs", False))
    with open_store(args.store, readonly=not allow, timeout=_lock_timeout(args)) as store:
        check_inputs_unchanged(store, study, ctx, allow=allow, candidates=[cand],
                               action=f"{action} candidate {cand['id']}")
    return cand, study, ctx


def _protected_paths(args: argparse.Namespace, study: dict) -> dict[str, Any]:
    """What an export folder may neither be nor contain."""
    from prunestudio.engine.models.loading import DEFAULT_MODEL, default_gguf_path
    from prunestudio.engine.paths import cache_root

    source = study["model"]
    if source in (DEFAULT_MODEL, "", None):
        model_path: Path | None = default_gguf_path()
    else:
        model_path = Path(str(source)).expanduser()
        if not model_path.exists():
            model_path = None  # a hub id: nothing on disk to protect
    return {"store": Path(args.store), "source model": model_path, "Prune Studio cache": cache_root(),
            "current directory": Path.cwd()}


def cmd_export(args: argparse.Namespace) -> int:
    from prunestudio.engine.evaluate.perplexity import perplexity
    from prunestudio.engine.export import check_export_target, write_export
    from prunestudio.engine.models.loading import load_model
    from prunestudio.engine.runner import pruned_model
    from prunestudio.engine.spec import CandidateSpec
    from prunestudio.engine.structured.export import export_pruned

    cand, study = _recorded_candidate(args, "export")
    target = check_export_target(args.directory, force=args.force,
                                 protected=_protected_paths(args, study))
    verify_against = None
    if args.verify:  # decided before minutes of work: is there a recorded figure to compare?
        role = (study["config"].get("evaluation") or [{}])[0].get("role")
        verify_against = next((m for m in cand["metrics"] if m["name"] == "ppl"
                               and m["role"] == role and "reused_from" not in (m["protocol"] or {})),
                              None)
        if verify_against is None:
            raise ConfigError(
                f"--verify: candidate {cand['id']} ({cand['status']}) has no recorded {role!r} "
                "perplexity to compare the export with (a pending, skipped or search-only "
                "candidate); export it without --verify, or run `prunestudio show` to pick a "
                "measured one")
    reporter = RichReporter()
    cand, study, ctx = _candidate_context(args, reporter, "export")
    spec = CandidateSpec.model_validate(cand["spec"])
    lm, result, structured = pruned_model(ctx, spec, reporter)
    card = {"candidate": cand["id"], "study": study["name"], "spec": cand["spec"],
            "model": study["model"], "model_fingerprint": ctx.lm.fingerprint,
            "metrics": cand["metrics"]}
    if result is not None:
        card["realised_sparsity"] = result.overall_sparsity
    if structured is not None:
        card["structured"] = structured.to_dict()
    info = write_export(target, lambda tmp: export_pruned(lm.model, lm.tokenizer, tmp, card=card,
                                                          final_path=target.path))
    out = target.path
    with open_store(args.store, timeout=_lock_timeout(args)) as store:
        store.add_artifact(cand["id"], kind="model", path=str(out), bytes=info.nbytes)
    what = (f"sparsity {result.overall_sparsity:.4f}" if result is not None
            else f"{structured.param_ratio:.1%} of parameters removed")
    print(f"exported candidate {cand['id']} ({spec.label}, {what}) to {out} "
          f"({info.nbytes / 2**20:.1f} MiB){' replacing the previous export' if target.replaces_previous else ''}"
          f"; load it with:\n{info.how_to_load}")
    if verify_against is not None:
        reloaded = load_model(str(out), device=str(ctx.lm.device), dtype=args.dtype or "auto")
        ev = next(e for e in ctx.evaluations if e.role == verify_against["role"])
        got = perplexity(reloaded.model, ev.windows, reloaded.device, ev.batch_size).ppl
        recorded = float(verify_against["value"])
        print(f"verify: reloaded {ev.role} PPL {got:.3f}, recorded {recorded:.3f}")
        if abs(got - recorded) > 1e-3 * recorded:
            print("verify: MISMATCH between exported and recorded perplexity", file=sys.stderr)
            return 1
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Task accuracy (lm-eval) of a recorded candidate, re-pruned in memory from its spec."""
    from prunestudio.engine.evaluate.tasks import evaluate_tasks, resolve_tasks, task_metrics
    from prunestudio.engine.runner import pruned_model
    from prunestudio.engine.spec import CandidateSpec

    resolve_tasks(args.tasks)  # unknown task names fail before the model loads
    reporter = RichReporter()
    cand, _study, ctx = _candidate_context(args, reporter, "evaluate")
    spec = CandidateSpec.model_validate(cand["spec"])
    lm, _, _ = pruned_model(ctx, spec, reporter)
    reporter.message(f"lm-eval: {args.tasks} on candidate {cand['id']} ({spec.label})")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    results = evaluate_tasks(lm.model, lm.tokenizer, args.tasks, limit=limit,
                             num_fewshot=args.num_fewshot, batch_size=args.batch_size)
    metrics = task_metrics(results)
    with open_store(args.store, timeout=_lock_timeout(args)) as store:
        store.add_metrics(cand["id"], metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for m in metrics:
            print(f"{m['dataset']:<24} {m['name']:<8} {m['value']:.4f}  (n={m['n_samples']}, "
                  f"{m['fidelity']})")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """`prunestudio backup STORE DEST`: one consistent file through SQLite's backup API."""
    from prunestudio.store import backup_store

    info = backup_store(args.source, args.dest, timeout=_lock_timeout(args))
    print(f"backed up {args.source} to {args.dest}: {info}")
    return 0
