"""The study file: what `prunestudio run STUDY.toml` reads, as typed, torch-free models.

One pydantic model per TOML table, all with ``extra="forbid"`` so a typo is an error that names
the key, never a silently ignored setting. `parse_config` turns any problem into a `ConfigError`
whose message names the field path and what is allowed (``prunestudio.engine.studies.config.
load_config`` adds the file). Names of methods, sources, tasks, expressions and measurements are
checked through the engine's catalog (`prunestudio.schema.catalog`); a reader validates a
recorded config with ``context=SHAPE_ONLY``, without the engine. ``StudyConfig.to_dict()`` is
what a study records; `StudySettings` (``config.py``) reads it back leniently.
"""

from __future__ import annotations

import itertools
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .catalog import catalog_for
from .constants import SEARCH_KINDS, SEARCH_PART_PREFIX, SEARCH_ROLE
from .method_options import Importance
from .reconstruction import ReconstructionSection
from .recovery import RecoverySection
from .spec import CandidateSpec, Pattern
from .window_spec import WindowSpec, is_generated, refuse_generated, with_default_split

__all__ = ["ConfigError", "EvalSet", "GridSection", "ModelSection", "PredictorSection",
           "SearchSection", "StudyConfig", "StudySection", "TasksSection", "clean_pydantic_text",
           "format_validation_error", "parse_config"]


class ConfigError(ValueError):
    """A study configuration that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudySection(_Strict):
    name: str | None = Field(None, description="unique study name; default: <kind>-<id>")
    kind: str = Field("grid", description="the proposer that runs the study (a module of "
                      "prunestudio/engine/study/proposers): grid (methods × sparsities × "
                      "patterns), gp (Pruner-Zero genetic programming over symbolic metrics), "
                      "random (random symbolic metrics, the GP's baseline), predictor "
                      "(accuracy-predictor search over per-block structured ratios), ...")
    seed: int = 0
    measurements: list[str] = Field(
        default_factory=list, description="extra measurements, by name (modules of "
        "prunestudio/engine/study/measurements), e.g. block_sparsity: of every grid candidate; "
        "of a search's baselines and of each candidate it evaluates (after the fitness; a "
        "candidate whose fitness is reused by mask equivalence is not measured)")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str, info: ValidationInfo) -> str:
        catalog = catalog_for(info) if v != "grid" else None
        if catalog is not None and v not in catalog.study_kinds():
            raise ValueError(f"unknown study kind {v!r}; allowed: "
                             f"{', '.join(catalog.study_kinds())}")
        return v

    @field_validator("measurements")
    @classmethod
    def _measurements(cls, v: list[str], info: ValidationInfo) -> list[str]:
        catalog = catalog_for(info) if v else None
        if catalog is not None:
            known = catalog.measurement_names()
            unknown = [n for n in v if n not in known]
            if unknown:
                raise ValueError(f"unknown measurement(s) {', '.join(map(repr, unknown))}; "
                                 f"allowed: {', '.join(known)}")
        return v


class ModelSection(_Strict):
    source: str = Field("default", description="'default', a hub id, a folder or a .gguf file")
    device: str = "auto"
    dtype: str = "auto"


class EvalSet(_Strict):
    """One perplexity evaluation: which windows, under which role and fidelity."""

    role: str = Field(description="e.g. in_domain (held-out text of the calibration source) "
                      "or out_of_domain")
    fidelity: Literal["proxy", "full"] = "full"
    windows: WindowSpec
    batch_size: int = Field(4, ge=1)


def _sparsity(v: float) -> float:
    if not 0.0 <= v < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {v}")
    return v


def _method_name(v: str, info: ValidationInfo) -> str:
    catalog = catalog_for(info)
    if catalog is not None:
        catalog.method(v)  # unknown method -> error listing the registry
    return v


class GridSection(_Strict):
    """Methods × sparsities × patterns; unstructured patterns take every sparsity, N:M
    patterns fix their own (2:4 → 0.5)."""

    methods: list[Annotated[str, AfterValidator(_method_name)]] = Field(default_factory=list)
    sparsities: list[Annotated[float, AfterValidator(_sparsity)]] = Field(
        default_factory=lambda: [0.5])
    patterns: list[str] = Field(default_factory=lambda: ["unstructured"])
    layer_ratios: Literal["uniform", "owl", "owl_band"] = Field(
        "uniform", description="per-block sparsity of the unstructured candidates: uniform, "
        "owl (OWL's ratios as its code maps them, M = 5, λ = 0.08) or owl_band (the same "
        "outlier ratios kept within [s − λ, s + λ]); N:M candidates stay uniform")
    include_dense: bool = True

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            Pattern.parse(p)
        return v

    def specs(self) -> list[CandidateSpec]:
        """The grid's candidates (dense first when there are methods), in grid order."""
        specs: list[CandidateSpec] = []
        if self.include_dense and self.methods:
            specs.append(CandidateSpec(method="dense"))
        for method, pattern_text in itertools.product(self.methods, self.patterns):
            pattern = Pattern.parse(pattern_text)
            sparsities = [pattern.sparsity] if pattern.kind == "nm" else self.sparsities
            for s in sparsities:
                specs.append(CandidateSpec(
                    method=method, sparsity=s, pattern=pattern,
                    layer_ratios=self.layer_ratios if pattern.kind != "nm" else "uniform",
                ))
        return specs

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> GridSection:
        """Every method × pattern × sparsity must be a valid spec: said here, at config time,
        naming the combination, not when the study starts."""
        if not self.methods or catalog_for(info) is None:
            return self
        problems: dict[str, list[str]] = {}
        for method, pattern_text in itertools.product(self.methods, self.patterns):
            pattern = Pattern.parse(pattern_text)
            nm = pattern.kind == "nm"
            for s in [pattern.sparsity] if nm else self.sparsities:
                try:
                    CandidateSpec(method=method, sparsity=s, pattern=pattern,
                                  layer_ratios=self.layer_ratios if not nm else "uniform")
                except ValidationError as exc:
                    where = f"{method} {pattern.label}" + ("" if nm else f" at sparsity {s}")
                    for err in exc.errors():
                        problems.setdefault(_message(err, CandidateSpec), []).append(where)
        if problems:
            raise ValueError("; ".join(f"{', '.join(dict.fromkeys(where))}: {msg}"
                                       for msg, where in problems.items()))
        return self


