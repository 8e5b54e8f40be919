"""Per-layer-kind sparsity as part of a search's genome (`[search] allocation`, beyond the
paper): the operators, the genome identity, the paper's trees left as they were, and a search
on a tiny model that records what it pruned."""

from __future__ import annotations

import math
import random

import pytest
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study
from prunestudio.engine.search.allocation import (
    cross_offsets,
    genome_suffix,
    mutate_offsets,
    offsets_of,
    random_offsets,
)
from prunestudio.engine.search.state import Individual, SearchHistory
from prunestudio.engine.study.proposers.gp import GPSearch
from prunestudio.engine.study.proposers.random import RandomSearch
from prunestudio.engine.symbolic import canonical_key, parse, rank_key
from prunestudio.store import open_store
from test_search_runner import search_data

from prunestudio.schema.labels import spec_label
from prunestudio.schema.study_file import Allocation, ConfigError, SearchSection, parse_config

BY_KIND = {"mode": "by_kind"}
KINDS = ["q", "k", "v", "o", "gate", "up", "down"]


def _levels(offsets, step=0.05):
    got = dict(offsets)
    return {k: round(got.get(k, 0.0) / step) for k in KINDS}


def _on_grid(offsets, a: Allocation) -> bool:
    return all(abs(v / a.step - round(v / a.step)) < 1e-9 and abs(v) <= a.span + 1e-9
               for _, v in offsets)


def test_operators_stay_on_the_grid_and_inherit_from_the_parents():
    a = Allocation(mode="by_kind")
    rng = random.Random(0)
    parents = [random_offsets(rng, a) for _ in range(40)]
    assert all(_on_grid(p, a) for p in parents)
    assert len(set(parents)) > 30  # random draws, not one allocation
    for x, y in zip(parents, parents[1:], strict=False):
        c1, c2 = cross_offsets(x, y, rng, a)
        lx, ly, l1, l2 = _levels(x), _levels(y), _levels(c1), _levels(c2)
        for k in KINDS:  # each kind from one parent, the other child from the other
            assert {l1[k], l2[k]} == {lx[k], ly[k]}
        m = mutate_offsets(c1, rng, a)
        moved = {k: _levels(m)[k] - l1[k] for k in KINDS if _levels(m)[k] != l1[k]}
        assert len(moved) == 1 and abs(next(iter(moved.values()))) == 1 and _on_grid(m, a)
    # the edge of the band reflects
    edge = offsets_of({k: a.span for k in KINDS})
    assert all(_on_grid(mutate_offsets(edge, random.Random(s), a), a) for s in range(20))
    assert offsets_of({"q": 0.0, "k": 0.1}) == (("k", 0.1),)
    assert genome_suffix(()) == "" and genome_suffix((("k", 0.1),)) == "@k+0.10"


def test_by_kind_leaves_the_trees_as_they_were_and_alternates_uniform_and_random():
    paper = GPSearch(SearchSection(), 4).proposals(SearchHistory(), 0)
    by_kind = GPSearch(SearchSection(allocation=BY_KIND), 4).proposals(SearchHistory(), 0)
    # the trees are drawn from the same stream: the paper's attempts are the first ones
    raws = [p.raw for p in by_kind]
    it = iter(raws)
    assert all(any(r == p.raw for r in it) for p in paper[:40])
    uniform = [p for p in by_kind if not p.offsets]
    assert uniform and len(uniform) < len(by_kind)
    assert all(_on_grid(p.offsets, Allocation(mode="by_kind")) for p in by_kind)
    assert len({p.genome for p in by_kind}) == len(by_kind)
    for kind in (GPSearch, RandomSearch):  # uniform mode proposes no offsets at all
        assert not any(p.offsets for p in kind(SearchSection(), 4).proposals(SearchHistory(), 0))
    rnd = RandomSearch(SearchSection(allocation=BY_KIND), 4).proposals(SearchHistory(), 3)
    assert sum(1 for p in rnd if p.offsets) >= 1


def _ind(i: int, expression: str, fitness: float, offsets=()) -> Individual:
    tree = parse(expression)
    suffix = genome_suffix(offsets)
    return Individual(id=100 + i, idx=i, method="symbolic", expression=expression, generation=0,
                      origin="init", parents=(), status="done", fitness=fitness,
                      mask_hash=f"h{i}", equivalent_to=None, key=canonical_key(tree) + suffix,
                      rank=rank_key(tree) + suffix, offsets=offsets)


