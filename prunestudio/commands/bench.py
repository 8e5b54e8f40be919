"""`prunestudio bench`: time each phase of the study loop against a naive loop (see
`prunestudio.engine.bench`); `--search`: a GP / random search candidate per phase, before /
after, against this machine's floor (see `prunestudio.engine.bench_search`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prunestudio.commands import options
from prunestudio.commands.exit_codes import EXIT_OK

if TYPE_CHECKING:
    from prunestudio.schema.spec import CandidateSpec
    from prunestudio.schema.study_file import StudyConfig

NAME = "bench"
HELP = "time each phase and the candidate loop against a naive loop"
DESCRIPTION = ("Runs the same candidates twice in one process: the study loop (model "
               "loaded once, statistics once, weights restored per candidate) and a naive loop (model "
               "reloaded and statistics recomputed per candidate); prints per-phase times and the "
               "throughput ratio. With --search: GP search candidates (symbolic metrics) timed "
               "per phase (score, select, apply, hash, evaluate, restore, record) with the "
               "previous mask path and the current one in the same run, their zero patterns "
               "checked identical, against the floor computed from this machine's measured "
               "matmul peak and memory bandwidth.")
OPTIONS = ("device", "dtype", "json_output")


def arguments(p: argparse.ArgumentParser) -> None:
    options.model_source(p)
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
                   help="evaluation windows (256 tokens of pydoc from token 40,000; with "
                   "--search: the search split's windows, 256 tokens of pydoc from 20,000)")
    p.add_argument("--search", action="store_true",
                   help="time GP search candidates per phase, before / after, against the "
                   "machine's floor (--methods / --sparsities / --calibration do not apply)")
    p.add_argument("--candidates", type=int, default=8,
                   help="with --search: symbolic metrics to run (the seed metrics, then the GP's "
                   "random initial trees, seed 0; default 8)")
    p.add_argument("--repeats", type=int, default=1,
                   help="with --search: runs of the whole list (default 1)")


@dataclass(frozen=True)
class BenchRequest:
    """`prunestudio bench`'s flags, parsed."""

    model: options.ModelChoice
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    calibration: str
    eval_windows: int
    search: bool = False
    candidates: int = 8
    repeats: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchRequest:
        try:
            sparsities = tuple(float(x) for x in args.sparsities.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--sparsities must be numbers in [0, 1); got {args.sparsities!r}"
                             ) from None
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if not methods:
            raise ValueError("--methods is empty")
        if args.eval_windows < 1:
            raise ValueError(f"--eval-windows must be at least 1; got {args.eval_windows}")
        search = bool(getattr(args, "search", False))
        candidates, repeats = getattr(args, "candidates", 8), getattr(args, "repeats", 1)
        if candidates < 1 or repeats < 1:
            raise ValueError("--candidates and --repeats must be at least 1")
        return cls(options.ModelChoice.from_args(args), methods, sparsities, args.calibration,
                   args.eval_windows, search, candidates, repeats)

    def config(self) -> StudyConfig:
        """The default study on this model, its first evaluation set cut to `eval_windows`
        windows, no lm-eval tasks (the bench times the pruning loop): parsed once."""
        from prunestudio.commands.prune import default_study_data
        from prunestudio.schema.study_file import parse_config

        data = default_study_data()
        data["model"] = self.model.over(data["model"])
        first = data["evaluation"][0]
        data["evaluation"] = [{**first, "windows": {**first["windows"], "n": self.eval_windows}}]
        data.pop("tasks", None)
        return parse_config(data, "(bench)")

    def search_config(self) -> StudyConfig:
        """The default study on this model as a GP search with the [search] defaults (search
        split cut to `eval_windows` windows), no grid, no lm-eval tasks."""
        from prunestudio.commands.prune import default_study_data
        from prunestudio.schema.study_file import parse_config

        data = default_study_data()
        data["model"] = self.model.over(data["model"])
        data["study"] = {**data["study"], "kind": "gp"}
        for key in ("grid", "candidates", "tasks"):
            data.pop(key, None)
        data["search"] = {}
        split = parse_config(data, "(bench --search)").search.split
        data["search"] = {"split": {**split.model_dump(exclude_none=True), "n": self.eval_windows}}
        return parse_config(data, "(bench --search)")

    def specs(self) -> list[CandidateSpec]:
        from prunestudio.schema.spec import CandidateSpec

        return [CandidateSpec(method=m, sparsity=s, calibration={"mode": self.calibration})
                for m in self.methods for s in self.sparsities]


def handle(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from prunestudio.engine.bench import print_bench, run_bench
    from prunestudio.store import open_store

    request = BenchRequest.from_args(args)
    log = (lambda s: None) if args.json else print
    if request.search:
        from prunestudio.engine.bench_search import print_search_bench, run_search_bench

        config = request.search_config()
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.db") as store:
            result = run_search_bench(config, store, candidates=request.candidates,
                                      repeats=request.repeats, log=log)
        printer = print_search_bench
    else:
        config, specs = request.config(), request.specs()
        with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.db") as store:
            result = run_bench(config, specs, store, log=log)
        printer = print_bench
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        printer(result)
    return EXIT_OK
