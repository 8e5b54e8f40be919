"""The predictor's LightGBM fit: a stored model reloads and reproduces its predictions bit for
bit; R², Spearman ρ and Kendall τ match slow references; out-of-fold predictions come from
models that never saw the point; the fit is deterministic for a seed and works on tiny
training sets."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from prunestudio.engine.predictor.fit import (
    Fit,
    _fit_once,
    _params,
    _predict,
    fit_predictor,
    fit_ridge,
    folds,
    load_booster,
    r2_score,
    rank_correlations,
)


def _toy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 0.5, size=(n, 5))
    y = 2.0 + 3.0 * X[:, 0] ** 2 + X[:, 1] - 0.5 * X[:, 2] + rng.normal(0, 0.01, n)
    return X, y, [f"f{i}" for i in range(5)]


def _ranks(x: list[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5


def _kendall_b(a: list[float], b: list[float]) -> float:
    conc = disc = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif da * db > 0:
            conc += 1
        else:
            disc += 1
    return (conc - disc) / ((conc + disc + ties_a) * (conc + disc + ties_b)) ** 0.5


def test_fit_quality_matches_slow_references():
    X, y, names = _toy(24)
    fit = fit_predictor(X, y, names, target="log_ppl", kfold=4, seed=3)
    ys, oof = [float(v) for v in y], fit.oof
    mean = sum(ys) / len(ys)
    r2 = 1 - sum((a - b) ** 2 for a, b in zip(ys, oof, strict=True)) / sum(
        (a - mean) ** 2 for a in ys)
    assert fit.r2 == pytest.approx(r2, rel=1e-12)
    assert fit.spearman == pytest.approx(_pearson(_ranks(ys), _ranks(oof)), rel=1e-12)
    assert fit.kendall == pytest.approx(_kendall_b(ys, oof), rel=1e-12)
    assert fit.r2 > 0.5 and fit.spearman > 0.7  # a learnable toy function is learnt
    # ties in the predictions (small trees give equal leaves) are counted as τ-b counts them
    tied = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0]
    got = rank_correlations(np.arange(6.0), np.array(tied))
    assert got["kendall"] == pytest.approx(_kendall_b(list(range(6)), tied), rel=1e-12)
    assert rank_correlations(np.ones(4), np.arange(4.0)) == {"spearman": None, "kendall": None}
    assert r2_score(np.ones(3), np.zeros(3)) is None


def test_out_of_fold_predictions_come_from_models_that_never_saw_the_point():
    X, y, names = _toy(10, seed=1)
    fit = fit_predictor(X, y, names, target="t", kfold=3, seed=5, num_boost_round=30)
    params = _params(None, 5)
    for held in folds(10, 3, 5):
        train = np.setdiff1d(np.arange(10), held)
        linear, trees = _fit_once(X[train], y[train], names, params, 30, "ridge")
        assert np.array_equal(_predict(linear, trees, X[held]), np.asarray(fit.oof)[held])
        # the base and the trees both come from the fold's training points only
        assert linear.intercept == pytest.approx(float(y[train].mean()), rel=1e-12)
    assert sorted(fit.fold_sizes) == [3, 3, 4] and fit.n_train == 10


def test_a_stored_predictor_reloads_and_reproduces_its_predictions_exactly():
    X, y, names = _toy(12, seed=2)
    fit = fit_predictor(X, y, names, target="log_ppl", seed=7)
    stored = json.loads(json.dumps(fit.to_dict()))  # what the store keeps
    again = Fit.from_dict(stored)
    probe = np.random.default_rng(9).uniform(0, 0.5, size=(50, 5))
    assert np.array_equal(again.predict(probe), fit.predict(probe))
    assert np.array_equal(load_booster(stored["model"]).predict(X), fit.booster().predict(X))
    assert set(again.importance) == set(names) and again.importance == fit.importance
    assert again.base == fit.base and again.base["alpha"] in [float(a) for a in np.logspace(
        -3, 3, 13)]
    # prediction = the ridge base + the trees (LightGBM's own predict leaves the base out)
    assert np.allclose(again.predict(probe), again.linear().predict(probe)
                       + again.booster().predict(probe), rtol=0, atol=1e-12)
    for name in names:
        parts = again.importance_parts
        assert again.importance[name] == pytest.approx(parts["trees"][name]
                                                       + parts["linear"][name], rel=1e-12)
    trees_only = fit_predictor(X, y, names, target="log_ppl", seed=7, base="none")
    assert trees_only.base is None and "linear" not in trees_only.importance_parts
    assert np.array_equal(trees_only.predict(probe), trees_only.booster().predict(probe))
    with pytest.raises(ValueError, match="allowed: ridge, none"):
        fit_predictor(X, y, names, target="t", base="lasso")


def test_the_ridge_base_matches_a_slow_reference():
    rng = np.random.default_rng(11)
    X = rng.uniform(0, 0.5, size=(15, 6))
    X[:, 5] = 0.25  # a constant feature: scale 1, coefficient 0
    y = 1.0 + X @ np.array([2.0, -1.0, 0.5, 0.0, 3.0, 0.0]) + rng.normal(0, 0.05, 15)
    base = fit_ridge(X, y)
    mean, sd = X.mean(0), X.std(0)
    sd[sd == 0] = 1.0
    Z = (X - mean) / sd

    def solve(Zt, yt, alpha):  # normal equations, intercept unpenalised by centring
        zm, ym = Zt.mean(0), yt.mean()
        A = (Zt - zm).T @ (Zt - zm) + alpha * np.eye(Zt.shape[1])
        w = np.linalg.solve(A, (Zt - zm).T @ (yt - ym))
        return w, ym - zm @ w

    w, b = solve(Z, y, base.alpha)
    assert np.allclose(base.coef, w, atol=1e-10) and base.coef[5] == pytest.approx(0, abs=1e-12)
    assert base.intercept + 0 == pytest.approx(b, abs=1e-10)
    # leave-one-out error by 15 refits (standardisation fixed, as in the closed form)
    loo = {}
    for alpha in (0.01, base.alpha, 100.0):
        errs = []
        for i in range(15):
            keep = np.arange(15) != i
            wi, bi = solve(Z[keep], y[keep], alpha)
            errs.append((y[i] - Z[i] @ wi - bi) ** 2)
        loo[alpha] = float(np.mean(errs))
    assert base.loo_mse == pytest.approx(loo[base.alpha], rel=1e-9)
    assert all(base.loo_mse <= v + 1e-12 for v in loo.values())  # the grid's best alpha


def test_fits_are_deterministic_for_a_seed_and_work_on_tiny_sets():
    X, y, names = _toy(6, seed=4)  # six points: leaves of two, five folds of one or two
    a = fit_predictor(X, y, names, target="t", kfold=5, seed=1)
    b = fit_predictor(X, y, names, target="t", kfold=5, seed=1)
    assert a.model == b.model and a.oof == b.oof
    assert a.kfold == 5 and len(a.oof) == 6 and sum(a.importance.values()) > 0
    with pytest.raises(ValueError, match="at least 4"):
        fit_predictor(X[:3], y[:3], names, target="t")
