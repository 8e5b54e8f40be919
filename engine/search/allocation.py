"""Per-layer-kind sparsity offsets as a part of a search's genome (`[search] allocation`).

A genome is (expression, offsets): `offsets` maps a layer kind (q, k, v, o, gate, up, down,
...) to a sparsity offset on the grid i × step, |i| ≤ levels; kinds at 0 are left out, so the
uniform allocation is the empty tuple and a search with `allocation.mode = "uniform"` proposes
exactly the paper's genomes. The engine re-centres the offsets on the model's parameter counts
(`engine.pruning.kind_ratios`), so every candidate prunes the model as a whole to the search's
sparsity.

Operators draw from their own random stream (`generation_rng(seed, g, "allocation")`), never
from the trees' streams: switching allocation on leaves the trees of every generation as they
were.
"""

from __future__ import annotations

import random

from prunestudio.schema.labels import kind_offsets_text
from prunestudio.schema.study_file import Allocation

Offsets = tuple[tuple[str, float], ...]  # sorted by kind, no zero offset


def offsets_of(mapping: dict[str, float] | None) -> Offsets:
    """The canonical offsets of a mapping (a spec's `kind_offsets`): sorted, zeros dropped,
    rounded to 4 decimals so grid values compare equal after a JSON round trip."""
    return tuple(sorted((k, round(float(v), 4)) for k, v in (mapping or {}).items()
                        if round(float(v), 4) != 0))


def genome_suffix(offsets: Offsets) -> str:
    """What a genome's identity adds to its expression: ``@k+0.10,up-0.05`` ('' if uniform)."""
    text = kind_offsets_text(dict(offsets))
    return f"@{text}" if text else ""


def _on_grid(levels: dict[str, int], a: Allocation) -> Offsets:
    return offsets_of({k: i * a.step for k, i in levels.items()})


def _levels(offsets: Offsets, a: Allocation) -> dict[str, int]:
    got = dict(offsets)
    return {k: int(round(got.get(k, 0.0) / a.step)) for k in a.kinds}


def random_offsets(rng: random.Random, a: Allocation) -> Offsets:
    """Every kind's offset drawn uniformly from the grid."""
    return _on_grid({k: rng.randint(-a.levels, a.levels) for k in a.kinds}, a)


def cross_offsets(x: Offsets, y: Offsets, rng: random.Random, a: Allocation
                  ) -> tuple[Offsets, Offsets]:
    """Uniform crossover, kind by kind: each kind's offset goes to one child from one parent
    and to the other child from the other parent."""
    lx, ly = _levels(x, a), _levels(y, a)
    c1, c2 = {}, {}
    for k in a.kinds:
        if rng.random() < 0.5:
            c1[k], c2[k] = lx[k], ly[k]
        else:
            c1[k], c2[k] = ly[k], lx[k]
    return _on_grid(c1, a), _on_grid(c2, a)


def mutate_offsets(x: Offsets, rng: random.Random, a: Allocation) -> Offsets:
    """One kind's offset moved one step up or down (reflected at ± span)."""
    levels = _levels(x, a)
    k = rng.choice(a.kinds)
    move = rng.choice((-1, 1))
    if abs(levels[k] + move) > a.levels:
        move = -move
    levels[k] += move
    return _on_grid(levels, a)
