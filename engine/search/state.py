"""A search's state, rebuilt from the store: every recorded candidate as an `Individual`.

Nothing of a search lives only in memory. The population, the set of metrics already tried and
the budget spent are functions of the recorded candidates (spec, generation, origin, parents,
status, info, metrics), so a killed search resumes exactly where it was: the strategy's next
proposals depend only on (seed, generation, the candidates of earlier generations).

Fitness is the perplexity on the search split (metric ``ppl``, role ``search``, fidelity
``proxy``); a candidate re-measured by successive halving also has its higher-fidelity fitness
(``ppl``, role ``search_full`` — `HALVING_ROLE`, in the namespace of a search's objective texts
— fidelity ``full``: every window of the extended search split, the same text), both with their
standard errors (`search.noise`). The proxy stays the candidate's fitness for every reader,
comparable across all candidates. A
candidate is *evaluated* when it is 'done' (a real evaluation), *reused* when it is 'skipped'
with ``info.equivalent_to`` (its masks equal an evaluated candidate's, whose fitness it
carries).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prunestudio.engine.search.allocation import Offsets, genome_suffix, offsets_of
from prunestudio.engine.search.noise import Measured, Ranked, Ranking, rank
from prunestudio.engine.symbolic import Node, canonical_key, parse, rank_key

from prunestudio.schema import SEARCH_FULL_ROLE, SEARCH_ROLE

BASELINE = "baseline"
HALVING_ROLE = SEARCH_FULL_ROLE  # the higher-fidelity fitness (successive halving)


@dataclass(frozen=True)
class Individual:
    """One recorded candidate of a search study."""

    id: int
    idx: int
    method: str
    expression: str | None  # canonical text (symbolic candidates)
    generation: int | None
    origin: str
    parents: tuple[int, ...]
    status: str
    fitness: float | None  # search-split PPL, proxy fidelity (evaluated or reused)
    mask_hash: str | None
    equivalent_to: int | None
    key: str | None = None  # canonical_key (structural dedup)
    rank: str | None = None  # rank_key (symbolic mask equivalence)
    proxy: Measured | None = None  # the fitness with its noise (default: `fitness` alone)
    full: Measured | None = None  # the higher-fidelity fitness (successive halving)
    size: int = 0  # nodes of the expression (ties go to the simpler metric)
    offsets: Offsets = ()  # per-kind sparsity offsets (allocation by_kind; () = uniform)

    def __post_init__(self) -> None:
        if self.proxy is None and self.fitness is not None and math.isfinite(self.fitness):
            object.__setattr__(self, "proxy", Measured(self.fitness))
        if not self.size and self.expression is not None:
            object.__setattr__(self, "size", _nodes(parse(self.expression)))

    @property
    def genome(self) -> str:
        """The expression and, when not uniform, the per-kind offsets (``div(W,D)@k+0.10``):
        what identifies a proposal and what the search's messages show."""
        return f"{self.expression}{genome_suffix(self.offsets)}"

    @property
    def tree(self) -> Node:
        if self.expression is None:
            raise ValueError(f"candidate {self.id} ({self.method}) has no expression")
        return parse(self.expression)

    @property
    def is_search(self) -> bool:
        """Proposed by the strategy (not a baseline)."""
        return self.origin != BASELINE and self.generation is not None

    @property
    def evaluated(self) -> bool:
        """A real fitness evaluation."""
        return self.status == "done" and self.fitness is not None and self.equivalent_to is None

    @property
    def reused(self) -> bool:
        return self.equivalent_to is not None and self.fitness is not None

    @property
    def has_fitness(self) -> bool:
        return self.fitness is not None and self.status in ("done", "skipped")

    @property
    def remeasured(self) -> bool:
        """Has a higher-fidelity fitness (successive halving)."""
        return self.full is not None

    @classmethod
    def from_candidate(cls, cand: dict[str, Any]) -> Individual:
        spec = cand["spec"]
        info = cand.get("info") or {}
        expression = (spec.get("options") or {}).get("expression") if spec.get(
            "method") == "symbolic" else None
        proxy_metric, full_metric = fitness_metrics(cand.get("metrics") or [])
        fitness = proxy_metric["value"] if proxy_metric is not None else None
        if fitness is not None and not math.isfinite(fitness):
            fitness = None
        key = rk = None
        size = 0
        offsets = offsets_of(spec.get("kind_offsets"))
        if expression is not None:
            tree = parse(expression)
            suffix = genome_suffix(offsets)  # one expression under two allocations: two genomes
            key, rk, size = canonical_key(tree) + suffix, rank_key(tree) + suffix, _nodes(tree)
        return cls(
            id=cand["id"], idx=cand["idx"], method=spec.get("method", ""),
            expression=expression, generation=cand.get("generation"),
            origin=cand.get("origin") or "", parents=tuple(cand.get("parents") or ()),
            status=cand["status"], fitness=fitness, mask_hash=info.get("mask_hash"),
            equivalent_to=info.get("equivalent_to"), key=key, rank=rk,
            proxy=Measured.of(proxy_metric) if fitness is not None else None,
            full=Measured.of(full_metric), size=size, offsets=offsets,
        )


def _nodes(tree: Node) -> int:
    return 1 + sum(_nodes(c) for c in tree.children)


