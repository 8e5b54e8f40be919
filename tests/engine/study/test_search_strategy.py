"""GP and random search without a model: configuration, proposals, determinism, population."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prunestudio.engine.search.state import Individual, SearchHistory, saved_fraction
from prunestudio.engine.studies.config import load_config
from prunestudio.engine.study.equivalence import known_masks
from prunestudio.engine.study.proposers import proposer_class
from prunestudio.engine.study.proposers.gp import GPSearch
from prunestudio.engine.study.proposers.random import RandomSearch
from prunestudio.engine.symbolic import (
    BINARY,
    UNARY,
    canonical_key,
    depth,
    parse,
    rank_key,
    simplify,
    to_text,
)

from prunestudio.schema.study_file import ConfigError, SearchSection, parse_config

REPO = Path(__file__).resolve().parents[3]

BASE = {
    "study": {"kind": "gp", "seed": 3},
    "calibration": {"source": "pydoc", "seqlen": 32, "n": 4},
    "evaluation": [{"role": "in_domain",
                    "windows": {"source": "pydoc", "seqlen": 64, "n": 4, "offset": 20000}}],
}


def _config(**search):
    data = {**BASE, "search": search} if search else dict(BASE)
    return parse_config(data)


def _individual(i: int, expression: str, fitness: float | None, generation: int = 0, *,
                status: str = "done", mask_hash: str | None = None,
                equivalent_to: int | None = None, origin: str = "init") -> Individual:
    tree = parse(expression)
    return Individual(id=100 + i, idx=i, method="symbolic", expression=expression,
                      generation=generation, origin=origin, parents=(), status=status,
                      fitness=fitness, mask_hash=mask_hash or f"h{i}",
                      equivalent_to=equivalent_to, key=canonical_key(tree), rank=rank_key(tree))


def _history(n: int = 12, seed: int = 0) -> SearchHistory:
    """A recorded generation 0 with random fitness values."""
    rng = random.Random(seed)
    settings = SearchSection()
    props = GPSearch(settings, seed).proposals(SearchHistory(), 0)[:n]
    return SearchHistory(_individual(i, p.expression, 20 + rng.random() * 50)
                         for i, p in enumerate(props))


# ---------------------------------------------------------------- configuration


def test_paper_defaults_and_example_configs_parse():
    s = _config().search
    assert (s.population, s.iterations, s.top_k, s.p_mutation, s.sparsity, s.pattern) == (
        50, 300, 10, 0.5, 0.5, "unstructured")
    assert s.init_depth == (3, 5) and s.calibration == "dense" and s.real_budget == 650
    for name, kind in (("gp-smollm2", "gp"), ("random-smollm2", "random"), ("gp-demo", "gp")):
        config = load_config(REPO / "configs" / f"{name}.toml")
        assert config.study.kind == kind and config.is_search
    demo = load_config(REPO / "configs" / "gp-demo.toml").search
    assert demo.real_budget <= 20, "the README's demo search must stay short on a CPU"
    spec = s.candidate_spec("mul(W,sqrt(X))")
    assert (spec.method, spec.calibration.mode, spec.options["expression"]) == (
        "symbolic", "dense", "mul(W,sqrt(X))")


@pytest.mark.parametrize(("search", "top", "fragments"), [
    ({"population": 1}, {}, ["search.population", "greater than or equal to 2"]),
    ({"populaton": 10}, {}, ["search.populaton: unknown key"]),
    ({"p_mutation": 1.5}, {}, ["search.p_mutation"]),
    ({"init_depth": [5, 3]}, {}, ["search.init_depth", "1 ≤ min ≤ max"]),
    ({"init_depth": [3, 9], "max_depth": 7}, {}, ["init_depth max (9) exceeds max_depth (7)"]),
    ({"seed_metrics": ["wanda", "mul(W,"]}, {}, ["search.seed_metrics", "seed_metrics[1]",
                                                  "at position 6"]),
    ({"leaves": ["W", "Q"]}, {}, ["search.leaves.1"]),
    ({"baselines": ["wandaa"]}, {}, ["search.baselines", "unknown method 'wandaa'"]),
    ({"calibration": "fast"}, {}, ["search.calibration", "'dense' or 'sequential'"]),
    ({"pattern": "4:4"}, {}, ["search.pattern", "0 < N < M"]),
    ({}, {"study": {"kind": "gpp"}}, ["study.kind", "unknown study kind 'gpp'; allowed: gp, grid, predictor, random, tpe"]),
    ({}, {"study": {"kind": "grid"}}, ["[search] is for study.kind = 'gp' or 'random'"]),
    (None, {"grid": {"methods": ["wanda"]}}, ["takes no grid.methods", "search.baselines"]),
    (None, {"evaluation": [{"role": "search", "windows": {"source": "pydoc", "n": 2}}]},
     ["evaluation", "'search' is reserved"]),
])
def test_bad_search_config_names_the_field(search, top, fragments):
    data = {**BASE, **({"search": search} if search is not None else {}), **top}
    if "study" in top:
        data["study"] = {**BASE["study"], **top["study"]}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "(test)")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# ---------------------------------------------------------------- proposals


def test_initial_population_is_shared_distinct_and_seeded():
    settings = _config(population=20, seed_metrics=["wanda", "pruner_zero"]).search
    gp = GPSearch(settings, 7).proposals(SearchHistory(), 0)
    rnd = RandomSearch(settings, 7).proposals(SearchHistory(), 0)
    assert gp == rnd, "GP and random search start from the same population for one seed"
    assert len(gp) == 20
    assert [p.origin for p in gp[:2]] == ["seed", "seed"]
    assert [p.expression for p in gp[:2]] == ["mul(W,sqrt(X))", "mul(mms(G),sqr(W))"]
    assert {p.origin for p in gp[2:]} == {"init"}
    assert len({p.key for p in gp}) == 20, "distinct metrics only"
    for p in gp:
        assert p.expression == to_text(simplify(parse(p.raw))), "stored simplified"
        assert parse(p.expression) == parse(p.expression)
        if p.origin == "init":
            assert 3 <= depth(parse(p.raw)) <= 5
    assert GPSearch(settings, 8).proposals(SearchHistory(), 0) != gp, "another seed, another start"


def test_gp_children_come_from_top_k_tournaments_and_stay_within_depth():
    history = _history(12)
    settings = _config(population=12, top_k=4, offspring=16, max_depth=6).search
    gp = GPSearch(settings, 1)
    top = {i.id for i in history.population(before=1)[:4]}
    props = gp.proposals(history, 1)
    assert len(props) == 16
    seen = history.seen(1)
    origins = {p.origin for p in props}
    assert origins <= {"crossover", "mutation"} and "crossover" in origins
    for p in props:
        assert set(p.parents) <= top and len(p.parents) == 2
        assert depth(parse(p.expression)) <= 6
        assert p.key not in seen and p.expression not in seen
        for name in (n.op for n in _nodes(parse(p.expression))):
            assert name in UNARY or name in BINARY or name in ("W", "G", "X")
    assert len({p.key for p in props}) == 16


def _nodes(tree):
    yield tree
    for c in tree.children:
        yield from _nodes(c)


def test_mutation_probability_is_about_one_half():
    history = _history(12)
    settings = _config(population=12, top_k=6, offspring=64).search
    origins = [p.origin for g in range(1, 5) for p in GPSearch(settings, g).proposals(history, g)]
    share = origins.count("mutation") / len(origins)
    assert 0.35 < share < 0.65, share
    none = _config(population=12, offspring=32, p_mutation=0.0).search
    assert {p.origin for p in GPSearch(none, 0).proposals(history, 1)} == {"crossover"}


def test_random_search_draws_fresh_trees_of_the_initial_depths():
    history = _history(12)
    settings = _config(offspring=30).search
    props = RandomSearch(settings, 2).proposals(history, 1)
    assert len(props) == 30 and {p.origin for p in props} == {"random"}
    assert all(p.parents == () and 3 <= depth(parse(p.raw)) <= 5 for p in props)
    assert RandomSearch(settings, 2).proposals(history, 2) != props


def test_ask_depends_only_on_seed_generation_and_earlier_generations():
    """What makes a killed search resume identically: records of generation g itself (or
    later) do not change the proposals of generation g."""
    history = _history(12)
    for strategy in (GPSearch(_config(population=12).search, 5),
                     RandomSearch(_config(population=12).search, 5)):
        first = strategy.proposals(history, 1)
        again = strategy.proposals(history, 1)
        grown = SearchHistory(history.individuals)
        for j, p in enumerate(first):  # generation 1 recorded (one evaluated), as on resume
            grown.tell(_individual(50 + j, p.expression, 10.0 if j == 0 else None, 1,
                                   status="done" if j == 0 else "pending"))
        assert first == again == strategy.proposals(grown, 1)
        assert (strategy.proposals(grown, 2) != strategy.proposals(history, 2)
                or strategy.kind == "random")


def test_proposer_registry_names_the_kinds():
    assert proposer_class("gp") is GPSearch and proposer_class("random") is RandomSearch
    assert isinstance(proposer_class("gp")(SearchSection(), 0), GPSearch)
    with pytest.raises(ValueError, match="gp, grid, predictor, random, tpe"):
        proposer_class("anneal")


# ---------------------------------------------------------------- population and counts


def test_population_is_elitist_distinct_by_mask_and_skips_failures():
    h = SearchHistory([
        _individual(0, "W", 30.0, mask_hash="a"),
        _individual(1, "mul(W,sqrt(X))", 25.0, mask_hash="b"),
        _individual(2, "sqrt(mul(W,sqrt(X)))", 25.0, status="skipped", mask_hash="b",
                    equivalent_to=101),
        _individual(3, "mul(W,G)", None, status="failed", mask_hash=None),
        _individual(4, "mul(W,X)", 24.0, generation=1, mask_hash="c"),
        _individual(5, "G", 90.0, generation=1, mask_hash="d"),
    ])
    assert [i.id for i in h.population(before=1)] == [101, 100]
    assert [i.id for i in h.population()] == [104, 101, 100, 105]
    assert [i.id for i in h.population(size=2)] == [104, 101]
    assert h.equivalent_by_rank_key(rank_key(parse("sqr(mul(W,sqrt(X)))"))).id == 101
    # the executor's after-pruning hook: each zero-pattern hash of an evaluated candidate,
    # first one first; the reused and the failed candidates never count; "off" knows none
    assert known_masks(h, "rank_key+mask") == {"a": 100, "b": 101, "c": 104, "d": 105}
    assert known_masks(h, "off") == {}
    counts = h.counts()
    assert (counts["evaluated"], counts["reused"], counts["failed"]) == (4, 1, 1)
    assert saved_fraction(counts) == pytest.approx(1 / 5)
    assert h.best().id == 104 and h.last_generation() == 1


def test_proposals_respect_max_depth_after_simplification():
    """Simplification may move a neg outwards and deepen a tree by one level; such a tree is
    never proposed, and a too-deep recorded parent is skipped rather than crashing."""
    assert depth(simplify(parse("mul(neg(W),sqrt(sqrt(X)))"))) == 5
    settings = _config(population=30, offspring=40, top_k=10, init_depth=[3, 5],
                       max_depth=5).search
    for seed in range(4):
        initial = GPSearch(settings, seed).proposals(SearchHistory(), 0)
        rng = random.Random(seed)
        history = SearchHistory(_individual(i, p.expression, rng.random())
                                for i, p in enumerate(initial))
        for g in (1, 2):
            for p in GPSearch(settings, seed).proposals(history, g) + initial:
                assert depth(parse(p.expression)) <= 5
    deep = _individual(99, "neg(mul(W,sqrt(sqrt(sqrt(sqrt(X))))))", 0.5)
    assert depth(deep.tree) == 7
    history = SearchHistory([deep, _individual(98, "mul(W,sqrt(X))", 0.7)])
    props = GPSearch(settings, 0).proposals(history, 1)
    assert all(depth(parse(p.expression)) <= 5 for p in props)
