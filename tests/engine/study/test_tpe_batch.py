"""AdaPruner's TPE search in batches (`[tpe] batch`), driven without a model: the proposer runs
through a stand-in of the study loop (proposals recorded before any is evaluated, a store that
finds a recorded spec by its hash) on a made-up objective, so every kill point of a batch and
every order of results can be tried in milliseconds. Batch 1 asks exactly what the sequential
search asked; a batch of B asks B distinct trials, the earlier ones of the batch given to the
sampler as RUNNING (constant liar); a study killed anywhere in a batch ends as an uninterrupted
one. The end-to-end runs (the tiny model, SIGKILL) are in test_tpe_study.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from prunestudio.engine.study.proposers.tpe import TpeSearch

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import TpeSection

DESCRIPTION = {"model": "m", "timings": {"load": 0.0}, "device": "cpu", "dtype": "float32"}

# The trials' spec hashes (first 10 hex digits) and statuses that the sequential search (one
# trial per round, before `batch` existed) recorded for these settings on `_objective`: batch 1
# must ask exactly these. "tpe-calibration" redraws proposals equal to recorded specs (trials
# 3, 4, 8, 11, 12, 13).
SEQUENTIAL = {
    ("tpe", "joint", 9): [
        ("6830734642", "failed"), ("c1fd74ac2d", "done"), ("5e4a6b95f9", "failed"),
        ("abf1682a32", "done"), ("3b48156a09", "done"), ("b303a0ebc3", "done"),
        ("84926d801f", "failed"), ("7dafb6db0c", "done"), ("81d5f0e325", "failed")],
    ("random", "joint", 9): [
        ("6830734642", "failed"), ("c1fd74ac2d", "done"), ("5e4a6b95f9", "failed"),
        ("abf1682a32", "done"), ("3b48156a09", "done"), ("c27d872a7d", "done"),
        ("e39bd94f1e", "failed"), ("9044c94218", "done"), ("98a5529989", "failed")],
    ("tpe", "calibration", 14): [
        ("d3901f275d", "done"), ("f6ca288c8a", "done"), ("862b7a321c", "done"),
        ("4ddd1588bb", "done"), ("2ad02772df", "done"), ("5453d34b34", "done"),
        ("df886e953f", "done"), ("4681c5d77e", "done"), ("e4f39f28c3", "done"),
        ("590a9984c4", "done"), ("cd5f2aae3b", "done"), ("d935f7d7ac", "done"),
        ("4ab0eef8bb", "done"), ("f80819f731", "done")],
}


def _objective(spec: dict[str, Any]) -> float | None:
    """A made-up search objective of a trial's spec (None: the trial fails)."""
    o = spec["options"]
    if len(spec["calibration_samples"]) == 2 and o["alpha"] > 0.5 and o["gamma"] > 0:
        return None
    return (10 + (o["alpha"] - 0.3) ** 2 + (o["beta"] - 0.6) ** 2
            + math.log10(1 + o["gamma"]) / 4 + sum(spec["calibration_samples"]) / 10)


def _search(sampler: str = "tpe", search: str = "joint", trials: int = 9,
            batch: int | None = None) -> TpeSearch:
    settings = TpeSection(sampler=sampler, search=search, trials=trials, batch=batch,
                          n_startup_trials=3, samples=3, factors=[1.0, 100.0, 10000.0],
                          baselines=[])
    return TpeSearch(settings, seed=5, pool=6)


Kill = Callable[[str, dict[str, Any]], bool]


