"""The study-view seam: what a section of the Study page owes, and what it is given.

A view is a :class:`StudyView` subclass with a ``name`` in a module of
``prunestudio.app.views``; it is found by scanning that package (as pruning methods are), so
adding a view for a new study kind is adding one module. ``kinds`` names the study kinds it
is for (``("*",)``: every kind — the generic views, which a study of an unknown kind still
gets); ``applies`` may narrow that by content (e.g. structured candidates in a grid).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from prunestudio.app.data import FrameSnapshot
from prunestudio.store.browse import CandidateFilter

from prunestudio.schema import MetricIdentity, Study

__all__ = ["ANY_KIND", "StudyContext", "StudyView"]

ANY_KIND = "*"
MAX_LINES = 4  # best-so-far lines drawn at most (the primary metric first)


@dataclass
class StudyContext:
    """What a view renders from: the study, every candidate (``frame``), those passing the
    page's filters (``df``), the filters themselves (for SQL-paged tables), the primary metric
    (``Study.primary_metric`` among the identities found) and the page's display options."""

    path: str
    study: Study
    frame: FrameSnapshot
    df: pd.DataFrame
    filters: CandidateFilter
    primary: MetricIdentity | None
    titles: dict[str, str]  # identity key -> unique column title (column_titles)
    log_y: bool = False
    color_by: str = "origin"
    now: float = field(default_factory=time.time)

    def memo(self, name: str, build: Callable[[], Any], *args: Any) -> Any:
        """``build()`` once per study snapshot, filters, display options and ``args``: a rerun
        that changed nothing (a live tick, another tab's widget) rebuilds no figure."""
        key = (name, self.filters, self.log_y, self.color_by, *args)
        return self.frame.memo(key, build)

    def title(self, identity: MetricIdentity | None) -> str:
        if identity is None:
            return ""
        return self.titles.get(identity.key, identity.title)

    @property
    def identities(self) -> list[MetricIdentity]:
        return list(self.frame.identities.values())

    def ppl_lines(self) -> list[tuple[str, str]]:
        """``(column, title)`` of the perplexities to draw together (the primary first, then
        the held-out sets, at most :data:`MAX_LINES`)."""
        ppl = [i for i in self.identities if i.name == "ppl"]
        if self.primary is not None and self.primary in ppl:
            ppl.remove(self.primary)
            ppl.insert(0, self.primary)
        return [(i.key, self.title(i)) for i in ppl[:MAX_LINES]]

    def labels(self, ids: Sequence[int]) -> dict[int, str]:
        """Labels of candidate ids (from the frame)."""
        df = self.frame.df
        found = df[df["id"].isin(list(ids))]
        return dict(zip(found["id"].astype(int), found["label"], strict=True))


class StudyView:
    """One section (a tab) of the Study page."""

    name: str = ""  # registry key (unique)
    title: str = ""  # tab title
    kinds: tuple[str, ...] = ()  # study kinds this view is for; ANY_KIND: every kind
    order: int = 50  # tabs are ordered by this, then by name

    def applies(self, ctx: StudyContext) -> bool:
        """Whether this study gets the view (its kind already matched)."""
        return True

    def render(self, ctx: StudyContext) -> Any:
        raise NotImplementedError
