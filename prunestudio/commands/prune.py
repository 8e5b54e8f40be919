"""`prunestudio prune`: one study on one model, every method at every sparsity and pattern.

The flags become a typed :class:`PruneRequest` (every flag parsed and checked for syntax), and
the request becomes the study's config in one step: the default study's TOML table with the
request's sections over it, validated once by the config parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prunestudio.commands import options
from prunestudio.commands.results import finish_study

if TYPE_CHECKING:
    from prunestudio.schema.study_file import StudyConfig

NAME = "prune"
WHERE = "(prunestudio prune flags)"


HELP = "prune one model with methods × sparsities × patterns"
DESCRIPTION = ("One study on one model: every method at every sparsity and pattern (N:M "
               "patterns fix their own sparsity), plus dense, evaluated on the default study's "
               "in-domain and out-of-domain text unless --eval is given.")
OPTIONS = ("study_name", "quiet", "device", "dtype", "store", "lock_timeout", "json_output")


def arguments(p: argparse.ArgumentParser) -> None:
    options.model_source(p)
    p.add_argument("--methods", default=None,
                   help="comma-separated; see `prunestudio methods` (default: wanda, or none "
                   "when --metric / --metric-from is given)")
    p.add_argument("--metric", action="append", default=[], metavar="EXPR",
                   help="a symbolic metric over W (|W|), G (gradients), X (input norms), e.g. "
                   "\"mul(sqr(W),mms(G))\" (repeatable); pruned at every sparsity and pattern")
    p.add_argument("--metric-from", default=None, metavar="STUDY",
                   help="the best metric (lowest search-split PPL) of a gp / random study in "
                   "--store, applied to this model, sparsities and patterns")
    p.add_argument("--metric-calibration", default="sequential", choices=["sequential", "dense"],
                   help="statistics for --metric candidates: sequential (the papers' protocol, "
                   "default) or dense (the dense model's, as a search prunes)")
    p.add_argument("--sparsities", default="0.5", help="comma-separated, each in [0, 1)")
    p.add_argument("--patterns", default="unstructured",
                   help="comma-separated: unstructured, 2:4, 4:8, any N:M with N < M")
    p.add_argument("--layer-ratios", default="uniform", choices=["uniform", "owl", "owl_band"],
                   help="per-block sparsity: uniform; owl (OWL's outlier-weighted ratios as its "
                   "code maps them, M=5, λ=0.08: spread 2λ around the target); owl_band (the "
                   "same outlier ratios kept within target ± λ)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="an option of one of --methods, e.g. magnitude.scope=row (repeatable; "
                   "lists and objects as JSON: structured.layer_ratios=[0.5,0.25])")
    p.add_argument("--no-dense", action="store_true", help="do not evaluate the dense model")
    p.add_argument("--tasks", default=None, metavar="NAMES",
                   help="also measure task accuracy with lm-eval on every candidate: offline "
                   "(no network), zero_shot, mmlu or task names, comma-separated")
    p.add_argument("--task-limit", type=float, default=None, metavar="N",
                   help="at most N examples per task (fidelity proxy); a fraction if < 1")
    p.add_argument("--calib", default=None, metavar="KEY=VALUE,...",
                   help="calibration windows, e.g. source=pydoc,n=16,seqlen=128,offset=0 "
                   "(keys: source, split, seqlen, n, offset, end, selection, seed); "
                   "source=self,n=16 samples them from the model (generation.top_k=40, ...)")
    p.add_argument("--reconstruct", default=None, metavar="MODES",
                   help="after each unstructured / N:M mask, fit the remaining weights to the "
                   "dense model (Shin et al. 2024), one candidate per mode: none, lr "
                   "(layer-wise), br (block-wise), gp (block-wise, global propagation), "
                   "comma-separated, e.g. none,br,gp")
    p.add_argument("--reconstruct-epochs", default=None, metavar="LIST",
                   help="epochs per block, comma-separated (a sweep when several; default 10)")
    p.add_argument("--reconstruct-set", default=None, metavar="KEY=VALUE,...",
                   help="the reconstruction recipe, e.g. lr=1e-3,batch_size=4,samples=8 (keys: "
                   "lr, batch_size, micro_batch_size, samples, weight_decay, schedule, "
                   "max_grad_norm, seed)")
    p.add_argument("--eval", action="append", default=None, metavar="KEY=VALUE,...",
                   help="an evaluation set, e.g. role=in_domain,source=pydoc,n=32,seqlen=256,"
                   "offset=40000 (repeatable; extra keys: role, fidelity, batch_size)")


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.runner import launch_study

    reporter = options.make_reporter(args.quiet)
    config = PruneRequest.from_args(args).config()
    study_id, status = launch_study(config, args.store, name=args.name, reporter=reporter,
                                 lock_timeout=args.lock_timeout)
    return finish_study(args, study_id, status)


# -- the typed request ------------------------------------------------------------------------

@dataclass(frozen=True)
class PruneRequest:
    """What `prunestudio prune` was asked for, every flag parsed. `config()` builds the study."""

    model: options.ModelChoice = options.ModelChoice()
    methods: tuple[str, ...] = ("wanda",)
    sparsities: tuple[float, ...] = (0.5,)
    patterns: tuple[str, ...] = ("unstructured",)
    layer_ratios: str = "uniform"
    include_dense: bool = True
    # canonical symbolic expressions (--metric, then --metric-from), each pruned at every
    # sparsity and pattern
    metrics: tuple[str, ...] = ()
    metric_calibration: str = "sequential"
    # --option: method → {key: value}, applied to that method's grid candidates
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)  # --calib over the default
    evaluation: tuple[Mapping[str, Any], ...] | None = None  # --eval sets; None: the default's
    tasks: tuple[str, ...] | None = None
    task_limit: float | None = None
    name: str | None = None
    reconstruction: Mapping[str, Any] | None = None  # the [reconstruction] table, or None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PruneRequest:
        """Parse the flags; syntax errors are ConfigErrors naming the flag. --metric-from reads
        the best metric of that study in --store."""
        from prunestudio.schema.study_file import ConfigError

        try:
            sparsities = tuple(float(s) for s in split_list(args.sparsities, "sparsities"))
        except ValueError:
            raise ConfigError(f"--sparsities must be numbers in [0, 1); got {args.sparsities!r}"
                              ) from None
        metrics = metric_expressions(args.metric, args.metric_from, args.store)
        methods_text = args.methods
        if methods_text is None:
            methods_text = "" if metrics else "wanda"
        methods = tuple(split_list(methods_text, "methods")) if methods_text else ()
        evaluation = None
        if args.eval:
            evaluation = tuple(eval_set(text) for text in args.eval)
        if args.task_limit is not None and not args.tasks:
            raise ConfigError("--task-limit needs --tasks (e.g. --tasks offline --task-limit 100)")
        return cls(
            model=options.ModelChoice.from_args(args),
            methods=methods,
            sparsities=sparsities,
            patterns=tuple(split_list(args.patterns, "patterns")),
            layer_ratios=args.layer_ratios,
            include_dense=not args.no_dense,
            metrics=metrics,
            metric_calibration=args.metric_calibration,
            method_options=method_options(args.option, methods),
            calibration=parse_key_values(args.calib, "--calib") if args.calib else {},
            evaluation=evaluation,
            tasks=tuple(split_list(args.tasks, "tasks")) if args.tasks else None,
            task_limit=args.task_limit,
            name=args.name,
            reconstruction=reconstruction_table(args),
        )

    def study_data(self, base: dict[str, Any]) -> dict[str, Any]:
        """The study as the config parser reads it: `base` (the default study's TOML table)
        with this request's sections over it. `base` is not modified."""
        from prunestudio.engine.studies.config import merge_window_overrides

        data = {k: v for k, v in base.items() if k != "tasks"}  # tasks only with --tasks
        data["model"] = self.model.over(base.get("model", {}))
        data["study"] = {**base.get("study", {}), "name": self.name}
        data["grid"] = {"methods": list(self.methods), "sparsities": list(self.sparsities),
                        "patterns": list(self.patterns), "layer_ratios": self.layer_ratios,
                        "include_dense": self.include_dense}
        candidates = []
        if self.method_options:
            # options are per candidate: the grid is written out as explicit candidates, in
            # the grid's order (dense first); its sparsities and patterns stay in [grid] so
            # that their errors name the flag's table as without --option
            data["grid"].update(methods=[], include_dense=False)
            if self.include_dense and self.methods:
                candidates.append({"method": "dense"})
            for method in self.methods:
                candidates += self._expand(method, dict(self.method_options.get(method, {})))
        for expression in self.metrics:
            candidates += self._expand("symbolic", {"expression": expression},
                                       calibration={"mode": self.metric_calibration})
        if self.metrics and not self.methods and self.include_dense:
            candidates.insert(0, {"method": "dense"})
        data["candidates"] = candidates
        if self.calibration:
            data["calibration"] = merge_window_overrides(base["calibration"],
                                                         dict(self.calibration))
        if self.evaluation is not None:
            data["evaluation"] = [dict(e) for e in self.evaluation]
        if self.tasks:
            data["tasks"] = {"names": list(self.tasks), "limit": self.task_limit}
        if self.reconstruction is not None:
            data["reconstruction"] = dict(self.reconstruction)
        return data

    def _expand(self, method: str, method_options: dict[str, Any], **extra: Any
                ) -> list[dict[str, Any]]:
        """One candidate per pattern and sparsity (an N:M pattern fixes its own sparsity and
        takes uniform layer ratios), as the config's grid expands them."""
        from prunestudio.schema.spec import Pattern
        from prunestudio.schema.study_file import ConfigError

        out = []
        for text in self.patterns:
            try:
                pattern = Pattern.parse(text)
            except ValueError as exc:
                raise ConfigError(f"--patterns: {exc}") from None
            nm = pattern.kind == "nm"
            for s in [pattern.sparsity] if nm else self.sparsities:
                out.append({"method": method, "sparsity": s, "pattern": pattern.model_dump(),
                            "layer_ratios": "uniform" if nm else self.layer_ratios,
                            **extra, "options": method_options})
        return out

    def config(self) -> StudyConfig:
        """The study config: built once from the default study and this request."""
        from prunestudio.schema.study_file import parse_config

        return parse_config(self.study_data(default_study_data()), WHERE)


def default_study_data() -> dict[str, Any]:
    """The embedded default study as its TOML table (not yet validated)."""
    from prunestudio.engine.studies.config import default_config_text

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(default_config_text())


# -- flag syntax ------------------------------------------------------------------------------

def split_list(text: str, what: str) -> list[str]:
    from prunestudio.schema.study_file import ConfigError

    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    return items


def parse_key_values(text: str, what: str) -> dict[str, Any]:
    """`source=pydoc,n=16` → {'source': 'pydoc', 'n': 16} (ints and floats converted)."""
    from prunestudio.schema.study_file import ConfigError

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


def reconstruction_table(args: argparse.Namespace) -> dict[str, Any] | None:
    """--reconstruct / --reconstruct-epochs / --reconstruct-set → the [reconstruction] table
    (None without --reconstruct; the other two alone are an error)."""
    from prunestudio.schema.study_file import ConfigError

    epochs, recipe = args.reconstruct_epochs, args.reconstruct_set
    if args.reconstruct is None:
        if epochs is not None or recipe is not None:
            raise ConfigError("--reconstruct-epochs / --reconstruct-set need --reconstruct "
                              "MODES (e.g. --reconstruct none,br,gp)")
        return None
    table: dict[str, Any] = {"modes": split_list(args.reconstruct, "reconstruct")}
    if epochs is not None:
        try:
            table["epochs"] = [int(e) for e in split_list(epochs, "reconstruct-epochs")]
        except ValueError:
            raise ConfigError(f"--reconstruct-epochs must be whole numbers >= 0; got "
                              f"{epochs!r}") from None
    if recipe:
        values = parse_key_values(recipe, "--reconstruct-set")
        for key in ("modes", "epochs"):
            if key in values:
                raise ConfigError(f"--reconstruct-set: give {key} with --reconstruct"
                                  f"{'-epochs' if key == 'epochs' else ''}")
        if "samples" in values:
            values["samples"] = [values["samples"]]
        table.update(values)
    return table


def eval_set(text: str) -> dict[str, Any]:
    """One `--eval role=...,KEY=VALUE,...` → an [[evaluation]] table."""
    from prunestudio.schema.study_file import ConfigError

    kv = parse_key_values(text, "--eval")
    head = {k: kv.pop(k) for k in ("role", "fidelity", "batch_size") if k in kv}
    if "role" not in head:
        raise ConfigError(f"--eval {text!r}: give role=..., e.g. role=in_domain")
    return {**head, "windows": kv}


def option_value(text: str, option: str) -> Any:
    """One `--option` value: JSON when it is JSON (numbers, true/false, null, lists such as
    [1.0, 0.5], objects), else the text itself (`row`, `taylor_second`)."""
    from prunestudio.schema.study_file import ConfigError

    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        if text[:1] in "[{":
            raise ConfigError(f"--option {option!r}: the value {text!r} is not valid JSON; give "
                              "lists and objects as JSON, e.g. structured.layer_ratios="
                              "[0.5,0.25] (quote it in the shell)") from None
        return text


def method_options(texts: list[str], methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """`METHOD.KEY=VALUE` flags (VALUE may be JSON) → {method: {key: value}}; every METHOD
    must be one of --methods."""
    from prunestudio.schema.study_file import ConfigError

    per_method: dict[str, dict[str, Any]] = {}
    for text in texts:
        if "=" not in text or "." not in text.split("=", 1)[0]:
            raise ConfigError(f"--option {text!r}: expected METHOD.KEY=VALUE, e.g. "
                              "magnitude.scope=row or structured.layer_ratios=[0.5,0.25]")
        lhs, rhs = text.split("=", 1)
        method, key = (part.strip() for part in lhs.split(".", 1))
        per_method.setdefault(method, {})[key] = option_value(rhs, text)
    unknown = set(per_method) - set(methods)
    if unknown:
        raise ConfigError(f"--option names method(s) {sorted(unknown)} that are not in --methods "
                          f"({', '.join(methods)})")
    return per_method


def metric_expressions(texts: list[str], metric_from: str | None, store_path: str
                       ) -> tuple[str, ...]:
    """Canonical texts of --metric and --metric-from; a malformed one is a ConfigError with the
    parser's message (position and what was expected)."""
    from prunestudio.engine.symbolic import ExpressionError, parse, to_text
    from prunestudio.schema.study_file import ConfigError

    out = []
    for text in texts:
        try:
            out.append(to_text(parse(text)))
        except ExpressionError as exc:
            raise ConfigError(f"--metric {text!r}: {exc}") from None
    if metric_from:
        expression, note = best_metric_of_study(store_path, metric_from)
        print(f"prunestudio prune: --metric-from {metric_from}: {note}", file=sys.stderr)
        out.append(expression)
    return tuple(dict.fromkeys(out))


def best_metric_of_study(store_path: str, study_key: str) -> tuple[str, str]:
    """The expression of the best symbolic candidate of a study: the search's own choice (its
    first finalist; no held-out text involved in the ranking), else the lowest search-split
    PPL; for a study without a search split, the lowest PPL of its first evaluation role.
    Returns (expression, a note saying which)."""
    from prunestudio.schema.study_file import ConfigError
    from prunestudio.store import open_store

    with open_store(store_path, readonly=True) as store:
        study = store.get_study(study_key)
        cands = store.candidates(study["id"], with_metrics=True)
        records = store.candidate_records(study["id"])
    # the search's own choice first: its first finalist (ranked noise-aware, re-measured
    # fitness first), as `show` reports it
    chosen = sorted((c for c in records if c.finalist_rank is not None and c.expression
                     and c.origin != "baseline"), key=lambda c: c.finalist_rank or 0)
    if chosen:
        c = chosen[0]
        return c.expression, (f"{c.expression} (candidate {c.id} of study {study['name']}, "
                              "the search's first finalist)")
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