def _drive(search: TpeSearch, cands: list[dict[str, Any]], *, kill: Kill | None = None,
           reverse: bool = False, rounds: list[list[int]] | None = None) -> bool:
    """Run `search` on `cands` (the store, changed in place) as `run_study` does; `kill(what,
    candidate)` after each proposal recorded ("recorded") and each result ("done") stops the
    run there as kill -9 would (False: the study was killed). `reverse`: plan a round's items
    and record their results last to first (results of parallel workers come in any order).
    `rounds`: appends the trial numbers each round proposed."""
    search.restore([dict(c) for c in cands], DESCRIPTION)
    while (rnd := search.ask()) is not None:
        if rounds is not None and rnd.proposals:
            rounds.append([p.generation for p in rnd.proposals])
        for p in rnd.proposals:
            digest = CandidateSpec.model_validate(p.spec).hash()
            c = next((c for c in cands if c["spec_hash"] == digest), None)
            if c is None:  # the store records a new spec; a recorded one keeps its id
                c = {"id": len(cands) + 1, "spec": p.spec, "spec_hash": digest,
                     "origin": p.origin, "generation": p.generation, "status": "pending",
                     "metrics": [], "info": {}}
                cands.append(c)
            rnd.ids.append(c["id"])
            search.tell(dict(c))
            if kill is not None and kill("recorded", c):
                return False
        items = search.todo(rnd)
        order = items[::-1] if reverse else items
        jobs = {item.id: search.plan(item) for item in order}  # all planned before a result
        for item in order:
            c = next(c for c in cands if c["id"] == item.id)
            value = 50.0 if c["generation"] is None else _objective(c["spec"])
            metrics = [] if value is None else [
                {"name": "ppl", "role": "search", "fidelity": "proxy", "value": value}]
            if c["spec"]["method"] == "dense":
                metrics.append({"name": "prunable_params", "role": "structure", "value": 1.0,
                                "protocol": {"layout": {"blocks": [0, 1, 2, 3]}}})
            c.update(status="failed" if value is None else "done", metrics=metrics,
                     info=dict(jobs[item.id].info))
            search.tell(dict(c))
            if kill is not None and kill("done", c):
                return False
        search.end_round(rnd, items)
    return True


