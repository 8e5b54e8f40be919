"""The search space beyond the paper, switched on in the study file: the leaf D (SparseGPT's
inverse-Hessian diagonal) and constants. Off (the default) the space is the paper's W, G, X."""

from __future__ import annotations

import math

import pytest
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study
from prunestudio.engine.symbolic import leaves_used, parse
from prunestudio.engine.symbolic.grammar import CONSTANTS
from prunestudio.store import open_store
from test_search_runner import search_data

from prunestudio.schema.study_file import parse_config


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


def _nodes(tree):
    yield tree
    for c in tree.children:
        yield from _nodes(c)


def _expressions(tmp_path, data, llama, name):
    study_id, status = launch_study(parse_config(data), tmp_path / name, lm=llama)
    with open_store(tmp_path / name, readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
        events = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE study_id = ? ORDER BY id", [study_id])]
    assert status == "finished"
    search = [c for c in cands if c["origin"] != "baseline"]
    return search, events


def test_a_search_with_d_and_constants_proposes_and_evaluates_them(tmp_path, tiny_model_dirs,
                                                                   llama):
    data = search_data(tiny_model_dirs["llama"], budget=12, leaves=["W", "X", "D"],
                       constants=True, noise_aware=False, finalists=1,
                       seed_metrics=["sparsegpt_score"])
    search, events = _expressions(tmp_path, data, llama, "extended.db")
    trees = [parse(c["spec"]["options"]["expression"]) for c in search]
    assert any("D" in leaves_used(t) for t in trees)
    assert any(n.op in CONSTANTS for t in trees for n in _nodes(t))
    assert not any("G" in leaves_used(t) for t in trees)  # G is not among the leaves
    seed = next(c for c in search if c["origin"] == "seed")
    assert seed["spec"]["options"]["expression"] == "div(sqr(W),sqr(D))"
    fit = next(m for m in seed["metrics"] if m["name"] == "ppl" and m["role"] == "search")
    assert math.isfinite(fit["value"])
    assert any("terminals W, X, D, 0.1, 0.5, 2, 10 (beyond the paper's W, G, X)" in e
               for e in events)


def test_the_default_space_is_the_papers(tmp_path, tiny_model_dirs, llama):
    data = search_data(tiny_model_dirs["llama"], budget=8, noise_aware=False, finalists=1)
    search, events = _expressions(tmp_path, data, llama, "paper.db")
    trees = [parse(c["spec"]["options"]["expression"]) for c in search]
    assert all(leaves_used(t) <= {"W", "G", "X"} for t in trees)
    assert not any(n.op in CONSTANTS for t in trees for n in _nodes(t))
    assert any("terminals W, G, X;" in e for e in events)
