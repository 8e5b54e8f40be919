"""The accuracy predictor: a LightGBM regressor from architecture features to a measured
objective (log search-split PPL, task accuracy), validated by k-fold cross-validation.

`fit_predictor(X, y, names, ...)` returns a `Fit`: out-of-fold predictions for every training
point (each predicted by a model that never saw it), their R², Spearman ρ and Kendall τ
against the measurements, the importance of each feature of the model fitted on all points,
and that model — LightGBM's text format (`Booster.model_to_string`) plus, with the default
``base = "ridge"``, the coefficients of its linear base — which `Fit.from_dict(...).predict(X)`
reloads and reproduces exactly.

Why a ridge base: at a fixed parameter budget the log-PPL of an architecture is close to
additive in its per-block ratios (on the embedded model a ridge regression on 90 measured
architectures ranks held-out ones with Kendall τ ≈ 0.69, trees alone ≈ 0.5), and trees learn
a sum of 60 small effects slowly from a few dozen points. So the booster starts from a ridge
regression (standardised features, α chosen by exact leave-one-out error on a grid) through
LightGBM's ``init_score`` and boosts its residuals: the prediction is ridge + trees, and
``base = "none"`` is plain LightGBM. Deterministic for a seed
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
BASES = ("ridge", "none")
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


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


@dataclass(frozen=True)
class RidgeBase:
    """y ≈ intercept + Σ coef_j · (x_j − mean_j) / scale_j, fitted in closed form."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float
    loo_mse: float  # leave-one-out mean squared error at `alpha`

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return Z @ np.asarray(self.coef) + self.intercept

    def gains(self, n: int) -> np.ndarray:
        """n · coef_j² per feature: the squared error a standardised feature removes when the
        features are uncorrelated — the linear part's counterpart of the trees' gain."""
        return n * np.asarray(self.coef) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef,
                "intercept": self.intercept, "alpha": self.alpha, "loo_mse": self.loo_mse}


def fit_ridge(X: np.ndarray, y: np.ndarray,
              alphas: tuple[float, ...] = RIDGE_ALPHAS) -> RidgeBase:
    """Ridge regression on standardised features (constant ones get scale 1 and coefficient
    0), the intercept unpenalised, α the grid value with the lowest exact leave-one-out error
    (residual / (1 − leverage), from one SVD)."""
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (X - mean) / scale
    ym = float(y.mean())
    yc = y - ym
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    Uty = U.T @ yc
    best: tuple[float, float, np.ndarray] | None = None
    n = len(y)
    for alpha in alphas:
        shrink = s * s / (s * s + alpha)
        coef = Vt.T @ (s / (s * s + alpha) * Uty)
        leverage = 1.0 / n + (U * U) @ shrink  # the centring adds 1/n to every leverage
        loo = float(np.mean(((yc - Z @ coef) / (1.0 - leverage)) ** 2))
        if best is None or loo < best[0] - 1e-15:
            best = (loo, alpha, coef)
    loo, alpha, coef = best
    return RidgeBase(mean.tolist(), scale.tolist(), coef.tolist(), ym, float(alpha), loo)


def _train(X: np.ndarray, y: np.ndarray, names: list[str], params: dict[str, Any],
           rounds: int, init_score: np.ndarray | None = None):
    import lightgbm as lgb

    data = lgb.Dataset(X, label=y, feature_name=names, free_raw_data=False,
                       init_score=init_score,
                       params={"feature_pre_filter": False, "min_data_in_bin": 1,
                               "max_bin": params.get("max_bin", 63), "verbosity": -1})
    return lgb.train(params, data, num_boost_round=rounds)


