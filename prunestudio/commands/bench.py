"""`prunestudio bench`: time each phase of the study loop against a naive loop (see
`prunestudio.engine.bench`)."""

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
               "throughput ratio.")
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
                   help="evaluation windows (256 tokens of pydoc from token 40,000)")


@dataclass(frozen=True)
class BenchRequest:
    """`prunestudio bench`'s flags, parsed."""

    model: options.ModelChoice
    methods: tuple[str, ...]
    sparsities: tuple[float, ...]
    calibration: str
    eval_windows: int

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
        return cls(options.ModelChoice.from_args(args), methods, sparsities, args.calibration,
                   args.eval_windows)

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
    config, specs = request.config(), request.specs()
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "bench.db") as store:
        result = run_bench(config, specs, store, log=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_bench(result)
    return EXIT_OK
