"""Measurements, one module each (perplexity, tasks, efficiency, fitness, sparsity, ...).

Adding a measurement is adding a module here that defines a `Measurement` subclass with a
`name`; a study asks for it by name (`[study] measurements = [...]` for extra ones).
"""

from __future__ import annotations

from typing import Any

from prunestudio.engine.registry import Registry
from prunestudio.engine.study.measurements.base import (
    MeasureContext,
    Measurement,
    Metric,
    NoSettings,
)
from pydantic import ValidationError

_REGISTRY = Registry(__name__, Measurement, "name", "measurement")


def measurement_names() -> list[str]:
    return _REGISTRY.names()


def make_measurement(name: str, settings: dict[str, Any] | None = None) -> Measurement:
    """The measurement `name` with its settings validated (unknown keys are errors)."""
    cls = _REGISTRY.get(name)
    try:
        return cls(cls.settings_model(**(settings or {})))
    except ValidationError as exc:
        raise ValueError(f"invalid settings for measurement {name!r}: "
                         f"{exc.errors()[0]['msg']}") from exc


__all__ = ["MeasureContext", "Measurement", "Metric", "NoSettings", "make_measurement",
           "measurement_names"]