class TasksSection(_Strict):
    """Task accuracy through lm-eval, measured on every candidate of a grid study after its
    perplexities (the in-memory pruned model; no save / reload)."""

    names: list[str] = Field(description="tasks or aliases: 'offline' (shakespeare_next_line, "
                             "no network), 'zero_shot' (the papers' seven), 'mmlu', or single "
                             "task names")
    limit: int | float | None = Field(None, description="at most this many examples per "
                                      "(sub)task (an int ≥ 1) or this fraction (0 < f < 1); "
                                      "recorded as fidelity 'proxy'. None: every example")
    num_fewshot: int | None = Field(None, ge=0, description="None keeps each task's default")
    batch_size: int = Field(8, ge=1)

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        catalog = catalog_for(info)
        if catalog is None:
            return v
        try:
            return catalog.tasks(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return None
        if isinstance(v, float) and v.is_integer() and v >= 1:
            v = int(v)
        if isinstance(v, int) and v >= 1 or isinstance(v, float) and 0 < v < 1:
            return v
        raise ValueError(f"limit must be an int ≥ 1 (examples) or a fraction 0 < f < 1; "
                         f"got {v!r}")


def _default_search_split() -> WindowSpec:
    # pydoc tokens [20000, 21024): disjoint from the default calibration [0, 2048) and from the
    # default in-domain held-out text [40000, 48192)
    # (built unvalidated: the values are fixed, and a default must not need the catalog)
    return WindowSpec.model_construct(source="pydoc", split="all", seqlen=256, n=4, offset=20000)


class Halving(_Strict):
    """Successive halving of a search's fitness (`SearchSection.noise_aware`): after each
    generation, the `top` best distinct metrics by proxy fitness that lack a higher-fidelity
    fitness are re-measured on `windows` search-split windows (the proxy's windows and the
    ones after them, the same text) before they can rank as elites."""

    top: int = Field(3, ge=0, description="metrics re-measured per generation: the best `top` "
                     "by proxy fitness (0: no re-measurement)")
    windows: int | None = Field(None, ge=2, description="windows of the higher-fidelity "
                                "fitness: the search split extended to this many (its first "
                                "split.n are the proxy's); default 4 × split.n")


class Allocation(_Strict):
    """Per-layer-kind sparsity as part of a search's genome (beyond the paper; OWL-like, but the
    search decides): with `mode = "by_kind"` every candidate carries an offset per kind in
    `kinds`, a multiple of `step` in [−span, span]; the engine re-centres the offsets on the
    model's parameter counts, so the model as a whole stays at the search's sparsity. Generation
    0 alternates the uniform allocation and random ones; GP crosses allocations over kind by
    kind and mutates one kind's offset by ± step; random search draws them at random.
    `mode = "uniform"` is the paper's space (one sparsity everywhere)."""

    mode: Literal["uniform", "by_kind"] = "uniform"
    kinds: list[str] = Field(default_factory=lambda: ["q", "k", "v", "o", "gate", "up", "down"],
                             min_length=1, description="layer kinds with an offset (the "
                             "model's kinds: q, k, v, o, gate, up, down on LLaMA-like models)")
    step: float = Field(0.05, gt=0, lt=0.5, description="grid of the offsets")
    span: float = Field(0.2, gt=0, lt=0.5, description="offsets lie in [−span, span]")

    @model_validator(mode="after")
    def _grid(self) -> Allocation:
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"allocation.kinds must be distinct; got {self.kinds}")
        if self.span < self.step:
            raise ValueError(f"allocation.span ({self.span}) must be at least one step "
                             f"({self.step})")
        return self

    @property
    def levels(self) -> int:
        """Grid points on each side of 0: offsets are i × step for |i| ≤ levels."""
        return int(self.span / self.step + 1e-9)


