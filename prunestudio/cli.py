"""`prunestudio` — one console script, one subcommand per job.

The parser imports nothing heavy: each handler imports its module when it runs, so
`prunestudio tui` and `prunestudio studies` never load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

# Exit codes (README, "What happens when…"): 0 every candidate done (or the study cancelled on
# request); 1 the study failed, or export --verify found a mismatch; 2 bad input, nothing run;
# 3 the study finished but some candidates failed (see `prunestudio show`); 130 / 143
# interrupted by SIGINT / SIGTERM (resumable with `prunestudio run --resume`).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANDIDATES_FAILED = 0, 1, 2, 3


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="PATH",
                   help="SQLite store (default: $PRUNESTUDIO_STORE or ./prunestudio.db)")
    p.add_argument("--lock-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="how long to wait for another process's write lock on the store "
                   "(default 30)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text!r}")
    return value


def _allow_changed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-changed-inputs", action="store_true",
                   help="go on although the model or text fingerprints differ from the ones "
                   "the study recorded (recorded as a warning event)")


def _json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print machine-readable results on stdout (progress stays on stderr)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default=None,
                   help="auto (default: bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunestudio",
        description="Prune large language models; every candidate is recorded in SQLite.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a study from a TOML file (no file: the default study)",
                       description="Run a study described by CONFIG.toml. Without CONFIG, the "
                       "default study: dense + magnitude / Wanda / SparseGPT / GBLM at 50%% "
                       "unstructured and 2:4 on the embedded SmolLM2-135M (offline). A config "
                       "with study.kind = \"gp\" or \"random\" runs a search over symbolic "
                       "metrics (see configs/gp-smollm2.toml).")
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml")
    p.add_argument("--name", default=None, help="study name (unique in the store)")
    p.add_argument("--resume", default=None, metavar="STUDY",
                   help="resume a killed or cancelled study (id or name) with its recorded config")
    p.add_argument("--model", default=None, help="override [model] source of the config")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, no library warnings on stderr")
    _allow_changed_arg(p)
    _model_args(p)
    _store_arg(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.cli:cmd_run")

    p = sub.add_parser("prune", help="prune one model with methods × sparsities × patterns",
                       description="One study on one model: every method at every sparsity and "
                       "pattern (N:M patterns fix their own sparsity), plus dense, evaluated on "
                       "the default study's in-domain and out-of-domain text unless --eval is "
                       "given.")
    p.add_argument("--model", default="default",
                   help="'default' (embedded SmolLM2-135M), a hub id, a folder or a .gguf file")
    p.add_argument("--methods", default=None,
                   help="comma-separated; see `prunestudio methods` (default: wanda, or none "
                   "when --metric / --metric-from is given)")
    p.add_argument("--metric", action="append", default=[], metavar="EXPR",
                   help="a symbolic metric over W (|W|), G (gradients), X (input norms), e.g. "
                   "\"mul(sqr(W),mms(G))\" (repeatable); pruned at every sparsity and pattern")
    p.add_argument("--metric-from", default=None, metavar="STUDY",
                   help="the best metric (lowest search-split PPL) of a gp / random study in "
                   "--store, applied to this model, sparsities and patterns")
    p.add_argument("--metric-calibration", default="sequential",
                   choices=["sequential", "dense"],
                   help="statistics for --metric candidates: sequential (the papers' protocol, "
                   "default) or dense (the dense model's, as a search prunes)")
    p.add_argument("--sparsities", default="0.5", help="comma-separated, each in [0, 1)")
    p.add_argument("--patterns", default="unstructured",
                   help="comma-separated: unstructured, 2:4, 4:8, any N:M with N < M")
    p.add_argument("--layer-ratios", default="uniform", choices=["uniform", "owl"],
                   help="per-layer sparsity: uniform, or OWL outlier-weighted (M=5, λ=0.08)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option, e.g. magnitude.scope=row (repeatable)")
    p.add_argument("--no-dense", action="store_true", help="do not evaluate the dense model")
    p.add_argument("--tasks", default=None, metavar="NAMES",
                   help="also measure task accuracy with lm-eval on every candidate: offline "
                   "(no network), zero_shot, mmlu or task names, comma-separated")
    p.add_argument("--task-limit", type=float, default=None, metavar="N",
                   help="at most N examples per task (fidelity proxy); a fraction if < 1")
    p.add_argument("--calib", default=None, metavar="KEY=VALUE,...",
                   help="calibration windows, e.g. source=pydoc,n=16,seqlen=128,offset=0 "
                   "(keys: source, split, seqlen, n, offset, end, selection, seed)")
    p.add_argument("--eval", action="append", default=None, metavar="KEY=VALUE,...",
                   help="an evaluation set, e.g. role=in_domain,source=pydoc,n=32,seqlen=256,"
                   "offset=40000 (repeatable; extra keys: role, fidelity, batch_size)")
    p.add_argument("--name", default=None, help="study name (unique in the store)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, no library warnings on stderr")
    _model_args(p)
    _store_arg(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.cli:cmd_prune")

    p = sub.add_parser("studies", help="list the studies in a store")
    _store_arg(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.report:cmd_studies")

    p = sub.add_parser("show", help="a study's results, sorted by held-out perplexity",
                       description="A study's candidates with their perplexities. For gp / "
                       "random searches: expression, generation, origin, search-split PPL "
                       "(proxy) beside held-out PPL (full) of the finalists, and how many "
                       "evaluations mask equivalence saved.")
    p.add_argument("study", metavar="STUDY", help="study id or name")
    p.add_argument("--sort", default=None, metavar="ROLE",
                   help="sort by the PPL of this evaluation role (default: the first one; "
                   "searches: the search split)")
    p.add_argument("--limit", type=int, default=25, metavar="N",
                   help="searches: show the N best candidates by search PPL, plus baselines "
                   "and finalists (0: all)")
    _store_arg(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.report:cmd_show")

    p = sub.add_parser("export", help="save a candidate's pruned model with save_pretrained",
                       description="Re-prune CANDIDATE from its recorded spec on a fresh load of "
                       "its study's model (refused if the model's fingerprint differs from the "
                       "recorded one) and write it to DIR (loadable with from_pretrained). The "
                       "export is written beside DIR and renamed into place; DIR may not hold "
                       "the store, the source model or the current directory.")
    p.add_argument("candidate", type=int, metavar="CANDIDATE", help="candidate id (see `show`)")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--verify", action="store_true",
                   help="reload DIR with from_pretrained and compare its perplexity with the "
                   "recorded one (exit 1 on a mismatch, or when there is none recorded)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous export in DIR (refused if DIR holds any file an "
                   "export did not write)")
    _allow_changed_arg(p)
    _model_args(p)
    _store_arg(p)
    p.set_defaults(handler="prunestudio.engine.cli:cmd_export")

    p = sub.add_parser("eval", help="task accuracy (lm-eval) of a recorded candidate",
                       description="Re-prune CANDIDATE from its spec in memory and evaluate it "
                       "with lm-eval; results are added to the candidate's metrics. Tasks: "
                       "offline (shakespeare_next_line, no internet), zero_shot (boolq, piqa, "
                       "hellaswag, winogrande, arc_easy, arc_challenge, openbookqa), mmlu, or "
                       "task names, comma-separated.")
    p.add_argument("candidate", type=int, metavar="CANDIDATE", help="candidate id (see `show`)")
    p.add_argument("--tasks", default="offline", help="comma-separated (default: offline)")
    p.add_argument("--limit", type=float, default=None,
                   help="at most N examples per task (a proxy: recorded as fidelity 'proxy')")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    _allow_changed_arg(p)
    _model_args(p)
    _store_arg(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.cli:cmd_eval")

    p = sub.add_parser("bench", help="time each phase and the candidate loop against a naive loop",
                       description="Runs the same candidates twice in one process: the study "
                       "loop (model loaded once, statistics once, weights restored per "
                       "candidate) and a naive loop (model reloaded and statistics recomputed per "
                       "candidate); prints per-phase times and the throughput ratio.")
    p.add_argument("--model", default="default")
    p.add_argument("--methods", default="wanda,gblm",
                   help="methods of the bench candidates (default: wanda,gblm)")
    p.add_argument("--sparsities", default="0.4,0.5,0.6",
                   help="one candidate per method and sparsity, unstructured (default: "
                   "0.4,0.5,0.6 — a search evaluates many candidates on the same statistics)")
    p.add_argument("--calibration", default="dense", choices=["sequential", "dense"],
                   help="sequential: the papers' protocol (block inputs from the pruned blocks "
                   "before it, recomputed per candidate); dense: statistics of the dense model "
                   "for every block, computed once (what searches use)")
    p.add_argument("--eval-windows", type=int, default=4,
                   help="evaluation windows (256 tokens of pydoc from token 40,000)")
    _model_args(p)
    _json_arg(p)
    p.set_defaults(handler="prunestudio.engine.bench:cmd_bench")

    p = sub.add_parser("backup", help="copy a store into one consistent file, while studies run",
                       description="Copy STORE to DEST through SQLite's online backup API: one "
                       "self-contained file (no -wal / -shm beside it) holding every committed "
                       "result, consistent even while studies write. DEST must not exist.")
    p.add_argument("source", metavar="STORE", help="the store to copy")
    p.add_argument("dest", metavar="DEST", help="the new file (refused if it exists)")
    p.add_argument("--lock-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="how long to wait for a writer's lock (default 30)")
    p.set_defaults(handler="prunestudio.engine.cli:cmd_backup")

    p = sub.add_parser("methods", help="list the registered pruning methods and their options")
    p.set_defaults(handler="prunestudio.engine.cli:cmd_methods")

    p = sub.add_parser("tui", help="watch and steer studies live in the terminal")
    p.add_argument("store", nargs="?", default=None, metavar="STORE",
                   help="SQLite store (default: $PRUNESTUDIO_STORE or ./prunestudio.db)")
    p.add_argument("--study", default=None, metavar="STUDY",
                   help="open this study (id or name) directly")
    p.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                   help="polling interval (default 1 s)")
    p.set_defaults(handler="prunestudio.tui:cmd_tui")
    return parser


def _version() -> str:
    from prunestudio import __version__

    return f"prunestudio {__version__}"


def _resolve(target: str) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "store", "unset") is None:
        from prunestudio.engine.paths import default_store_path

        args.store = str(default_store_path())
    from prunestudio.store import StoreError

    try:
        return int(_resolve(args.handler)(args) or 0)
    except BrokenPipeError:  # `prunestudio show 1 --json | head`
        sys.stderr.close()
        return EXIT_OK
    except (ValueError, StoreError, OSError) as exc:
        # Bad input (config, model, spec, store, paths...): the message names what is wrong
        # and what is allowed.
        if os.environ.get("PRUNESTUDIO_DEBUG"):
            raise
        print(f"prunestudio {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        hint = getattr(exc, "hint", None)
        print(f"prunestudio {args.command}: {hint or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))


def _message(exc: BaseException) -> str:
    """An OSError names its path and cause (`[Errno 28]` alone says little)."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, FileNotFoundError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
