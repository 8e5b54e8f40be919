"""The engine's registries as the schema's validators see them (`prunestudio.schema.catalog`).

Installed by ``prunestudio/engine/__init__.py``, so importing any part of the engine makes
study files and candidate specs validate in full. Lookups import the registries on first use:
installing the catalog imports no torch.
"""

from __future__ import annotations

from prunestudio.schema.catalog import MethodInfo, SourceInfo, install_catalog


class EngineCatalog:
    """Methods, text sources, lm-eval tasks, symbolic metrics and measurements by name."""

    def method(self, name: str) -> MethodInfo:
        from prunestudio.engine.methods import get_method

        return get_method(name)

    def source(self, name: str) -> SourceInfo:
        from prunestudio.engine.data.sources import get_source

        return get_source(name)

    def tasks(self, names: list[str]) -> list[str]:
        from prunestudio.engine.evaluate.harness import resolve_tasks

        return resolve_tasks(names)  # TaskError is a ValueError naming the allowed ones

    def expression(self, text: str, *, known_names: bool = False) -> tuple[str, int]:
        from prunestudio.engine.symbolic import KNOWN_METRICS, depth, parse, simplify, to_text

        if known_names and text in KNOWN_METRICS:
            text = KNOWN_METRICS[text]
        try:
            tree = parse(text)
        except ValueError as exc:
            if not known_names:
                raise
            raise ValueError(f"{text!r} is neither a known metric ({', '.join(KNOWN_METRICS)}) "
                             f"nor an expression: {exc}") from None
        return to_text(tree), max(depth(tree), depth(simplify(tree)))

    def measurement_names(self) -> list[str]:
        from prunestudio.engine.study.measurements import measurement_names

        return measurement_names()


    def study_kinds(self) -> list[str]:
        from prunestudio.engine.study.proposers import proposer_kinds

        return proposer_kinds()


def install() -> None:
    install_catalog(EngineCatalog())
