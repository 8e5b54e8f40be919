"""The one definition of every option that more than one command takes.

Each builder adds its flag to a parser with one spelling, one default and one help text, so
`prunestudio prune --device` and `prunestudio eval --device` cannot drift apart. Nothing here
imports torch or the engine at import time: `prunestudio --help` stays instant.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing only: the engine is imported by handlers, never by parsers
    from prunestudio.engine.progress import Reporter
    from prunestudio.schema.study_file import StudyConfig

STORE_HELP = "SQLite store (default: $PRUNESTUDIO_STORE or ./prunestudio.db)"
DEFAULT_LOCK_TIMEOUT = 30.0


def seconds(text: str) -> float:
    """argparse type of a duration: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text!r}")
    return value


def store(p: argparse.ArgumentParser) -> None:
    """`--store PATH`; None until `prunestudio.cli.main` resolves the default."""
    p.add_argument("--store", default=None, metavar="PATH", help=STORE_HELP)


def store_positional(p: argparse.ArgumentParser) -> None:
    """`STORE` as an optional positional (the TUI: `prunestudio tui runs.db`)."""
    p.add_argument("store", nargs="?", default=None, metavar="STORE", help=STORE_HELP)


def lock_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-timeout", type=seconds, default=DEFAULT_LOCK_TIMEOUT,
                   metavar="SECONDS",
                   help="how long to wait for another process's write lock on the store "
                   f"(default {DEFAULT_LOCK_TIMEOUT:g})")


def json_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print machine-readable results on stdout (progress stays on stderr)")


def quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, no library warnings on stderr")


def allow_changed_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-changed-inputs", action="store_true",
                   help="go on although the model or text fingerprints differ from the ones "
                   "the study recorded (recorded as a warning event)")


def study_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default=None, help="study name (unique in the store)")


def model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="'default' (embedded SmolLM2-135M), a hub id, a folder or a .gguf "
                   "file (default: the study config's [model] source; 'default' for prune "
                   "and bench)")


def device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, ...")


def dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default=None,
                   help="auto (default: bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16")


def candidate_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("candidate", type=int, metavar="CANDIDATE", help="candidate id (see `show`)")


@dataclass(frozen=True)
class ModelChoice:
    """`--model` / `--device` / `--dtype` as given (None: not given, keep the config's)."""

    source: str | None = None
    device: str | None = None
    dtype: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelChoice:
        return cls(getattr(args, "model", None), getattr(args, "device", None),
                   getattr(args, "dtype", None))

    def given(self) -> dict[str, str]:
        """The given flags as [model] keys."""
        return {k: v for k, v in (("source", self.source), ("device", self.device),
                                  ("dtype", self.dtype)) if v is not None}

    def over(self, section: dict[str, Any]) -> dict[str, Any]:
        """A [model] table (a dict, before the config is parsed) with the given flags over it."""
        return {**section, **self.given()}

    def apply(self, config: StudyConfig) -> StudyConfig:
        """`config` with the given flags in its [model] section: one validated ModelSection
        swapped in; every other section is the parsed one, untouched."""
        given = self.given()
        if not given:
            return config
        model = type(config.model).model_validate({**config.model.model_dump(), **given})
        return config.model_copy(update={"model": model})


def make_reporter(quiet_output: bool) -> Reporter:
    """Progress bars on stderr, or (--quiet) silence, library warnings included."""
    from prunestudio.engine.progress import Reporter, RichReporter

    if quiet_output:
        from prunestudio.engine.models.loading import quiet_libraries

        quiet_libraries()
        return Reporter()
    return RichReporter()


def add_command(subparsers: argparse._SubParsersAction, command: ModuleType
                ) -> argparse.ArgumentParser:
    """The parser of one command module: ``NAME``, ``HELP``, optional ``DESCRIPTION``, its own
    arguments (``arguments(p)``, optional), then ``OPTIONS`` — names of the shared option
    builders of this module, so every option is defined once — and its ``handle``."""
    p = subparsers.add_parser(command.NAME, help=command.HELP,
                              description=getattr(command, "DESCRIPTION", None))
    own = getattr(command, "arguments", None)
    if own is not None:
        own(p)
    for name in getattr(command, "OPTIONS", ()):
        globals()[name](p)
    p.set_defaults(handler=command.handle)
    return p