def _fit_once(X: np.ndarray, y: np.ndarray, names: list[str], params: dict[str, Any],
              rounds: int, base: str) -> tuple[RidgeBase | None, Any]:
    """One model on (X, y): the linear base (if any) and the trees boosted from it."""
    if base not in BASES:
        raise ValueError(f"unknown predictor base {base!r}; allowed: {', '.join(BASES)}")
    linear = fit_ridge(X, y) if base == "ridge" else None
    init = linear.predict(X) if linear is not None else None
    return linear, _train(X, y, names, params, rounds, init)


def _predict(linear: RidgeBase | None, booster, X: np.ndarray) -> np.ndarray:
    """LightGBM's predict leaves out the init_score: the base is added back here."""
    out = np.asarray(booster.predict(X), np.float64)
    return out + linear.predict(X) if linear is not None else out


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
    base: dict[str, Any] | None = None  # RidgeBase.to_dict() (None: trees only)
    importance_parts: dict[str, dict[str, float]] = field(default_factory=dict)
    _booster: Any = field(default=None, repr=False, compare=False)

    def booster(self):
        if self._booster is None:
            self._booster = load_booster(self.model)
        return self._booster

    def linear(self) -> RidgeBase | None:
        return RidgeBase(**self.base) if self.base else None

    def predict(self, X: np.ndarray) -> np.ndarray:
        return _predict(self.linear(), self.booster(), np.asarray(X, np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "target", "feature_names", "n_train", "params", "num_boost_round", "kfold", "seed",
            "r2", "spearman", "kendall", "oof", "measured", "importance", "model",
            "fold_sizes", "base", "importance_parts")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fit:
        return cls(**{k: data[k] for k in (
            "target", "feature_names", "n_train", "params", "num_boost_round", "kfold", "seed",
            "r2", "spearman", "kendall", "oof", "measured", "importance", "model")},
            fold_sizes=list(data.get("fold_sizes") or []), base=data.get("base"),
            importance_parts=dict(data.get("importance_parts") or {}))

    def quality(self) -> str:
        def f(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        return (f"R² {f(self.r2)}, Spearman {f(self.spearman)}, Kendall τ {f(self.kendall)} "
                f"({self.kfold}-fold, {self.n_train} points)")


def fit_predictor(X: np.ndarray, y: np.ndarray, names: list[str], *, target: str,
                  params: dict[str, Any] | None = None, num_boost_round: int = DEFAULT_ROUNDS,
                  kfold: int = 5, seed: int = 0, base: str = "ridge") -> Fit:
    """Fit a LightGBM regressor of `y` on `X`, boosted from a ridge base unless
    ``base = "none"`` (see the module docstring). Importance per feature: the trees' gain
    plus the base's `RidgeBase.gains` (both kept apart in `importance_parts`)."""
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
        lin, trees = _fit_once(X[train], y[train], names, p, num_boost_round, base)
        oof[held] = _predict(lin, trees, X[held])
    linear, booster = _fit_once(X, y, names, p, num_boost_round, base)
    tree_gain = np.asarray(booster.feature_importance(importance_type="gain"), np.float64)
    linear_gain = linear.gains(n) if linear is not None else np.zeros(len(names))
    gains = tree_gain + linear_gain
    corr = rank_correlations(y, oof)
    fit = Fit(target=target, feature_names=list(names), n_train=n, params=p,
              num_boost_round=num_boost_round, kfold=len(parts), seed=seed,
              r2=_finite(r2_score(y, oof)) if r2_score(y, oof) is not None else None,
              spearman=corr["spearman"], kendall=corr["kendall"], oof=oof.tolist(),
              measured=y.tolist(),
              importance={name: float(g) for name, g in zip(names, gains, strict=True)},
              model=booster.model_to_string(), fold_sizes=[len(h) for h in parts],
              base=linear.to_dict() if linear is not None else None,
              importance_parts={
                  "trees": {k: float(g) for k, g in zip(names, tree_gain, strict=True)},
                  **({"linear": {k: float(g) for k, g in zip(names, linear_gain, strict=True)}}
                     if linear is not None else {})})
    fit._booster = booster
    return fit