class SearchSection(_Strict):
    """A search over symbolic metrics (kinds gp and random); the defaults are the paper's,
    except the noise-aware fitness (`noise_aware = false` is the paper's search).

    Fitness = perplexity on `split` (role "search", fidelity proxy) after pruning with the
    candidate's expression. `budget` counts real evaluations only: a candidate whose masks equal
    an evaluated one's reuses that fitness and costs no budget. With `noise_aware` the best few
    of each generation are re-measured at a higher fidelity (`halving`) before they can rank as
    elites, and two fitness values closer than `noise_k` standard errors are ties (broken by
    the higher-fidelity measurement, then the simpler expression, then the recording order).
    """

    population: int = Field(50, ge=2, description="population size (paper: 50)")
    iterations: int = Field(300, ge=0, description="iterations after the initial population "
                            "(paper: 300); each one proposes `offspring` candidates")
    offspring: int = Field(2, ge=1, le=64, description="candidates per iteration (a crossover "
                           "gives two children)")
    budget: int | None = Field(None, ge=1, description="stop after this many real fitness "
                               "evaluations (None: population + iterations × offspring)")
    top_k: int = Field(10, ge=1, description="tournaments draw from the k best (paper: 10)")
    tournament_size: int = Field(3, ge=1)
    p_mutation: float = Field(0.5, ge=0, le=1, description="chance that a child is mutated "
                              "(one node, same arity; paper: 0.5)")
    init_depth: tuple[int, int] = Field((3, 5), description="depth range of random trees "
                                        "(ramped half-and-half; paper: 3–5)")
    max_depth: int = Field(7, ge=1, le=16, description="depth limit of crossover children")
    leaves: list[Literal["W", "G", "X", "D"]] = Field(
        default_factory=lambda: ["W", "G", "X"], min_length=1,
        description="terminals of the metrics: W = |weight|, G = gradient aggregate, X = input "
        "norms (the paper's three); beyond the paper, D = SparseGPT's inverse-Hessian Cholesky "
        "diagonal (needs the Hessians once: w²/d² is SparseGPT's mask score)")
    constants: bool = Field(False, description="beyond the paper: the constants 0.1, 0.5, 2, "
                            "10 as terminals too, so a metric can weight one term against "
                            "another")
    seed_metrics: list[str] = Field(
        default_factory=list, description="expressions or known metric names (magnitude, wanda, "
        "gblm, pruner_zero, pruner_zero_released) added to the initial population, origin seed")
    sparsity: float = Field(0.5, gt=0, lt=1, description="pruning of every candidate (paper: "
                            "50% unstructured)")
    pattern: str = "unstructured"
    scope: Literal["row", "matrix"] = "row"
    calibration: Literal["dense", "sequential"] = Field(
        "dense", description="dense: every candidate prunes from the dense model's statistics "
        "(computed once; no forward pass per candidate); sequential: the papers' protocol, a "
        "layer-by-layer forward per candidate (slower)")
    split: WindowSpec = Field(default_factory=_default_search_split,
                              description="the search split: fitness windows, disjoint from "
                              "calibration and from every evaluation set")
    batch_size: int = Field(4, ge=1)
    equivalence: Literal["rank_key+mask", "mask", "off"] = Field(
        "rank_key+mask", description="reuse the fitness of mask-equivalent candidates: "
        "rank_key+mask tries the symbolic rank key (no pruning) then the hash of the pruned "
        "weights' zero pattern (no perplexity); mask only the hash; off never")
    finalists: int = Field(3, ge=0, description="best distinct metrics re-evaluated on the "
                           "[[evaluation]] sets (fidelity full) after the search")
    baselines: list[str] = Field(default_factory=list, description="methods (e.g. dense, "
                                 "wanda) evaluated at the search's settings on the search "
                                 "split and on the [[evaluation]] sets, for comparison")
    max_candidates: int | None = Field(None, ge=1, description="safety cap on recorded search "
                                       "candidates (None: 10 × budget)")
    noise_aware: bool = Field(True, description="rank by a noise-aware fitness: re-measure "
                              "the best of each generation at higher fidelity (`halving`) and "
                              "treat differences below `noise_k` standard errors as ties; "
                              "false: the paper's search (one proxy fitness, exact comparisons)")
    noise_k: float = Field(2.0, ge=0, description="two fitness values are tied when their log "
                           "PPLs differ by less than noise_k standard errors of the difference "
                           "(paired over the same windows; 0: exact comparisons)")
    halving: Halving = Field(default_factory=Halving, description="successive halving: "
                             "{ top, windows } (noise_aware only)")
    allocation: Allocation = Field(default_factory=Allocation, description="beyond the paper: "
                                   "{ mode = 'by_kind', kinds, step, span } makes a sparsity "
                                   "offset per layer kind part of the genome; 'uniform' (the "
                                   "default) is the paper's one sparsity everywhere")

    @field_validator("init_depth")
    @classmethod
    def _depths(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi:
            raise ValueError(f"init_depth must be [min, max] with 1 ≤ min ≤ max; got {list(v)}")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        Pattern.parse(v)
        return v

    @field_validator("leaves")
    @classmethod
    def _leaves(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"leaves must be distinct; got {v}")
        return v

    @field_validator("seed_metrics")
    @classmethod
    def _seed_metrics(cls, v: list[str], info: ValidationInfo) -> list[str]:
        catalog = catalog_for(info) if v else None
        if catalog is None:
            return v
        out = []
        for i, text in enumerate(v):
            try:
                out.append(catalog.expression(text, known_names=True)[0])
            except ValueError as exc:
                raise ValueError(f"seed_metrics[{i}] {exc}") from None
        return out

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str], info: ValidationInfo) -> list[str]:
        catalog = catalog_for(info) if v else None
        for name in v if catalog is not None else ():
            catalog.method(name)  # unknown method -> error listing the registry
        return v

    @field_validator("split")
    @classmethod
    def _split_is_text(cls, v: WindowSpec, info: ValidationInfo) -> WindowSpec:
        refuse_generated(v, "the search split ([search] split)", catalog_for(info))
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> SearchSection:
        if self.init_depth[1] > self.max_depth:
            raise ValueError(f"init_depth max ({self.init_depth[1]}) exceeds max_depth "
                             f"({self.max_depth})")
        catalog = catalog_for(info) if self.seed_metrics else None
        for text in self.seed_metrics if catalog is not None else ():
            d = catalog.expression(text)[1]
            if d > self.max_depth:
                raise ValueError(f"seed metric {text} has depth {d} (simplified) > "
                                 f"max_depth {self.max_depth}")
        if self.allocation.mode == "by_kind":
            if self.pattern != "unstructured":
                raise ValueError(f"allocation by_kind sets a sparsity per layer kind; pattern "
                                 f"{self.pattern} fixes it: use pattern 'unstructured'")
            widest = 2 * self.allocation.levels * self.allocation.step
            if not 0 <= self.sparsity - widest or self.sparsity + widest >= 1:
                raise ValueError(
                    f"allocation span {self.allocation.span}: re-centred offsets reach "
                    f"sparsity ± {widest:.2f}, outside [0, 1) at sparsity {self.sparsity}; "
                    f"allowed: span ≤ {min(self.sparsity, 1 - self.sparsity) / 2:.3f}")
        if self.noise_aware and self.halving.top > 0:
            if self.split.n is None:
                raise ValueError("halving re-measures on more windows of the search split than "
                                 "the proxy's: give split.n (or halving = { top = 0 })")
            if self.halving.windows is not None and self.halving.windows <= self.split.n:
                raise ValueError(f"halving.windows ({self.halving.windows}) must exceed "
                                 f"split.n ({self.split.n}): the higher fidelity extends the "
                                 "proxy's windows")
        return self

    @property
    def halving_top(self) -> int:
        """Metrics re-measured per generation (0: no halving)."""
        return self.halving.top if self.noise_aware else 0

    @property
    def full_windows(self) -> int | None:
        """Windows of the higher-fidelity fitness, None without halving."""
        if not self.halving_top or self.split.n is None:
            return None
        return self.halving.windows if self.halving.windows is not None else 4 * self.split.n

    @property
    def real_budget(self) -> int:
        return self.budget if self.budget is not None else (
            self.population + self.iterations * self.offspring)

    @property
    def candidate_cap(self) -> int:
        return self.max_candidates if self.max_candidates is not None else 10 * self.real_budget

    def candidate_spec(self, expression: str,
                       offsets: dict[str, float] | None = None) -> CandidateSpec:
        """The spec of a search candidate with this (canonical) expression and, with
        `allocation` by_kind, these per-kind offsets (none or all zero: uniform)."""
        offsets = {k: v for k, v in (offsets or {}).items() if round(v, 4) != 0}
        by_kind = {"layer_ratios": "by_kind", "kind_offsets": offsets} if offsets else {}
        return CandidateSpec(method="symbolic", sparsity=self.sparsity,
                             pattern=Pattern.parse(self.pattern),
                             calibration={"mode": self.calibration},
                             options={"expression": expression, "scope": self.scope}, **by_kind)

    def baseline_spec(self, method: str) -> CandidateSpec:
        if method == "dense":
            return CandidateSpec(method="dense")
        return CandidateSpec(method=method, sparsity=self.sparsity,
                             pattern=Pattern.parse(self.pattern),
                             calibration={"mode": self.calibration})