def _trials(cands: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return sorted((c["generation"], c["spec_hash"], c["status"]) for c in cands
                  if c["generation"] is not None)


@pytest.mark.parametrize("key", list(SEQUENTIAL))
@pytest.mark.parametrize("batch", [None, 1])
def test_batch_one_asks_exactly_what_the_sequential_search_asked(key, batch):
    sampler, search, trials = key
    cands: list[dict[str, Any]] = []
    rounds: list[list[int]] = []
    assert _drive(_search(sampler, search, trials, batch), cands, rounds=rounds)
    assert [(h[:10], status) for _, h, status in _trials(cands)] == SEQUENTIAL[key]
    assert rounds[1:] == [[n] for n in range(trials)]  # after the reference: one per round


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_batches_ask_distinct_trials_with_the_earlier_ones_running(sampler):
    search = _search(sampler, trials=7, batch=3)
    cands: list[dict[str, Any]] = []
    rounds: list[list[int]] = []
    assert _drive(search, cands, rounds=rounds)
    assert rounds[1:] == [[0, 1, 2], [3, 4, 5], [6]]  # the last batch capped by `trials`
    trials = _trials(cands)
    assert [n for n, _, _ in trials] == list(range(7))  # every trial recorded once
    assert len({h for _, h, _ in trials}) == 7  # a batch's trials (and all others) distinct
    assert {c["origin"] for c in cands if c["generation"] is not None} == {sampler}

    # trial 5 is asked with trials 0..2 finished and 3, 4 running, their params as asked
    study = search.optuna_study(5)
    states = [t.state.name for t in study.trials]
    assert states[-2:] == ["RUNNING", "RUNNING"]
    assert set(states[:-2]) <= {"COMPLETE", "FAIL"} and len(states) <= 5
    params = {c["generation"]: c["info"]["tpe"]["params"] for c in cands
              if c["generation"] is not None}
    assert [t.params for t in study.trials[-2:]] == [params[3], params[4]]
    assert search.optuna_study(3).trials[-1].state.name != "RUNNING"  # a batch's first

    again: list[dict[str, Any]] = []  # the same seed and batch: the same trials
    assert _drive(_search(sampler, trials=7, batch=3), again)
    assert _trials(again) == trials
    sequential: list[dict[str, Any]] = []
    assert _drive(_search(sampler, trials=7, batch=1), sequential)
    # random draws ignore the history: batched, they are the sequential ones (the baseline
    # stays comparable); TPE's depend on which results it had when it asked
    same = [t[1] for t in _trials(sequential)] == [t[1] for t in trials]
    assert same == (sampler == "random")


def _kill_at(what: str, generation: int) -> Kill:
    """Kill right after `what` ("recorded" / "done") happened to trial `generation`."""
    def kill(event: str, c: dict[str, Any]) -> bool:
        return event == what and c["generation"] == generation
    return kill


@pytest.mark.parametrize("sampler,search", [("tpe", "joint"), ("tpe", "calibration"),
                                            ("random", "joint")])
@pytest.mark.parametrize("what,generation,reverse", [
    ("recorded", 2, False),  # batch 1 half recorded: trial 3 not yet
    ("recorded", 3, False),  # batch 1 recorded, nothing evaluated
    ("done", 2, False),      # the first trial of batch 1 measured, trial 3 pending
    ("done", 3, True),       # results out of order: trial 3 measured, 2 pending
    ("done", -1, False),     # the last trial (its batch capped at one trial) measured
])
def test_a_kill_anywhere_in_a_batch_resumes_to_the_uninterrupted_records(
        sampler, search, what, generation, reverse):
    trials = 9 if search == "joint" else 13  # calibration: proposals redrawn
    generation = generation % trials
    kill = _kill_at(what, generation)
    reference: list[dict[str, Any]] = []
    assert _drive(_search(sampler, search, trials, batch=2), reference)

    cands: list[dict[str, Any]] = []
    assert not _drive(_search(sampler, search, trials, batch=2), cands, kill=kill,
                      reverse=reverse)
    rounds: list[list[int]] = []
    assert _drive(_search(sampler, search, trials, batch=2), cands, reverse=reverse,
                  rounds=rounds)  # a fresh proposer: its state rebuilt from the records
    assert _trials(cands) == _trials(reference)
    assert len(cands) == len(reference)  # no duplicate, nothing asked twice
    # the resumed run's first round is the killed batch: only what it had not finished
    killed = generation // 2
    unfinished = [n for n in range(2 * killed, min(2 * killed + 2, trials))
                  if not (what == "done" and n == generation)
                  and not (what == "done" and not reverse and n < generation)]
    assert (rounds[0] if rounds else []) == unfinished


def test_a_batch_none_is_one_in_the_proposer_and_the_description_names_the_batch():
    assert _search(batch=None).batch == 1
    notes = _search(batch=2).restore([], {**DESCRIPTION, "search_split": {"n": 2,
                                                                          "seqlen": 32}})
    assert "9 trials in batches of 2 (constant liar) over sample_0" in notes[1].message
    notes = _search("random", batch=2).restore([], DESCRIPTION)
    assert "in batches of 2 over" in notes[1].message
    notes = _search(batch=1).restore([], DESCRIPTION)
    assert "batches" not in notes[1].message and "9 trials over" in notes[1].message


@pytest.mark.parametrize("kill", [None, ("recorded", 4), ("done", 4)])
def test_a_sampler_out_of_new_specs_ends_the_search_in_the_middle_of_a_batch(kill):
    """Two windows of a pool of three: six distinct specs. The random sampler runs out of new
    ones while asking trial 6, the third of batch [4, 8): the batch ends there, the search
    after it, and a study killed in that batch ends the same."""
    def search() -> TpeSearch:
        settings = TpeSection(sampler="random", search="calibration", trials=9, batch=4,
                              samples=2, baselines=[])
        found = TpeSearch(settings, seed=5, pool=3)
        end_round = found.end_round
        found.end_round = lambda rnd, items: notes.extend(end_round(rnd, items)) or []
        return found

    notes: list[Any] = []
    cands: list[dict[str, Any]] = []
    rounds: list[list[int]] = []
    if kill is not None:
        assert not _drive(search(), cands, kill=_kill_at(*kill))
    assert _drive(search(), cands, rounds=rounds)
    assert [n for n, _, _ in _trials(cands)] == list(range(6))
    assert {status for _, _, status in _trials(cands)} == {"done"}
    assert rounds[-1] == {None: [4, 5], "recorded": [4, 5], "done": [5]}[kill and kill[0]]
    assert [n.message for n in notes if n.level == "warning"] == [
        "the random sampler proposed only recorded candidates 20 times: the search ends "
        "after 6 trials"]
