"""A noise-aware search fitness (issue 18, part 3): every perplexity records its standard error;
successive halving re-measures the top of each generation at a higher fidelity before it can
rank as an elite; comparisons within the noise are ties; a killed study resumes without losing
or repeating a re-measurement; `noise_aware = false` is the paper's search, unchanged.

Every figure is checked against an independent computation (per-window losses from a
per-position log-softmax loop, `statistics.stdev`, orders computed here from the records)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from engine_testlib import make_lm, random_ids, ref_token_nll
from parallel_testlib import study_records
from prunestudio.engine.data.windows import Windows, WindowSpec, tokenize_text
from prunestudio.engine.evaluate import perplexity as ppl_module
from prunestudio.engine.evaluate.perplexity import paired_log_se, perplexity
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study, prepare, start_study
from prunestudio.engine.search.noise import Measured, Ranking, diff_se, rank, within_noise
from prunestudio.engine.search.state import Individual, SearchHistory
from prunestudio.engine.study.executor import InProcessExecutor
from prunestudio.engine.study.loop import run_study
from prunestudio.engine.study.measurements.fitness import cut_search_split
from prunestudio.engine.study.proposers import make_proposer
from prunestudio.engine.study.proposers.gp import GPSearch
from prunestudio.engine.symbolic import canonical_key, parse, rank_key
from prunestudio.store import open_store

from prunestudio.schema.study_file import ConfigError, SearchSection, parse_config

FULL = "search_full"

# The paper's search (noise_aware = false) on the tiny LLaMA, seed 2, as the code before the
# noise-aware search recorded it: (generation, origin, expression, parents as indices, status).
PAPER_RUN = [
    (None, "baseline", "wanda", [], "done"),
    (0, "seed", "mul(W,sqrt(X))", [], "skipped"),
    (0, "init", "add(X,mul(W,X))", [], "done"),
    (0, "init", "abs(sub(X,W))", [], "done"),
    (0, "init", "div(mul(G,exp(X)),norm1(add(G,W)))", [], "done"),
    (0, "init", "mul(exp(sub(W,W)),sub(div(G,W),zsn(G)))", [], "done"),
    (0, "init", "sqrt(sub(add(mms(X),zsn(G)),mul(G,exp(G))))", [], "done"),
    (1, "crossover", "sqrt(sub(add(mms(X),zsn(G)),mul(G,exp(X))))", [6, 4], "done"),
    (1, "crossover", "div(mul(G,exp(G)),norm1(add(G,W)))", [6, 4], "done"),
    (2, "crossover", "sqrt(mul(G,exp(X)))", [6, 4], "done"),
    (2, "mutation", "div(sub(add(mms(X),zsn(W)),mul(G,exp(G))),norm1(add(G,W)))", [6, 4], "done"),
    (3, "crossover", "add(mms(X),zsn(G))", [4, 6], "done"),
    (3, "mutation", "sqrt(sub(div(mul(G,exp(X)),norm1(add(W,W))),mul(G,exp(G))))", [4, 6], "done"),
    (4, "mutation", "sqrt(sub(div(mul(G,exp(G)),norm1(add(G,W))),mul(G,exp(G))))", [6, 4], "done"),
    (4, "mutation", "add(mms(W),zsn(G))", [6, 4], "done"),
]


# ---------------------------------------------------------------- helpers


def _data(model_dir, seed: int = 2, **search) -> dict:
    settings = {"population": 6, "iterations": 4, "offspring": 2, "top_k": 4, "budget": 14,
                "seed_metrics": ["wanda"], "baselines": ["wanda"],
                "split": {"source": "pydoc", "seqlen": 32, "n": 2, "offset": 10000},
                "finalists": 0, **search}
    return {
        "study": {"kind": "gp", "seed": seed},
        "model": {"source": str(model_dir)},
        "calibration": {"source": "pydoc", "seqlen": 32, "n": 4},
        "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "seqlen": 64,
                                                         "n": 2, "offset": 20000}}],
        "search": settings,
    }


def _read(db, sid):
    with open_store(db, readonly=True) as store:
        cands = store.candidates(sid, with_metrics=True)
        events = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE study_id = ? ORDER BY id", [sid])]
    return cands, events


def _launch(tmp_path, llama, name, **search):
    sid, status = launch_study(parse_config(_data(llama.source, **search)),
                               tmp_path / name, lm=llama)
    assert status == "finished"
    return _read(tmp_path / name, sid)


def _ppl(c, role):
    return next((m for m in c["metrics"] if m["name"] == "ppl" and m["role"] == role), None)


def _search(cands):
    return [c for c in cands if c["origin"] != "baseline"]


def _distinct(cands):
    """Search candidates with a fitness, one per pruned model (the earliest), in record order."""
    seen, out = set(), []
    for c in sorted(_search(cands), key=lambda c: c["idx"]):
        if _ppl(c, "search") is None or c["status"] not in ("done", "skipped"):
            continue
        ident = c["info"].get("mask_hash") or c["id"]
        if ident not in seen:
            seen.add(ident)
            out.append(c)
    return out


def _windows(ids: torch.Tensor, key: str = "k") -> Windows:
    n, seqlen = ids.shape
    spec = WindowSpec(source="pydoc", seqlen=seqlen, n=n)
    spans = tuple((i * seqlen, (i + 1) * seqlen) for i in range(n))
    return Windows(spec, ids, spans, text_hash="t", tokens_hash=key)


def _ref_window_means(model, ids) -> list[float]:
    """Mean token loss of each window, by the slow per-position loop."""
    out = []
    for i in range(ids.shape[0]):
        total, count = ref_token_nll(model, ids[i : i + 1])
        out.append(total / count)
    return out


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


# ---------------------------------------------------------------- standard errors


def test_every_perplexity_records_its_standard_error():
    lm = make_lm("llama", seed=8)
    ids = random_ids(5, 12, seed=8)
    res = perplexity(lm.model, _windows(ids), lm.device, batch_size=2)
    means = _ref_window_means(lm.model, ids)
    se = statistics.stdev(means) / math.sqrt(5)  # sample sd (n − 1), over √n
    assert res.log_ppl_se == pytest.approx(se, rel=1e-5)
    assert res.ppl_se == pytest.approx(res.ppl * se, rel=1e-5)  # delta method
    assert math.log(res.ppl) == pytest.approx(statistics.fmean(means), rel=1e-6)
    p = res.metric(fidelity="full", role="in_domain", windows=_windows(ids))["protocol"]
    assert p["n_windows"] == 5 and p["log_ppl_se"] == res.log_ppl_se
    assert p["ppl_se"] == res.ppl_se
    assert p["window_mean_nll"] == pytest.approx(means, rel=1e-6)
    # one window: no spread to estimate; a long set keeps the SE but not every window
    one = perplexity(lm.model, _windows(ids[:1]), lm.device)
    assert one.log_ppl_se is None and one.ppl_se is None
    ppl_module.MAX_WINDOWS_RECORDED, saved = 4, ppl_module.MAX_WINDOWS_RECORDED
    try:
        p = res.metric(fidelity="full", role="in_domain", windows=_windows(ids))["protocol"]
    finally:
        ppl_module.MAX_WINDOWS_RECORDED = saved
    assert "window_mean_nll" not in p and p["log_ppl_se"] == res.log_ppl_se


def test_paired_standard_error_of_two_models_on_the_same_windows():
    ids = random_ids(6, 10, seed=3)
    a, b = make_lm("llama", seed=1), make_lm("llama", seed=2)
    ma = perplexity(a.model, _windows(ids), a.device).metric(
        fidelity="proxy", role="search", windows=_windows(ids))
    mb = perplexity(b.model, _windows(ids), b.device).metric(
        fidelity="proxy", role="search", windows=_windows(ids))
    ra, rb = _ref_window_means(a.model, ids), _ref_window_means(b.model, ids)
    paired = statistics.stdev([x - y for x, y in zip(ra, rb, strict=True)]) / math.sqrt(6)
    se, is_paired = diff_se(Measured.of(ma), Measured.of(mb))
    assert is_paired and se == pytest.approx(paired, rel=1e-5)
    assert paired_log_se(ra, rb) == pytest.approx(paired, rel=1e-12)
    # other windows: the figures' own errors, combined as independent
    other = {**mb, "protocol": {**mb["protocol"], "tokens_hash": "elsewhere"}}
    se, is_paired = diff_se(Measured.of(ma), Measured.of(other))
    assert not is_paired
    assert se == pytest.approx(math.hypot(statistics.stdev(ra), statistics.stdev(rb))
                               / math.sqrt(6), rel=1e-5)


def test_within_noise_is_k_standard_errors_of_the_difference():
    base = Measured(100.0, windows=(1.0, 1.2, 0.8, 1.0), key="w")
    # per-window differences 0.01 ± 0.002: SE of the mean difference = stdev / 2
    near = Measured(100.0 * math.exp(0.01), windows=(1.012, 1.208, 0.81, 1.01), key="w")
    d = [1.012 - 1.0, 1.208 - 1.2, 0.81 - 0.8, 1.01 - 1.0]
    se = statistics.stdev(d) / 2
    gap = math.log(near.value) - math.log(base.value)
    assert gap / se > 2, "a consistent per-window gain is beyond 2 SE"
    assert not within_noise(near, base, 2.0)
    assert within_noise(near, base, gap / se + 0.1)
    assert not within_noise(near, base, 0.0), "k = 0: exact comparisons"
    unpaired = Measured(near.value, log_se=0.1)
    assert within_noise(unpaired, Measured(100.0, log_se=0.1), 2.0)
    assert not within_noise(unpaired, Measured(100.0), 2.0), "no SE: never tied"


# ---------------------------------------------------------------- ranking and selection


def _ind(i, expression, proxy, full=None, mask=None):
    tree = parse(expression)
    return Individual(id=100 + i, idx=i, method="symbolic", expression=expression,
                      generation=0, origin="init", parents=(), status="done",
                      fitness=proxy.value, mask_hash=mask or f"h{i}", equivalent_to=None,
                      key=canonical_key(tree), rank=rank_key(tree), proxy=proxy, full=full)


def _m(value, spread, key="w"):
    """A figure whose per-window losses are log(value) ± spread over four windows."""
    c = math.log(value)
    return Measured(value, windows=(c - spread, c + spread, c - spread, c + spread), key=key)


def test_ranking_ties_go_to_the_simpler_metric_and_remeasured_metrics_come_first():
    big = _ind(0, "mul(mms(add(W,G)),sqrt(X))", _m(30.0, 0.0))
    small = _ind(1, "mul(W,sqrt(X))", _m(30.1, 0.05))  # noisy rival: tied with big
    clear = _ind(2, "W", _m(36.0, 0.0))  # far worse: not tied with anything above
    pop = [big, small, clear]
    exact = rank(pop, Ranking(0.0, True))
    assert [i.id for i in exact.order] == [100, 101, 102] and exact.ties == exact.moved == 0
    noisy = rank(pop, Ranking(2.0, True))
    assert [i.id for i in noisy.order] == [101, 100, 102]
    assert (noisy.ties, noisy.moved) == (1, 1)
    # a re-measured metric ranks before every metric measured on the proxy only, however
    # good their proxy figures; among re-measured ones the higher-fidelity figure decides
    late = _ind(3, "sqrt(X)", _m(50.0, 0.0), full=_m(31.0, 0.0, key="f"))
    later = _ind(4, "sqrt(G)", _m(20.0, 0.0), full=_m(32.0, 0.0, key="f"))
    order = rank(pop + [later, late], Ranking(2.0, True)).order
    assert [i.id for i in order] == [103, 104, 101, 100, 102]
    assert [i.id for i in rank(pop + [late], Ranking(2.0, False)).order][-1] == 103
    # SearchHistory orders its population the same way; without a ranking: the paper's order
    history = SearchHistory(pop + [late])
    assert [i.id for i in history.population(ranking=Ranking(2.0, True))] == [103, 101, 100,
                                                                              102]
    assert [i.id for i in history.population()] == [100, 101, 102, 103]


def _naive_rank(members, k, fidelity_first):
    """The ranking rule written plainly: rungs, then repeatedly the best left and everything
    tied with it (k SEs of the paired difference), the simplest of those first."""
    def fig(i):
        return i.full if fidelity_first and i.full is not None else i.proxy

    out = []
    for rung in (1, 0):
        left = [i for i in members if (fidelity_first and i.full is not None) == (rung == 1)]
        while left:
            best = min(left, key=lambda i: (fig(i).value, i.idx))
            tied = [i for i in left if i is best or k > 0 and abs(
                math.log(fig(i).value) - math.log(fig(best).value)) < k * statistics.stdev(
                [x - y for x, y in zip(fig(i).windows, fig(best).windows, strict=True)])
                / math.sqrt(len(fig(i).windows))]
            pick = min(tied, key=lambda i: (i.size, fig(i).value, i.idx))
            out.append(pick.id)
            left.remove(pick)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_ranking_equals_the_plain_rule_on_random_populations(seed):
    import random

    rng = random.Random(seed)
    exprs = ["W", "X", "G", "sqrt(X)", "mul(W,X)", "mul(W,sqrt(X))", "add(W,mul(G,X))",
             "mul(sqr(W),mms(G))", "div(W,add(X,G))", "tanh(mul(W,add(X,G)))"]
    members = []
    for i in range(40):
        base, spread = rng.gauss(3.4, 0.02), rng.choice([0.001, 0.01, 0.05])
        proxy = [base + rng.gauss(0, spread) for _ in range(4)]
        m = Measured(math.exp(statistics.fmean(proxy)), windows=tuple(proxy), key="p")
        full = None
        if rng.random() < 0.3:
            more = proxy + [base + rng.gauss(0, spread) for _ in range(12)]
            full = Measured(math.exp(statistics.fmean(more)), windows=tuple(more), key="f")
        members.append(_ind(i, exprs[i % len(exprs)], m, full=full))
    for k in (0.0, 1.0, 2.0):
        for first in (True, False):
            got = [i.id for i in rank(members, Ranking(k, first)).order]
            assert got == _naive_rank(members, k, first), (k, first)
            assert [i.id for i in rank(members, Ranking(k, first), size=7).order] == got[:7]


def test_gp_tournaments_pick_the_first_of_the_drawn_in_the_noise_aware_order():
    # ten metrics; the re-measured ones (a worse proxy) must still win their tournaments
    exprs = ["W", "X", "G", "sqrt(X)", "sqrt(G)", "mul(W,X)", "mul(W,G)", "add(W,X)",
             "add(W,G)", "mul(G,X)"]
    inds = []
    for i, e in enumerate(exprs):
        full = _m(40.0 + i, 0.0, key="f") if i >= 7 else None
        inds.append(_ind(i, e, _m(20.0 + i, 0.0), full=full))
    history = SearchHistory(inds)
    settings = SearchSection(population=10, top_k=5, offspring=8, noise_k=0)
    gp = GPSearch(settings, 4)
    props = gp.proposals(history, 1)

    def key(i):  # the order computed here: re-measured first, then the figure, then the record
        return (i.full is None, (i.full or i.proxy).value, i.idx)

    pool = sorted(inds, key=key)[:5]
    assert {i.id for i in pool} >= {107, 108, 109}
    by_id = {i.id: i for i in inds}
    assert props and gp.last_tournaments[0] >= len(props) // 2
    for p in props:
        for t in gp.selection[p.expression]:
            drawn = [by_id[d] for d in t["drawn"]]
            assert set(t["drawn"]) <= {i.id for i in pool}
            assert t["winner"] == min(drawn, key=key).id
            assert t["within_noise"] is False  # k = 0
        assert set(p.parents) <= {i.id for i in pool}
    paper = GPSearch(settings.model_copy(update={"noise_aware": False}), 4).proposals(history, 1)
    assert [p.parents for p in paper] != [p.parents for p in props], (
        "the paper's order (proxy only) picks other parents here")


def _cand(cid, spec, metrics, mask, origin="init", generation=0, status="done"):
    return {"id": cid, "idx": cid, "spec": spec, "origin": origin, "generation": generation,
            "parents": None, "status": status, "info": {"mask_hash": mask}, "metrics": metrics}


def _fitness(value_windows, role="search", key="p"):
    windows = list(value_windows)
    return {"name": "ppl", "role": role, "value": math.exp(statistics.fmean(windows)),
            "fidelity": "proxy" if role == "search" else "full", "n_samples": len(windows),
            "protocol": {"tokens_hash": key, "window_mean_nll": windows,
                         "log_ppl_se": (statistics.stdev(windows) / math.sqrt(len(windows))
                                        if len(windows) > 1 else None)}}


def test_the_verdict_against_a_baseline():
    settings = SearchSection(baselines=["wanda"])
    gp = GPSearch(settings, 0)
    wanda = settings.baseline_spec("wanda").canonical()
    metric = settings.candidate_spec("mul(W,X)").canonical()
    base = [3.50, 3.40, 3.60, 3.30]
    gp.tell(_cand(1, wanda, [_fitness(base)], "b", origin="baseline", generation=None))
    better = [x - d for x, d in zip(base, (0.030, 0.034, 0.026, 0.030), strict=True)]
    gp.tell(_cand(2, metric, [_fitness(better)], "m"))
    (line,) = gp.against_baselines(gp.history.get(2))
    d = [x - y for x, y in zip(better, base, strict=True)]
    se, z = statistics.stdev(d) / 2, statistics.fmean(d) / (statistics.stdev(d) / 2)
    assert z < -2
    assert (f"vs wanda 50% dense-calib {math.exp(statistics.fmean(base)):.3f} ± "
            f"{math.exp(statistics.fmean(base)) * statistics.stdev(base) / 2:.3f}: "
            f"{math.exp(statistics.fmean(d)) - 1:+.2%} ± {se:.2%} (paired over 4 windows, "
            f"z = {z:+.1f}): better beyond the noise (k = 2)") == line
    noisy = [x - d for x, d in zip(base, (0.3, -0.3, 0.25, -0.2), strict=True)]
    gp.tell(_cand(3, metric, [_fitness(noisy)], "n"))
    assert gp.against_baselines(gp.history.get(3))[0].endswith(
        "within the noise: not distinguishable (k = 2)")
    gp.tell(_cand(4, metric, [_fitness(base)], "b"))  # the baseline's own masks
    assert gp.against_baselines(gp.history.get(4)) == [
        "vs wanda 50% dense-calib: the same pruned model (identical masks)"]
    # the higher fidelity where both have it
    gp.tell(_cand(1, wanda, [_fitness(base), _fitness(base * 2, FULL, "f")], "b",
                  origin="baseline", generation=None))
    gp.tell(_cand(2, metric, [_fitness(better), _fitness(better + base, FULL, "f")], "m"))
    assert "(paired over 8 windows, z = " in gp.against_baselines(gp.history.get(2))[0]


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_errors():
    s = SearchSection()
    assert (s.noise_aware, s.noise_k, s.halving.top, s.halving.windows) == (True, 2.0, 3, None)
    assert s.full_windows == 4 * s.split.n == 16
    assert SearchSection(noise_aware=False).full_windows is None
    assert SearchSection(halving={"top": 0}).full_windows is None
    assert SearchSection(halving={"top": 2, "windows": 9}).full_windows == 9
    base = {"study": {"kind": "gp"}, "calibration": {"source": "pydoc", "seqlen": 32, "n": 4},
            "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "seqlen": 64,
                                                             "n": 4, "offset": 40000}}]}
    for search, fragment in (
        ({"halving": {"top": 2, "windows": 4}}, "halving.windows (4) must exceed split.n (4)"),
        ({"halving": {"top": 2, "window": 8}}, "search.halving.window: unknown key"),
        ({"split": {"source": "pydoc", "offset": 20000}}, "give split.n"),
        ({"noise_k": -1}, "search.noise_k"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "search": search})
        assert fragment in str(info.value), str(info.value)
    # the paper's search needs no n; the predictor's and TPE's derived sections never halve
    assert parse_config({**base, "search": {"noise_aware": False, "split": {
        "source": "pydoc", "offset": 20000}}}).search.full_windows is None
    predictor = parse_config({**base, "study": {"kind": "predictor"}})
    assert predictor.search.noise_aware is False and predictor.search.full_windows is None


def test_the_extended_split_is_checked_against_held_out_text(tmp_path, llama):
    def config(offset, **search):
        data = _data(llama.source, split={"source": "pydoc", "seqlen": 64, "n": 2,
                                          "offset": offset})
        return parse_config({**data, "search": {**data["search"], **search}})

    # the proxy [19800, 19928) is clear of the held-out [20000, 20128); its 4 × extension is not
    paper = config(19800, noise_aware=False)
    assert cut_search_split(paper, prepare(paper, lm=llama)).windows.spans[-1] == (19864, 19928)
    with pytest.raises(ValueError, match="search.split overlaps the evaluation set 'in_domain' "
                                         r"\(the split extended to halving.windows = 8\)"):
        launch_study(config(19800), tmp_path / "s.db", lm=llama)
    # the last 2 windows of the text fit; 8 do not
    end = len(tokenize_text("pydoc", "all", llama.tokenizer))
    last = config(end - 128, noise_aware=False)
    assert cut_search_split(last, prepare(last, lm=llama)).windows.n == 2
    with pytest.raises(ValueError, match="search.split extended to halving.windows = 8: .* "
                                         "lower halving.windows or move the split"):
        launch_study(config(end - 128), tmp_path / "t.db", lm=llama)


# ---------------------------------------------------------------- successive halving


@pytest.fixture(scope="module")
def exact_run(tmp_path_factory, llama):
    """Noise-aware GP with exact comparisons (noise_k = 0: orders checkable by sorting), the
    top 2 of each generation re-measured on 6 windows, 2 finalists (seed 5: children enter
    the top in three later generations)."""
    return _launch(tmp_path_factory.mktemp("exact"), llama, "s.db", seed=5, noise_k=0,
                   halving={"top": 2, "windows": 6}, finalists=2)


def test_halving_remeasures_exactly_the_top_of_each_generation(exact_run):
    cands, events = exact_run
    by_id = {c["id"]: c for c in cands}
    generations = sorted({c["generation"] for c in _search(cands)})
    expected: dict[int, tuple[int, int]] = {}  # candidate -> (generation promoted, proxy rank)
    for g in generations:
        upto = [c for c in _distinct(cands) if c["generation"] <= g]
        top = sorted(upto, key=lambda c: (_ppl(c, "search")["value"], c["idx"]))[:2]
        for r, c in enumerate(top, 1):
            expected.setdefault(c["id"], (g, r))
    got = {c["id"]: (_ppl(c, FULL)["protocol"]["after_generation"],
                     _ppl(c, FULL)["protocol"]["proxy_rank"])
           for c in _search(cands) if _ppl(c, FULL)}
    assert got == expected
    assert len(got) > 2, "later generations promoted some"
    for cid in got:
        c = by_id[cid]
        proxy, full = _ppl(c, "search"), _ppl(c, FULL)
        assert (full["fidelity"], full["n_samples"], full["dataset"], full["seqlen"]) == (
            "full", 6, "pydoc", 32)
        assert full["protocol"]["offset"] == proxy["protocol"]["offset"] == 10000
        assert full["protocol"]["stage"] == "halving"
        wf, wp = full["protocol"]["window_mean_nll"], proxy["protocol"]["window_mean_nll"]
        # the proxy's windows are the first of the higher fidelity's, measured alike
        assert len(wf) == 6 and wf[:2] == wp
        assert full["value"] == pytest.approx(math.exp(statistics.fmean(wf)), rel=1e-9)
        assert full["protocol"]["log_ppl_se"] == pytest.approx(
            statistics.stdev(wf) / math.sqrt(6), rel=1e-9)
        if c["status"] == "skipped":  # a reused fitness: the re-measured figure is reused too
            assert full["protocol"]["reused_from"] == c["info"]["equivalent_to"]
    assert sum(e.startswith("halving after generation ") for e in events) == len(got)


def test_elites_are_ranked_by_the_higher_fidelity(exact_run):
    cands, _ = exact_run

    def key(c):  # re-measured first (as it was when the generation was proposed), then value
        full = _ppl(c, FULL)
        return (full is None, (full or _ppl(c, "search"))["value"], c["idx"])

    checked = disagree = 0
    for child in _search(cands):
        tournaments = child["info"].get("tournaments")
        if child["generation"] == 0:
            assert tournaments is None
            continue
        g = child["generation"]
        # re-measurements promoted after generation g − 1 at the latest were known then
        pool = [c for c in _distinct(cands) if c["generation"] < g]
        known = {c["id"]: c for c in pool}
        for c in pool:
            if _ppl(c, FULL) and _ppl(c, FULL)["protocol"]["after_generation"] >= g:
                known[c["id"]] = {**c, "metrics": [m for m in c["metrics"]
                                                   if m["role"] != FULL]}
        top = sorted(known.values(), key=key)[:4]
        assert [t["winner"] for t in tournaments] == child["parents"]
        for t in tournaments:
            drawn = [known[d] for d in t["drawn"]]
            assert set(t["drawn"]) <= {c["id"] for c in top}
            assert t["winner"] == min(drawn, key=key)["id"]
            proxy_best = min(drawn, key=lambda c: (_ppl(c, "search")["value"], c["idx"]))
            disagree += proxy_best["id"] != t["winner"]
            checked += 1
    assert checked >= 8
    assert disagree > 0, "some tournament went to a re-measured metric over a better proxy"
    # the finalists: the best re-measured metrics by their higher-fidelity figure
    finalists = sorted((c for c in cands if any(m["protocol"].get("stage") == "finalist"
                                                for m in c["metrics"])),
                       key=lambda c: next(m["protocol"]["finalist_rank"] for m in c["metrics"]
                                          if m["protocol"].get("stage") == "finalist"))
    best = sorted((c for c in _distinct(cands) if _ppl(c, FULL)), key=key)[:2]
    assert [c["id"] for c in finalists] == [c["id"] for c in best]


# ---------------------------------------------------------------- the paper's search


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, llama):
    return _launch(tmp_path_factory.mktemp("paper"), llama, "s.db", noise_aware=False)


def test_the_paper_switch_gives_the_old_proposals_and_no_remeasurement(paper_run, llama):
    cands, events = paper_run
    idx = {c["id"]: c["idx"] for c in cands}
    got = [(c["generation"], c["origin"],
            c["spec"]["options"]["expression"] if c["spec"]["method"] == "symbolic"
            else c["spec"]["method"], [idx[p] for p in c["parents"] or []], c["status"])
           for c in cands]
    assert got == PAPER_RUN
    assert not any(m["role"] == FULL for c in cands for m in c["metrics"])
    assert not any("halving" in e or "within the noise (k" in e for e in events)
    assert not any("tournaments" in (c["info"] or {}) for c in cands)
    # each generation is the pure proposal function of the records of the earlier ones
    config = parse_config(_data(llama.source, noise_aware=False))
    gp = GPSearch(config.search, 2)
    history = SearchHistory.from_candidates(cands)
    for g in range(1, 5):
        recorded = [(c["spec"]["options"]["expression"], c["origin"], tuple(c["parents"]))
                    for c in cands if c["generation"] == g]
        assert [(p.expression, p.origin, p.parents) for p in gp.proposals(history, g)] == recorded


def test_a_baseline_measures_both_fidelities_in_one_forward(paper_run, exact_run):
    (paper_base,) = [c for c in paper_run[0] if c["origin"] == "baseline"]
    (base,) = [c for c in exact_run[0] if c["origin"] == "baseline"]
    # the proxy figure is the proxy-only measurement's, to the last bit
    assert _ppl(base, "search")["value"] == _ppl(paper_base, "search")["value"]
    assert _ppl(base, "search")["n_samples"] == 2 and _ppl(base, FULL)["n_samples"] == 6
    assert _ppl(paper_base, FULL) is None
    held = _ppl(base, "in_domain")["protocol"]  # the evaluation sets carry their SE too
    assert held["n_windows"] == 2 and held["log_ppl_se"] == pytest.approx(
        statistics.stdev(held["window_mean_nll"]) / math.sqrt(2), rel=1e-9)


# ---------------------------------------------------------------- events and resume


class Killed(BaseException):
    """A kill -9 in the middle of a job: nothing after it is recorded."""


class Recorder:
    """Runs jobs in this process and logs them: (candidate id, 'remeasure' or 'evaluate');
    with `kill_at`, that job never returns."""

    def __init__(self, inner: InProcessExecutor, kill_at: int | None = None) -> None:
        self.inner, self.kill_at, self.slots = inner, kill_at, 1
        self.jobs: list[tuple[int, str]] = []
        self.completed: list[tuple[int, str]] = []
        self.queued = None

    def setup(self, warm=()):
        return self.inner.setup(warm)

    def workers(self):
        return self.inner.workers()

    def idle_worker(self):
        return self.inner.idle_worker()

    def submit(self, job):
        kind = "remeasure" if any((m.get("settings") or {}).get("fidelity") == "full"
                                  for m in job.measurements) else "evaluate"
        self.jobs.append((job.candidate_id, kind))
        if self.kill_at is not None and len(self.jobs) == self.kill_at:
            raise Killed
        self.queued = (kind, job.candidate_id)
        return self.inner.submit(job)

    def wait(self, timeout=None):
        done = self.inner.wait(timeout)
        if done:
            self.completed.append(self.queued)
        return done

    def close(self):
        self.inner.close()


def _run(db, config, llama, kill_at=None, sid=None):
    with open_store(db) as store:
        resumed = sid is not None
        sid = sid if resumed else start_study(store, config)
        executor = Recorder(InProcessExecutor(config, ctx=prepare(config, lm=llama)), kill_at)
        try:
            run_study(store, sid, make_proposer(config), executor, resumed=resumed)
        except Killed:
            pass
    return sid, executor


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, llama):
    """The default noise-aware GP (k = 2), halving top 2 on 6 windows, run uninterrupted."""
    config = parse_config(_data(llama.source, seed=5, halving={"top": 2, "windows": 6},
                                finalists=1))
    db = tmp_path_factory.mktemp("noisy") / "s.db"
    sid, executor = _run(db, config, llama)
    return config, db, sid, executor


def test_events_show_the_noise_and_the_verdict_against_wanda(noisy):
    _, db, sid, _ = noisy
    cands, events = _read(db, sid)
    generation_notes = [e for e in events if e.startswith("generation ")]
    assert len(generation_notes) == 5
    for e in generation_notes:
        assert "within the noise (k = 2): " in e and "elite places" in e
        assert "re-measured on 6 windows (top 2 by proxy)" in e
    assert all(" tournaments" in e for e in generation_notes[1:])
    (finish,) = [e for e in events if e.startswith("search finished:")]
    (finalist,) = [c for c in cands if any(m["protocol"].get("stage") == "finalist"
                                           for m in c["metrics"])]
    (base,) = [c for c in cands if c["origin"] == "baseline"]
    expr = finalist["spec"]["options"]["expression"]
    best, ref = _ppl(finalist, FULL), _ppl(base, FULL)
    assert best is not None, "the best metric was re-measured"
    a, b = best["protocol"]["window_mean_nll"], ref["protocol"]["window_mean_nll"]
    d = [x - y for x, y in zip(a, b, strict=True)]
    ratio = math.exp(statistics.fmean(a) - statistics.fmean(b)) - 1
    se = statistics.stdev(d) / math.sqrt(len(d))
    z = (statistics.fmean(a) - statistics.fmean(b)) / se
    ppl_se = best["value"] * statistics.stdev(a) / math.sqrt(len(a))
    assert (f"best {expr} search PPL {best['value']:.3f} ± {ppl_se:.3f} (6 windows, "
            "re-measured)") in finish, finish
    verdict = ("within the noise: not distinguishable" if abs(z) < 2 else
               "better beyond the noise" if z < 0 else "worse beyond the noise")
    assert (f"vs wanda 50% dense-calib {ref['value']:.3f} ± "
            f"{ref['value'] * ref['protocol']['log_ppl_se']:.3f}: {ratio:+.2%} ± {se:.2%} "
            f"(paired over 6 windows, z = {z:+.1f}): {verdict} (k = 2)") in finish, finish
    # every child says how its parents were chosen, and whether within the noise
    for c in _search(cands):
        if c["generation"]:
            ts = c["info"]["tournaments"]
            assert [t["winner"] for t in ts] == c["parents"]
            assert all(isinstance(t["within_noise"], bool) and t["winner"] in t["drawn"]
                       for t in ts)


def _kill_points(jobs):
    """Job numbers (1-based) to kill at: the second re-measurement of the first halving round
    with two, and the second evaluation after the first halving round (mid-generation)."""
    remeasures = [i for i, (_, kind) in enumerate(jobs, 1) if kind == "remeasure"]
    mid_halving = next(i for i in remeasures if i - 1 in remeasures)
    mid_generation = next(i for i, (_, kind) in enumerate(jobs, 1)
                          if kind == "evaluate" and i > remeasures[0] + 1
                          and jobs[i - 2][1] == "evaluate")
    return {"mid-halving": mid_halving, "mid-generation": mid_generation}


@pytest.mark.parametrize("where", ["mid-halving", "mid-generation"])
def test_a_killed_study_resumes_without_losing_or_repeating_remeasurements(tmp_path, llama,
                                                                          noisy, where):
    config, ref_db, ref_sid, reference = noisy
    kill_at = _kill_points(reference.jobs)[where]
    db = tmp_path / "s.db"
    sid, first = _run(db, config, llama, kill_at=kill_at)
    assert len(first.jobs) == kill_at and first.jobs[-1] not in first.completed
    killed_kind = first.jobs[-1][1]
    assert killed_kind == ("remeasure" if where == "mid-halving" else "evaluate")
    with open_store(db, readonly=True) as store:
        had_full = {c["id"] for c in store.candidates(sid, with_metrics=True)
                    if _ppl(c, FULL)}
    _, second = _run(db, config, llama, sid=sid)
    # the same records as the uninterrupted run, every metric to the last digit
    assert study_records(db, sid) == study_records(ref_db, ref_sid)
    remeasured = [cid for cid, kind in first.completed + second.completed
                  if kind == "remeasure"]
    assert sorted(remeasured) == sorted(cid for cid, kind in reference.completed
                                        if kind == "remeasure"), "none lost, none twice"
    assert not had_full & {cid for cid, kind in second.jobs if kind == "remeasure"}
    if where == "mid-halving":
        assert first.jobs[-1] == second.jobs[0], "the interrupted re-measurement comes first"


def test_a_search_recorded_before_the_noise_aware_fitness_resumes_with_the_papers_rules():
    from prunestudio.engine.candidate_jobs import recorded_config

    from prunestudio.schema.study_file import parse_config

    fresh = parse_config({"study": {"name": "gp", "kind": "gp"},
                          "model": {"source": "default"},
                          "calibration": {"source": "pydoc", "seqlen": 32, "n": 4},
                          "evaluation": [{"role": "in_domain", "windows": {
                              "source": "pydoc", "seqlen": 64, "n": 2, "offset": 20000}}],
                          "search": {"population": 4, "iterations": 1}})
    recorded = fresh.to_dict()
    assert recorded["search"]["noise_aware"] is True  # what a study records today
    assert recorded_config({"name": "gp", "config": recorded}).search.noise_aware is True
    old = {**recorded, "search": {k: v for k, v in recorded["search"].items()
                                  if k not in ("noise_aware", "noise_k", "halving")}}
    assert recorded_config({"name": "gp", "config": old}).search.noise_aware is False