PREDICTOR_BASELINES = ("uniform", "llm_pruner", "random")


def _ratio_range(v: tuple[float, float]) -> tuple[float, float]:
    lo, hi = v
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"a ratio range must be [lo, hi] with 0 ≤ lo ≤ hi < 1; got {list(v)}")
    return v


class PredictorSection(_Strict):
    """The accuracy-predictor search (kind predictor; Pruning LLMs via Accuracy Predictor,
    arXiv 2309.09507) over per-block structured pruning ratios.

    Every architecture removes whole attention units and MLP channels (method `structured`,
    per-block `attention_ratios` / `mlp_ratios`) and `budget` ± `tolerance` of all parameters,
    exactly. Rounds of `samples_per_round` architectures are measured (search-split PPL, the
    fitness; task accuracy when the study has [tasks]); LightGBM predictors are fitted with
    k-fold validation and the ranges of the most important features narrowed; then the
    predictor scores `candidates_scored` architectures and the `top_k` are measured. The best
    measured architecture is re-measured on the [[evaluation]] sets.
    """

    budget: float = Field(0.2, gt=0, lt=1, description="fraction of all parameters removed "
                          "(embeddings included, tied once)")
    tolerance: float = Field(0.01, ge=0, lt=0.5, description="every architecture removes "
                             "budget ± tolerance of the parameters")
    step: float = Field(0.05, gt=0, le=0.5, description="grid step of the ratio ranges")
    attention_range: tuple[float, float] = Field(
        (0.0, 0.5), description="[lo, hi] group ratio of each free block's attention")
    mlp_range: tuple[float, float] = Field(
        (0.0, 0.5), description="[lo, hi] group ratio of each free block's MLP channels")
    attention: bool = Field(True, description="search attention ratios")
    mlp: bool = Field(True, description="search MLP ratios")
    attention_unit: Literal["kv_group", "query_head"] = "kv_group"
    keep_first: int = Field(1, ge=0, description="first blocks never pruned")
    keep_last: int = Field(1, ge=0, description="last blocks never pruned")
    importance: Importance = Field("taylor_second", description="structured importance "
                                   "(second-order Taylor, LLM-Pruner's param_second; its "
                                   "hf_prune.py default is param_first = taylor_first)")
    rounds: int = Field(3, ge=1, description="sample → fit → narrow rounds")
    samples_per_round: int = Field(16, ge=2)
    kfold: int = Field(5, ge=2, description="folds of the predictors' cross-validation")
    narrow_top: int = Field(4, ge=0, description="per-block features whose ranges are "
                            "narrowed after each round (by gain importance)")
    elite: float = Field(0.1, gt=0, le=1, description="a narrowed range keeps the values the "
                         "best fraction of the predictor-scored architectures take")
    candidates_scored: int = Field(2000, ge=1, description="architectures the final "
                                   "predictor scores (cheap) to pick the top_k")
    top_k: int = Field(4, ge=1, description="predicted-best architectures measured for real")
    baselines: list[Literal["uniform", "llm_pruner", "random"]] = Field(
        default_factory=lambda: list(PREDICTOR_BASELINES), description="uniform: the same "
        "ratio in every free block at the budget; llm_pruner: LLM-Pruner's default (uniform "
        "on blocks 4..n-3 of 32, scaled to the model's depth) at the budget; random: the best "
        "of as many random architectures as the search measures")
    random_samples: int | None = Field(None, ge=1, description="architectures of the random "
                                       "baseline (None: the search's real evaluations)")
    base: Literal["ridge", "none"] = Field(
        "ridge", description="the predictors boost from a ridge regression on the features "
        "(ridge; log-PPL at a fixed budget is close to additive in the per-block ratios) or "
        "are plain LightGBM (none)")
    num_boost_round: int = Field(200, ge=1)
    lightgbm: dict[str, Any] = Field(default_factory=dict, description="LightGBM parameters "
                                     "over the small-data defaults (engine.predictor.fit)")
    split: WindowSpec = Field(default_factory=_default_search_split, description="the search "
                              "split: fitness windows, disjoint from calibration and from "
                              "every evaluation set")
    batch_size: int = Field(4, ge=1)
    accuracy_on: Literal["all", "finals"] = Field(
        "all", description="with [tasks]: all = every architecture is measured on the tasks "
        "and an accuracy predictor is fitted (the paper's protocol; the tasks dominate a "
        "candidate's time); finals = only the dense model, the baselines, the winner and the "
        "best random architecture (no accuracy predictor)")

    @field_validator("attention_range", "mlp_range")
    @classmethod
    def _ranges(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ratio_range(v)

    @field_validator("split")
    @classmethod
    def _split_is_text(cls, v: WindowSpec, info: ValidationInfo) -> WindowSpec:
        refuse_generated(v, "the search split ([predictor] split)", catalog_for(info))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PredictorSection:
        if not (self.attention or self.mlp):
            raise ValueError("attention and mlp are both off: nothing to search")
        if self.tolerance >= self.budget:
            raise ValueError(f"tolerance ({self.tolerance}) must be smaller than the budget "
                             f"({self.budget})")
        return self

    @property
    def real_budget(self) -> int:
        """Real evaluations of the search: every round's samples and the top_k."""
        return self.rounds * self.samples_per_round + self.top_k

    @property
    def n_random(self) -> int:
        return self.random_samples if self.random_samples is not None else self.real_budget

    def search_section(self, context: Any = None) -> SearchSection:
        """The [search] a predictor study runs with (derived, not recorded): the search split,
        its batch size and the budget of real evaluations (`context`: the validation's)."""
        return SearchSection.model_validate(
            {"split": self.split, "batch_size": self.batch_size, "budget": self.real_budget,
             "finalists": 0, "noise_aware": False}, context=context)


TPE_BASELINES = ("llm_pruner",)
ALIGNMENT_FACTORS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


def _default_tpe_splits() -> list[WindowSpec]:
    # two texts of different kinds (AdaPruner averages WikiText-2 and PTB): pydoc tokens
    # [20000, 21024) and Macbeth's first 1024 tokens; disjoint from the default calibration and
    # held-out sets (built unvalidated, like _default_search_split)
    return [WindowSpec.model_construct(source="pydoc", split="all", seqlen=128, n=8,
                                       offset=20000),
            WindowSpec.model_construct(source="shakespeare", split="macbeth", seqlen=128, n=8,
                                       offset=0)]


class TpeSection(_Strict):
    """AdaPruner (Sample-aware Adaptive Structured Pruning for LLMs): Optuna's TPE (or random)
    sampler over which calibration windows × the coefficients of the combined Taylor
    importance, for structured pruning at a fixed parameter budget.

    A trial picks `samples` windows of the study's [calibration] set (the pool; `samples` slots,
    each choosing any window, duplicates dropped) and α (vector-wise Taylor), β (element-wise
    first order) in [0, 1] and an alignment factor f for the element-wise second-order term
    (γ = β · f: the second-order term is orders of magnitude smaller). The candidate is the
    `structured` method with importance `combined` (α, β, γ) at `sparsity` of the parameters,
    pruned with the chosen windows only; its objective is the mean PPL over `splits`.
    """

    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPESampler, or "
                                              "RandomSampler (the baseline), both seeded")
    trials: int = Field(60, ge=1, description="trials (real evaluations)")
    batch: int | None = Field(
        None, ge=1, description="trials asked per round, evaluated in parallel by the run's "
        "workers (tpe: Optuna's constant liar keeps a batch's trials apart; 1: one trial "
        "after the other, each knowing every result before it); default: the number of "
        "workers of the run that creates the study, recorded as a number (not `batch_size`, "
        "the windows per forward pass)")
    n_startup_trials: int = Field(10, ge=1, description="TPE: random trials before it models")
    sparsity: float = Field(0.2, gt=0, lt=1, description="fraction of all parameters removed")
    block_start: int | None = Field(None, description="first pruned block (None: LLM-Pruner's "
                                    "default range scaled to the model's depth)")
    block_end: int | None = Field(None, description="end of the pruned blocks, exclusive")
    samples: int = Field(8, ge=1, description="calibration windows per trial, drawn from the "
                         "[calibration] windows (the pool)")
    search: Literal["joint", "calibration", "importance"] = Field(
        "joint", description="joint: windows × coefficients (AdaPruner); calibration: windows "
        "only, importance fixed (first-order element-wise, LLM-Pruner's default); importance: "
        "coefficients only, windows fixed (a seeded random draw)")
    orders: Literal["both", "first", "second"] = Field(
        "both", description="Taylor terms in the importance: both (α, β and γ = β·f), first "
        "(α, β; γ = 0) or second (γ only: α = β = 0)")
    factors: list[float] = Field(default_factory=lambda: list(ALIGNMENT_FACTORS), min_length=1,
                                 description="alignment factors f of the second-order term")
    aggregations: list[Literal["sum", "mean", "max", "prod", "last"]] = Field(
        default_factory=lambda: ["sum"], min_length=1, description="group aggregations to "
        "choose among (one: fixed)")
    splits: list[WindowSpec] = Field(default_factory=_default_tpe_splits, min_length=1,
                                     max_length=4, description="objective = mean PPL over "
                                     "these texts (role search; each also recorded alone)")
    baselines: list[Literal["llm_pruner"]] = Field(
        default_factory=lambda: list(TPE_BASELINES), description="llm_pruner: first-order "
        "element-wise Taylor on a seeded random draw of `samples` windows, same budget")
    batch_size: int = Field(4, ge=1)

    @field_validator("factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if any(not f > 0 for f in v):
            raise ValueError(f"factors must be positive; got {v}")
        return v

    @field_validator("splits")
    @classmethod
    def _splits_are_text(cls, v: list[WindowSpec], info: ValidationInfo) -> list[WindowSpec]:
        catalog = catalog_for(info)
        for i, spec in enumerate(v):
            refuse_generated(spec, f"an objective text ([tpe] splits[{i}])", catalog)
        return v

    @model_validator(mode="after")
    def _something_to_search(self) -> TpeSection:
        if self.search == "importance" and self.orders == "second":
            raise ValueError("search = 'importance' with orders = 'second' leaves nothing to "
                             "search (the second-order term alone has no coefficient to tune): "
                             "search calibration or joint, or use orders both / first")
        return self

    def search_section(self, context: Any = None) -> SearchSection:
        """The [search] a tpe study runs with (derived, not recorded): its first split, the
        batch size and the budget (`context`: the validation's)."""
        return SearchSection.model_validate(
            {"split": self.splits[0], "batch_size": self.batch_size, "budget": self.trials,
             "finalists": 0, "noise_aware": False}, context=context)


class StudyConfig(_Strict):
    study: StudySection = Field(default_factory=StudySection)
    model: ModelSection = Field(default_factory=ModelSection)
    calibration: WindowSpec
    evaluation: list[EvalSet] = Field(min_length=1)
    grid: GridSection = Field(default_factory=GridSection)
    candidates: list[CandidateSpec] = Field(default_factory=list,
                                            description="explicit extra candidates")
    search: SearchSection | None = Field(None, description="settings of a gp / random study")
    tasks: TasksSection | None = Field(None, description="lm-eval task accuracy per candidate "
                                       "(grid studies; a predictor study's accuracy objective)")
    predictor: PredictorSection | None = Field(None, description="settings of a predictor "
                                               "study")
    tpe: TpeSection | None = Field(None, description="settings of a tpe (AdaPruner) study")
    recovery: RecoverySection | None = Field(None, description="LoRA / QLoRA recovery of the "
                                             "study's best candidates after it has run")
    reconstruction: ReconstructionSection | None = Field(
        None, description="grid studies: run every unstructured / N:M candidate once per "
        "reconstruction mode × epochs × samples (Shin et al. 2024; a sweep when several)")

    @model_validator(mode="before")
    @classmethod
    def _default_splits(cls, data: Any, info: ValidationInfo) -> Any:
        """A window set that names a source but no split gets that source's split for its
        role: the training text for [calibration], held-out text (test, else validation) for
        [[evaluation]] and the search split (c4: train / validation; wikitext2 and ptb:
        train / test; pydoc and shakespeare: all / all)."""
        catalog = catalog_for(info)
        if not isinstance(data, dict) or catalog is None:
            return data
        data = dict(data)
        if "calibration" in data:
            data["calibration"] = with_default_split(data["calibration"], "calibration", catalog)
        if isinstance(data.get("evaluation"), list):
            data["evaluation"] = [
                {**e, "windows": with_default_split(e["windows"], "evaluation", catalog)}
                if isinstance(e, dict) and "windows" in e else e
                for e in data["evaluation"]]
        for section in ("search", "predictor"):
            table = data.get(section)
            if isinstance(table, dict) and "split" in table:
                data[section] = {**table, "split": with_default_split(table["split"],
                                                                      "evaluation", catalog)}
        table = data.get("tpe")
        if isinstance(table, dict) and isinstance(table.get("splits"), list):
            data["tpe"] = {**table, "splits": [with_default_split(w, "evaluation", catalog)
                                               for w in table["splits"]]}
        return data

    @field_validator("evaluation")
    @classmethod
    def _roles_unique(cls, v: list[EvalSet]) -> list[EvalSet]:
        roles = [e.role for e in v]
        if len(set(roles)) != len(roles):
            raise ValueError(f"evaluation roles must be unique; got {roles}")
        if SEARCH_ROLE in roles:
            raise ValueError(f"evaluation role {SEARCH_ROLE!r} is reserved for the fitness of a "
                             "search (its windows are [search] split)")
        parts = [r for r in roles if r.startswith(SEARCH_PART_PREFIX)]
        if parts:
            raise ValueError(f"evaluation roles starting with {SEARCH_PART_PREFIX!r} are "
                             f"reserved for the texts of a search's objective; got {parts}")
        return v

    @field_validator("evaluation")
    @classmethod
    def _evaluation_is_text(cls, v: list[EvalSet], info: ValidationInfo) -> list[EvalSet]:
        catalog = catalog_for(info)
        for e in v:
            refuse_generated(e.windows, f"an evaluation set ([[evaluation]] {e.role!r})",
                             catalog)
        return v

    @model_validator(mode="after")
    def _generated_calibration_only(self, info: ValidationInfo) -> StudyConfig:
        """Text generated from the model (source `self`) calibrates; it never trains a
        recovery, whose default text is the calibration source's."""
        catalog = catalog_for(info)
        if self.recovery is not None and catalog is not None:
            if self.recovery.windows is None and is_generated(self.calibration.source, catalog):
                raise ValueError(
                    f"[recovery] trains on the calibration text by default, but [calibration] "
                    f"source {self.calibration.source!r} is generated from the model (for "
                    "calibration only): give [recovery] windows = {source = ..., n = ..., "
                    "seqlen = ...} from a text source")
        return self

    @model_validator(mode="after")
    def _kind_sections(self, info: ValidationInfo) -> StudyConfig:
        for kind, model, split in (("predictor", PredictorSection, "predictor.split"),
                                   ("tpe", TpeSection, "tpe.splits")):
            if self.study.kind == kind:
                if getattr(self, kind) is None:
                    object.__setattr__(self, kind, model.model_validate(
                        {}, context=info.context))
                derived = getattr(self, kind).search_section(info.context)
                if self.search is not None and self.search != derived:
                    raise ValueError(f"[search] is for study.kind = 'gp' or 'random'; a {kind} "
                                     f"study's search split is {split}")
                object.__setattr__(self, "search", derived)
            elif getattr(self, kind) is not None:
                raise ValueError(f"[{kind}] is for study.kind = {kind!r}; this study is kind "
                                 f"{self.study.kind!r}")
        if self.tpe is not None and self.tpe.samples > self.calibration.n:
            raise ValueError(f"tpe.samples = {self.tpe.samples} windows per trial, but the "
                             f"[calibration] pool has only {self.calibration.n} (raise "
                             "calibration.n or lower tpe.samples)")
        if self.is_search:
            if self.search is None:
                object.__setattr__(self, "search", SearchSection())
            if self.grid.methods or self.candidates:
                raise ValueError(f"a {self.study.kind} study takes no grid.methods or "
                                 "[[candidates]]: use search.baselines for reference methods")
            if self.tasks is not None and self.study.kind not in ("predictor", "tpe"):
                raise ValueError(f"[tasks] is for grid studies; measure a {self.study.kind} "
                                 "study's finalists with `prunestudio eval CANDIDATE --tasks "
                                 "...` (task accuracy is not its fitness)")
        elif self.search is not None:
            raise ValueError("[search] is for study.kind = 'gp' or 'random'; this study is "
                             f"kind {self.study.kind!r}")
        if self.reconstruction is not None:
            if self.study.kind != "grid":
                raise ValueError("[reconstruction] is for grid studies (methods × sparsities × "
                                 f"reconstruction modes); this study is kind {self.study.kind!r}")
            self._check_reconstruction(info)
        return self

    def _check_reconstruction(self, info: ValidationInfo) -> None:
        if catalog_for(info) is None:
            return
        n = self.calibration.n
        wanted = [s for s in self.reconstruction.samples if s is not None]
        if n is not None and wanted and max(wanted) > n:
            raise ValueError(f"reconstruction.samples asks for {max(wanted)} windows but the "
                             f"[calibration] set has {n} (raise calibration.n or lower samples)")
        if not any(self._reconstructable(s) for s in self.grid.specs() + list(self.candidates)):
            raise ValueError("[reconstruction] needs an unstructured or N:M grid method (e.g. "
                             "grid.methods = ['magnitude', 'wanda', 'sparsegpt']); dense and "
                             "structured candidates are not reconstructed")

    @staticmethod
    def _reconstructable(spec: CandidateSpec) -> bool:
        return (spec.method not in ("dense", "structured") and spec.reconstruction is None
                and spec.recovery is None)

    @property
    def is_search(self) -> bool:
        return self.study.kind in SEARCH_KINDS

    def candidate_specs(self) -> list[CandidateSpec]:
        """The grid expanded (dense first), then the explicit candidates, each unstructured /
        N:M one crossed with the [reconstruction] variants; duplicates dropped."""
        specs = self.grid.specs()
        specs.extend(self.candidates)
        if self.reconstruction is not None:
            crossed = []
            for spec in specs:
                if not self._reconstructable(spec):
                    crossed.append(spec)
                    continue
                for recipe in self.reconstruction.variants():
                    crossed.append(spec if recipe is None else CandidateSpec.model_validate(
                        {**spec.canonical(), "reconstruction": recipe.recipe()}))
            specs = crossed
        seen, out = set(), []
        for spec in specs:
            if spec.hash() not in seen:
                seen.add(spec.hash())
                out.append(spec)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if self.study.kind in ("predictor", "tpe"):
            data.pop("search", None)  # derived from [predictor] / [tpe] (`search_section`)
        # unset: the same recorded config as before
        for optional in ("search", "tasks", "predictor", "tpe", "recovery", "reconstruction"):
            if data.get(optional) is None:
                data.pop(optional, None)
        if not data["study"].get("measurements"):
            data["study"].pop("measurements", None)
        return data


_PYDANTIC_NOISE = (
    re.compile(r"\n?[ \t]*For further information visit \S+"),
    re.compile(r"\s*\[type=[^\]]*\]"),
    re.compile(r"^\d+ validation errors? for \w+\n", re.M),
)
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": ("≥", "ge"),
           "less_than": ("<", "lt"), "less_than_equal": ("≤", "le")}


