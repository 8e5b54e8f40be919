"""The accuracy predictor: a LightGBM regressor from architecture features to a measured
objective (log search-split PPL, task accuracy), validated by k-fold cross-validation.

`fit_predictor(X, y, names, ...)` returns a `Fit`: out-of-fold predictions for every training
point (each predicted by a model that never saw it), their R², Spearman ρ and Kendall τ
against the measurements, the gain importance of each feature of the model fitted on all
points, and that model as LightGBM's text format (`Booster.model_to_string`), which
`Fit.from_dict(...).predict(X)` reloads and reproduces exactly. Deterministic for a seed
(one thread, `deterministic = true`); the defaults suit training sets of a handful to a few
hundred architectures (leaves of two points, no feature pre-filtering).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: LightGBM parameters for small training sets (overridable per study)
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 8,
    "max_depth": -1,
    "min_data_in_leaf": 2,
    "min_data_in_bin": 1,
    "min_sum_hessian_in_leaf": 1e-6,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
}
DEFAULT_ROUNDS = 200
MIN_TRAIN = 4  # fewer measured architectures than this: no fit


def _params(params: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    return {**DEFAULT_PARAMS, **(params or {}), "seed": seed}


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def r2_score(y: np.ndarray, pred: np.ndarray) -> float | None:
    """1 − SS_res / SS_tot (None when the measurements are all equal)."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0.0:
        return None
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def rank_correlations(y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Spearman ρ and Kendall τ (τ-b, ties counted) of predictions against measurements."""
    from scipy import stats

    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(pred) == 0:
        return {"spearman": None, "kendall": None}
    return {"spearman": _finite(stats.spearmanr(y, pred).statistic),
            "kendall": _finite(stats.kendalltau(y, pred).statistic)}


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """Held-out index sets of a shuffled k-fold split (k ≤ n)."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, min(k, n))]


def _train(X: np.ndarray, y: np.ndarray, names: list[str], params: dict[str, Any],
           rounds: int):
    import lightgbm as lgb

    data = lgb.Dataset(X, label=y, feature_name=names, free_raw_data=False,
                       params={"feature_pre_filter": False, "min_data_in_bin": 1,
                               "max_bin": params.get("max_bin", 63), "verbosity": -1})
    return lgb.train(params, data, num_boost_round=rounds)


def load_booster(model: str):
    """A LightGBM booster from its text (`Booster.model_to_string`)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=model)


@dataclass
class Fit:
    """One fitted predictor: hyper-parameters, training size, fit quality on held-out folds,
    out-of-fold predictions, gain importances and the model text."""

    target: str
    feature_names: list[str]
    n_train: int
    params: dict[str, Any]
    num_boost_round: int
    kfold: int
    seed: int
    r2: float | None
    spearman: float | None
    kendall: float | None
    oof: list[float]  # out-of-fold prediction of each training point, in training order
    measured: list[float]
    importance: dict[str, float]  # gain, model fitted on every point
    model: str  # Booster.model_to_string()
    fold_sizes: list[int] = field(default_factory=list)
    _booster: Any = field(default=None, repr=False, compare=False)

    def booster(self):
        if self._booster is None:
            self._booster = load_booster(self.model)
        return self._booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster().predict(np.asarray(X, np.float64)), np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "target", "feature_names", "n_train", "params", "num_boost_round", "kfold", "seed",
            "r2", "spearman", "kendall", "oof", "measured", "importance", "model",
            "fold_sizes")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fit:
        return cls(**{k: data[k] for k in (
            "target", "feature_names", "n_train", "params", "num_boost_round", "kfold", "seed",
            "r2", "spearman", "kendall", "oof", "measured", "importance", "model")},
            fold_sizes=list(data.get("fold_sizes") or []))

    def quality(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        return (f"R² {f(self.r2)}, Spearman {f(self.spearman)}, Kendall τ {f(self.kendall)} "
                f"({self.kfold}-fold, {self.n_train} points)")


def fit_predictor(X: np.ndarray, y: np.ndarray, names: list[str], *, target: str,
                  params: dict[str, Any] | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                  kfold: int = 5, seed: int = 0) -> Fit:
    """Fit a LightGBM regressor of `y` on `X` (see the module docstring)."""
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    n = len(y)
    if n < MIN_TRAIN:
        raise ValueError(f"a predictor needs at least {MIN_TRAIN} measured architectures; "
                         f"got {n}")
    if X.shape != (n, len(names)):
        raise ValueError(f"features have shape {X.shape}; expected ({n}, {len(names)})")
    p = _params(params, seed)
    parts = folds(n, max(2, kfold), seed)
    oof = np.empty(n)
    for held in parts:
        train = np.setdiff1d(np.arange(n), held)
        oof[held] = _train(X[train], y[train], names, p, num_boost_round).predict(X[held])
    booster = _train(X, y, names, p, num_boost_round)
    gains = booster.feature_importance(importance_type="gain")
    corr = rank_correlations(y, oof)
    fit = Fit(target=target, feature_names=list(names), n_train=n, params=p,
              num_boost_round=num_boost_round, kfold=len(parts), seed=seed,
              r2=_finite(r2_score(y, oof)) if r2_score(y, oof) is not None else None,
              spearman=corr["spearman"], kendall=corr["kendall"], oof=oof.tolist(),
              measured=y.tolist(),
              importance={name: float(g) for name, g in zip(names, gains, strict=True)},
              model=booster.model_to_string(), fold_sizes=[len(h) for h in parts])
    fit._booster = booster
    return fit