def test_gp_children_carry_their_parents_offsets_and_one_expression_makes_two_genomes():
    a = Allocation(mode="by_kind")
    rng = random.Random(1)
    history = SearchHistory(_ind(i, e, 20.0 + i, random_offsets(rng, a))
                            for i, e in enumerate(["mul(W,X)", "W", "mul(W,sqr(X))",
                                                   "div(W,G)", "add(W,X)", "mul(sqr(W),X)"]))
    settings = SearchSection(population=6, top_k=6, offspring=32, allocation=BY_KIND)
    props = GPSearch(settings, 2).proposals(history, 1)
    assert len(props) == 32
    by_id = {ind.id: ind for ind in history.individuals}
    mutated = 0
    for p in props:
        pa, pb = (_levels(by_id[i].offsets) for i in p.parents)
        child = _levels(p.offsets)
        off = [k for k in KINDS if child[k] not in (pa[k], pb[k])]
        assert len(off) <= 1  # at most one kind moved by a mutation
        if off:
            mutated += 1
            k = off[0]
            assert min(abs(child[k] - pa[k]), abs(child[k] - pb[k])) == 1
    assert mutated > 0
    # the same expression under two allocations is two genomes (both proposable); one genome
    # already recorded is not proposed again
    seen = history.seen(1)
    assert all(p.genome not in seen for p in props)
    assert "mul(W,X)" + genome_suffix(history.individuals[0].offsets) in seen
    assert "mul(W,X)" not in seen or not history.individuals[0].offsets


def test_allocation_settings_are_checked():
    with pytest.raises(ConfigError, match="outside \\[0, 1\\) at sparsity 0.8.*span ≤ 0.100"):
        parse_config({**search_data("default", allocation={"mode": "by_kind"}, sparsity=0.8)})
    with pytest.raises(ConfigError, match="pattern 2:4 fixes it"):
        parse_config(search_data("default", allocation=BY_KIND, pattern="2:4"))
    with pytest.raises(ConfigError, match="distinct"):
        parse_config(search_data("default", allocation={"mode": "by_kind",
                                                        "kinds": ["q", "q"]}))
    with pytest.raises(ConfigError, match="at least one step"):
        parse_config(search_data("default", allocation={"mode": "by_kind", "step": 0.1,
                                                        "span": 0.05}))


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


@pytest.mark.parametrize("kind", ["gp", "random"])
def test_a_search_by_kind_prunes_each_kind_to_its_share_and_the_model_to_the_target(
        tmp_path, tiny_model_dirs, llama, kind):
    data = search_data(tiny_model_dirs["llama"], kind=kind, budget=10, noise_aware=False,
                       finalists=1, allocation={"mode": "by_kind", "span": 0.15})
    study_id, status = launch_study(parse_config(data), tmp_path / "a.db", lm=llama)
    assert status == "finished"
    with open_store(tmp_path / "a.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
        events = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE study_id = ? ORDER BY id", [study_id])]
    assert any("allocation by kind (beyond the paper)" in e for e in events)
    by_kind = [c for c in cands if c["spec"].get("layer_ratios") == "by_kind"
               and c["status"] == "done" and not (c["info"] or {}).get("equivalent_to")]
    assert by_kind, "no candidate with a non-uniform allocation was evaluated"
    for c in by_kind:
        offsets = c["spec"]["kind_offsets"]
        ratios = c["info"]["kind_ratios"]
        assert set(ratios) == set(KINDS)
        # re-centred: the ratios differ from the target exactly as the offsets differ
        spread = {k: ratios[k] - offsets.get(k, 0.0) for k in KINDS}
        assert max(spread.values()) - min(spread.values()) < 1e-9
        assert "kinds[" in spec_label(c["spec"])
        sparsity = next(m["value"] for m in c["metrics"] if m["name"] == "sparsity")
        assert sparsity == pytest.approx(0.5, abs=0.01)
        fit = next(m["value"] for m in c["metrics"] if m["name"] == "ppl"
                   and m["role"] == "search")
        assert math.isfinite(fit)
    genomes = [(c["spec"]["options"]["expression"], genome_suffix(offsets_of(
        c["spec"].get("kind_offsets")))) for c in cands if c["origin"] != "baseline"]
    assert len(set(genomes)) == len(genomes), "a genome was recorded twice"