def clean_pydantic_text(text: str) -> str:
    """Drop pydantic's URL lines, `[type=..., input_value=...]` tails and headers from a
    message that embeds a ValidationError's text."""
    for pattern in _PYDANTIC_NOISE:
        text = pattern.sub("", text)
    return text.replace("Value error, ", "").strip()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _loc_text(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel] | None, path: tuple) -> type[BaseModel] | None:
    """The pydantic model at a location (list indices skipped), or None."""
    cls = root
    for part in path:
        if cls is None:
            return None
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        cls = _model_in(field.annotation) if field is not None else None
    return cls


def _message(err: dict, root: type[BaseModel] | None = None) -> str:
    """One pydantic error as 'message (allowed: ...)', without pydantic's codes and URL."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(root, tuple(err["loc"][:-1]))
        keys = list(model.model_fields) if model is not None else []
        return "unknown key (check the spelling" + (
            f"; allowed: {', '.join(keys)})" if keys else ")")
    if kind == "missing":
        return "required, but missing"
    if kind == "literal_error":  # pydantic's text lists the allowed values
        return f"{clean_pydantic_text(err['msg'])}; got {_short(value)}"
    if kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        return (f"{clean_pydantic_text(err['msg'])}; got {_short(value)} (allowed: {symbol} "
                f"{ctx.get(key)})")
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length" if kind == "too_short" else "max_length")
        return (f"needs {'at least' if kind == 'too_short' else 'at most'} {bound} item(s); "
                f"got {ctx.get('actual_length')}")
    msg = clean_pydantic_text(err["msg"])
    if kind.endswith(("_type", "_parsing")) or kind == "finite_number":
        return f"{msg}; got {_short(value)}"
    return msg


def format_validation_error(exc: ValidationError, root: type[BaseModel] | None = None) -> str:
    """A pydantic ValidationError as 'FIELD: message (allowed: ...)' lines, no URLs."""
    return "\n".join(f"  {_loc_text(tuple(err['loc']))}: {_message(err, root)}"
                     for err in exc.errors())


def _format_validation(exc: ValidationError, where: str) -> str:
    return f"invalid study config {where}:\n" + format_validation_error(exc, StudyConfig)


def parse_config(data: dict[str, Any], where: str = "", *, context: Any = None) -> StudyConfig:
    """A study config from its TOML / recorded dict (``context=SHAPE_ONLY``: without the
    engine's catalog, for a config the engine recorded)."""
    try:
        return StudyConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, where)) from None
