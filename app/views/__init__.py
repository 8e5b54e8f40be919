"""Study views: the sections of the Study page, one registry keyed by study kind.

Every module of this package (not ``base`` nor ``_private`` ones) is scanned for
:class:`~prunestudio.app.views.base.StudyView` subclasses with a ``name``; the generic views
(``kinds = ("*",)``: best so far, every candidate, the candidate table, the timeline) serve
every study, the kind views add their tabs (gp: lineage and generations; random: the fitness
distribution; grid: methods × patterns and sparsity curves; structured grids: per-layer
ratios; predictor: the fits per round; tpe: convergence against the other tpe studies, fANOVA
importances and slices). A study of a kind nobody registered still gets the generic views. To
add a view for a new kind, add a module here::

    class PredictorView(StudyView):
        name, title, kinds = "predictor", "Predictor", ("predictor",)

        def render(self, ctx: StudyContext) -> None:
            ...
"""

from __future__ import annotations

import importlib
import pkgutil

from prunestudio.app.views.base import ANY_KIND, StudyContext, StudyView

__all__ = ["ANY_KIND", "StudyContext", "StudyView", "all_views", "views_for"]

_FOUND: dict[str, StudyView] | None = None


def all_views() -> dict[str, StudyView]:
    """Every registered view by name (discovered on first use)."""
    global _FOUND
    if _FOUND is None:
        found: dict[str, StudyView] = {}
        for info in pkgutil.iter_modules(__path__):
            if info.name.startswith("_") or info.name == "base":
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            for obj in vars(module).values():
                if (isinstance(obj, type) and issubclass(obj, StudyView) and obj.name
                        and obj.__module__ == module.__name__):
                    if obj.name in found:
                        raise ValueError(f"two study views named {obj.name!r}")
                    found[obj.name] = obj()
        _FOUND = found
    return _FOUND


def kind_views(kind: str) -> list[StudyView]:
    """The views registered for ``kind`` (generic ones included), in tab order."""
    views = [v for v in all_views().values() if kind in v.kinds or ANY_KIND in v.kinds]
    return sorted(views, key=lambda v: (v.order, v.name))


def views_for(ctx: StudyContext) -> list[StudyView]:
    """The views the study of ``ctx`` gets, in tab order."""
    return [v for v in kind_views(ctx.study.kind) if v.applies(ctx)]