def fitness_metrics(metrics: Iterable[dict[str, Any]]
                    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A candidate's fitness records: (proxy, full) — ``ppl`` of role ``search`` and of role
    `HALVING_ROLE`."""
    proxy = full = None
    for m in metrics:
        if m["name"] == "ppl" and m["role"] == SEARCH_ROLE:
            proxy = proxy or m
        elif m["name"] == "ppl" and m["role"] == HALVING_ROLE:
            full = full or m
    return proxy, full


def _order(ind: Individual) -> tuple[float, int]:
    return (ind.fitness if ind.fitness is not None else math.inf, ind.idx)


class SearchHistory:
    """All candidates of one search study, in recording (idx) order."""

    def __init__(self, individuals: Iterable[Individual] = ()):
        self._by_id: dict[int, Individual] = {}
        for ind in individuals:
            self.tell(ind)

    @classmethod
    def from_candidates(cls, cands: Iterable[dict[str, Any]]) -> SearchHistory:
        return cls(Individual.from_candidate(c) for c in cands)

    @classmethod
    def from_store(cls, store, study_id: int) -> SearchHistory:
        return cls.from_candidates(store.candidates(study_id, with_metrics=True))

    def tell(self, ind: Individual) -> None:
        """Add or update one candidate (after it was recorded or finished)."""
        self._by_id[ind.id] = ind

    # -- views ---------------------------------------------------------------------------------

    @property
    def individuals(self) -> list[Individual]:
        return sorted(self._by_id.values(), key=lambda i: i.idx)

    def get(self, candidate_id: int) -> Individual:
        return self._by_id[candidate_id]

    def search(self, before: int | None = None) -> list[Individual]:
        """Search candidates (not baselines), of generations < `before` when given."""
        return [i for i in self.individuals if i.is_search
                and (before is None or i.generation < before)]

    def generation(self, g: int) -> list[Individual]:
        return [i for i in self.individuals if i.is_search and i.generation == g]

    def last_generation(self) -> int | None:
        gens = [i.generation for i in self.search()]
        return max(gens) if gens else None

    def seen(self, before: int) -> set[str]:
        """Structural keys and genome texts of the search candidates of earlier
        generations: a proposal matching one is a duplicate."""
        out: set[str] = set()
        for ind in self.search(before):
            out.update(x for x in (ind.key, ind.expression and ind.genome) if x)
        return out

    def population(self, before: int | None = None, size: int | None = None,
                   ranking: Ranking | None = None) -> list[Individual]:
        """The best distinct metrics with a fitness among the search candidates of generations
        < `before`: distinct by mask hash (mask-equivalent candidates count once, the earliest
        kept) and by structure, best fitness first, ties by recording order. This is a
        (μ + λ) elitist population, a pure function of the records. With a `ranking` (noise-
        aware search) the order is `noise.rank`'s: re-measured metrics first, ties within the
        noise to the simpler metric."""
        return self.ranked(before, size, ranking).order

    def ranked(self, before: int | None = None, size: int | None = None,
               ranking: Ranking | None = None) -> Ranked:
        """`population` with what the noise-aware order decided among ties."""
        seen: set[str] = set()
        out = []
        for ind in sorted((i for i in self.search(before) if i.has_fitness), key=_order):
            ident = ind.mask_hash or f"id:{ind.equivalent_to or ind.id}"
            if ident in seen:
                continue
            seen.add(ident)
            out.append(ind)
            if ranking is None and size is not None and len(out) >= size:
                break
        if ranking is None:
            return Ranked(out)
        return rank(out, ranking, size)

    def equivalent_by_rank_key(self, rk: str) -> Individual | None:
        """The evaluated candidate behind any candidate with this rank key (a reused one
        points to the candidate it reused)."""
        for ind in self.individuals:
            if ind.rank == rk and ind.has_fitness and (ind.evaluated or ind.reused):
                ref = self._by_id.get(ind.equivalent_to) if ind.equivalent_to else ind
                if ref is not None and ref.evaluated:
                    return ref
        return None

    # -- counts --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Search candidates by outcome: evaluated (real evaluations), reused (fitness of a
        mask-equivalent candidate), failed, skipped (not evaluated: budget), pending."""
        out = {"evaluated": 0, "reused": 0, "failed": 0, "skipped": 0, "pending": 0,
               "candidates": 0}
        for ind in self.search():
            out["candidates"] += 1
            if ind.evaluated:
                out["evaluated"] += 1
            elif ind.reused:
                out["reused"] += 1
            elif ind.status == "failed":
                out["failed"] += 1
            elif ind.status in ("pending", "running"):
                out["pending"] += 1
            else:
                out["skipped"] += 1
        return out

    @property
    def real_evaluations(self) -> int:
        return sum(1 for i in self.search() if i.evaluated)

    def best(self, ranking: Ranking | None = None) -> Individual | None:
        pop = self.population(size=1, ranking=ranking)
        return pop[0] if pop else None


def saved_fraction(counts: dict[str, int]) -> float:
    """Share of fitness evaluations avoided by mask equivalence: reused / (evaluated + reused)."""
    total = counts["evaluated"] + counts["reused"]
    return counts["reused"] / total if total else 0.0
