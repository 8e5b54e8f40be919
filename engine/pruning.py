"""Prune a loaded model in place according to a `CandidateSpec`, and undo it cheaply.

`WeightSnapshot` keeps a pristine copy of every prunable weight taken once per study; after a
candidate only the layers it touched are copied back (no reload from disk per candidate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from prunestudio.engine.calibration import LayerStats, StatsCache, prune_sequentially
from prunestudio.engine.masks import realised_sparsity
from prunestudio.engine.methods import get_method
from prunestudio.engine.methods.base import LayerInputs, LayerJob, LayerTarget, PruningMethod
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.reconstruction import (
    ReconstructionResult,
    collect_on_stream,
    reconstruct_sequentially,
)

from prunestudio.schema.spec import CandidateSpec, OWLConfig

log = logging.getLogger(__name__)


class WeightSnapshot:
    """Pristine prunable weights; `restore(names)` copies back only what changed."""

    def __init__(self, lm: LoadedModel, device: str | torch.device | None = None):
        self._lins = {lin.name: lin for lin in lm.adapter.all_prunable_linears(lm.model)}
        # On CPU the copy lives beside the model; on GPU it stays on the GPU when it fits.
        target = device if device is not None else lm.device
        self._copy = {n: lin.weight.detach().to(target, copy=True)
                      for n, lin in self._lins.items()}
        self.dirty: set[str] = set()

    @torch.no_grad()
    def restore(self, names: set[str] | None = None) -> int:
        names = set(self.dirty if names is None else names)
        for n in names:
            self._lins[n].weight.copy_(self._copy[n], non_blocking=True)
        self.dirty -= names
        return len(names)

    def mark(self, names) -> None:
        self.dirty |= set(names)


@dataclass
class PruneResult:
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # realised, per linear
    layer_targets: dict[str, float] = field(default_factory=dict)
    block_ratios: list[float] | None = None  # per-block target (OWL)
    kind_ratios: dict[str, float] | None = None  # per-kind target (layer_ratios by_kind)
    stats_computed: list[str] = field(default_factory=list)
    reconstruction: ReconstructionResult | None = None  # when the spec reconstructs
    # layers no calibration token reached (an expert the router never chose on the calibration
    # set): pruned by weight magnitude instead of a statistic that would be all zeros
    uncalibrated: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        if not self.uncalibrated:
            return []
        shown = ", ".join(self.uncalibrated[:6])
        more = f" and {len(self.uncalibrated) - 6} more" if len(self.uncalibrated) > 6 else ""
        return [f"{len(self.uncalibrated)} layer(s) received no calibration token (experts the "
                f"router never chose on the calibration set): {shown}{more}; they were pruned "
                "by weight magnitude. More or more varied calibration text reaches them"]

    @property
    def overall_sparsity(self) -> float:
        return _weighted(self.layer_sparsity, self._numel)

    _numel: dict[str, int] = field(default_factory=dict)

    @property
    def max_target_error(self) -> float:
        return max((abs(self.layer_sparsity[n] - self.layer_targets[n]) for n in self.layer_sparsity),
                   default=0.0)


def _weighted(values: dict[str, float], weights: dict[str, int]) -> float:
    total = sum(weights.values())
    return sum(values[n] * weights[n] for n in values) / total if total else 0.0


def owl_outlier_ratios(dense_stats: dict[str, LayerStats], lm: LoadedModel,
                       M: float) -> list[float]:
    """OWL's layerwise outlier distribution: per decoder block, the share (a fraction, not the
    OWL code's percent) of the entries of the block's concatenated Wanda scores |W|·‖X‖ (every
    prunable layer of the block, X from `dense_stats`: the dense model, block by block, as the
    OWL code's first pass) strictly above M × their mean (its `check_outlier_mean`)."""
    ratios = []
    for i in range(lm.adapter.num_blocks(lm.model)):
        metrics = []
        for lin in lm.adapter.prunable_linears(lm.model, i):
            x = dense_stats[lin.name].x_sqnorm.to(lin.weight.device).float().sqrt().reshape(1, -1)
            metrics.append((lin.weight.float().abs() * x).reshape(-1))
        flat = torch.cat(metrics)
        ratios.append(int((flat > M * flat.mean()).sum()) / flat.numel())  # exact count
    return ratios


def owl_block_ratios(dense_stats: dict[str, LayerStats], lm: LoadedModel, sparsity: float,
                     cfg: OWLConfig, mapping: Literal["owl", "owl_band"] = "owl"
                     ) -> list[float]:
    """OWL (Yin et al., 2024): per-block sparsity s_i from the block's outlier ratio r_i
    (`owl_outlier_ratios`, threshold M); the mean of the s_i is s, and the block with the most
    outliers is pruned least.

    - ``mapping="owl"`` — as the OWL code computes it (luuyin/OWL, ``lib/prune_all.py``,
      ``prune_wanda_outlier``): r min–max scaled to [0, 2λ], re-centred on its mean, added to
      the keep ratio 1 − s; so s_i = s − 2λ (r_i − mean r) / (max r − min r). The spread
      max s_i − min s_i is exactly 2λ, and one side may reach up to 2λ from s.
    - ``mapping="owl_band"`` — this project's earlier mapping: s_i = s − λ (r_i − mean r) /
      max |r_j − mean r|; every s_i lies in [s − λ, s + λ] and the largest deviation is λ.

    When every block has the same outlier ratio (also with a single block) both give s to
    every block (the OWL code divides by max r − min r = 0 there: NaN). A block sparsity outside
    [0, 1) is refused naming λ (the OWL code instead raises a sparsity ≤ 0 to 0.01).
    """
    if mapping not in ("owl", "owl_band"):
        raise ValueError(f"OWL mapping must be 'owl' or 'owl_band'; got {mapping!r}")
    r = torch.tensor(owl_outlier_ratios(dense_stats, lm, cfg.M), dtype=torch.float64)
    dev = r - r.mean()
    width = float(r.max() - r.min()) if mapping == "owl" else float(dev.abs().max())
    if width == 0:
        scaled = torch.zeros_like(r)
    else:
        scaled = dev / width * (2 * cfg.lam if mapping == "owl" else cfg.lam)
    out = [float(sparsity - d) for d in scaled]
    for s in out:
        if not (0 <= s < 1):
            raise ValueError(
                f"OWL ({mapping}) produced a block sparsity {s:.3f} outside [0, 1) for target "
                f"{sparsity} and λ={cfg.lam}; lower λ"
            )
    return out


def kind_ratios(lm: LoadedModel, sparsity: float, offsets: dict[str, float]) -> dict[str, float]:
    """Per-kind sparsity for `layer_ratios = "by_kind"`: s_k = s + d_k − Σ_j n_j d_j / Σ_j n_j,
    with n_k the parameters of kind k over all blocks and d_k the offset (0 for kinds not
    named), so the model as a whole is pruned to `s` whatever the offsets. Shifting every offset
    by one constant changes nothing. Kinds the model lacks, or a ratio outside [0, 1), are
    refused with what the model has."""
    counts: dict[str, int] = {}
    for i in range(lm.adapter.num_blocks(lm.model)):
        for lin in lm.adapter.prunable_linears(lm.model, i):
            counts[lin.kind] = counts.get(lin.kind, 0) + lin.weight.numel()
    unknown = sorted(set(offsets) - set(counts))
    if unknown:
        raise ValueError(f"kind_offsets name layer kinds this model does not have: {unknown}; "
                         f"its kinds are {sorted(counts)}")
    total = sum(counts.values())
    mean = sum(offsets.get(k, 0.0) * n for k, n in counts.items()) / total if total else 0.0
    out = {k: sparsity + offsets.get(k, 0.0) - mean for k in sorted(counts)}
    bad = {k: round(v, 4) for k, v in out.items() if not 0 <= v < 1}
    if bad:
        raise ValueError(f"kind_offsets {offsets} at sparsity {sparsity} give kind sparsities "
                         f"outside [0, 1): {bad}; use smaller offsets")
    return out


def prune_model(lm: LoadedModel, spec: CandidateSpec, stats: StatsCache | None,
                snapshot: WeightSnapshot | None = None,
                progress: Callable[[int, int], None] | None = None) -> PruneResult:
    """Prune `lm.model` in place as `spec` says; mark touched layers dirty on `snapshot`."""
    method = get_method(spec.method)
    if not isinstance(method, PruningMethod):
        raise ValueError(
            f"method {spec.method!r} changes the model's shapes and cannot prune in place: use "
            "prunestudio.engine.structured.prune_structured(lm, spec, stats), which returns a "
            "pruned copy and leaves the model intact"
        )
    options = method.validate_options(spec.options)
    result = PruneResult()
    if spec.method == "dense":
        return result
    needs = method.needs(options)  # subset of {"x", "hessian", "grad"}
    calibrated = bool(needs & {"x", "hessian"})
    want_hessian = "hessian" in needs
    owl = spec.layer_ratios in ("owl", "owl_band")
    needs_stats = bool(needs) or owl or spec.reconstruction is not None
    if needs_stats and stats is None:
        raise ValueError(f"method {spec.method!r}"
                         + (" with reconstruction" if spec.reconstruction else "")
                         + " needs calibration data")
    computed_before = len(stats.computed) if stats else 0

    n_blocks = lm.adapter.num_blocks(lm.model)
    if owl:
        block_ratio = owl_block_ratios(stats.dense_layer_stats(), lm, spec.sparsity, spec.owl,
                                       mapping=spec.layer_ratios)
        result.block_ratios = block_ratio
    else:
        block_ratio = [spec.sparsity] * n_blocks
    by_kind = None
    if spec.layer_ratios == "by_kind":
        by_kind = result.kind_ratios = kind_ratios(lm, spec.sparsity, spec.kind_offsets or {})
    nm = (spec.pattern.n, spec.pattern.m) if spec.pattern.kind == "nm" else None
    grads = stats.gradients() if "grad" in needs else None

    fallback = get_method("magnitude")
    fallback_options = fallback.validate_options({})

    def plan_block(i: int, linears: list[PrunableLinear],
                   block_stats: dict[str, LayerStats]) -> list[LayerJob]:
        """The block's layers to prune with `method` (an uncalibrated one is pruned here, by
        magnitude); their targets recorded, the snapshot told."""
        layers: list[LayerJob] = []
        for lin in linears:
            target = LayerTarget(by_kind[lin.kind] if by_kind is not None else block_ratio[i], nm)
            inputs = LayerInputs(block_stats.get(lin.name), None if grads is None else grads[lin.name])
            if snapshot is not None:
                snapshot.mark([lin.name])
            if calibrated and inputs.stats is not None and inputs.stats.empty:
                result.uncalibrated.append(lin.name)
                fallback.prune_layer(lin, target, LayerInputs(), fallback_options)
            else:
                layers.append((lin, target, inputs))
            result.layer_targets[lin.name] = target.sparsity
        return layers

    def record(linears: list[PrunableLinear]) -> None:
        for lin in linears:
            result.layer_sparsity[lin.name] = realised_sparsity(lin.weight)
            result._numel[lin.name] = lin.weight.numel()

    def prune_block(i: int, linears: list[PrunableLinear], block_stats: dict[str, LayerStats]):
        method.prune_layers(plan_block(i, linears, block_stats), options)
        record(linears)

    def prune_all(block_stats: Callable[[list[PrunableLinear]], dict[str, LayerStats]]) -> None:
        """Every block from statistics known up front. On CPU as one `prune_layers` call (a
        method may overlap its layers' work across blocks; the statistics stay where they
        are), elsewhere block by block (moving one block's statistics to the device at a
        time)."""
        blocks = [lm.adapter.prunable_linears(lm.model, i) for i in range(n_blocks)]
        if lm.device.type != "cpu":
            for i, lins in enumerate(blocks):
                prune_block(i, lins, block_stats(lins))
                if progress:
                    progress(i + 1, n_blocks)
            return
        layers: list[LayerJob] = []
        last: list[int] = []  # per block, the index of its last layer in `layers`
        for i, lins in enumerate(blocks):
            layers += plan_block(i, lins, block_stats(lins))
            last.append(len(layers) - 1)
        finished = 0  # blocks whose layers are all pruned

        def done(j: int) -> None:
            nonlocal finished
            while finished < n_blocks and last[finished] <= j:
                record(blocks[finished])
                finished += 1
                if progress:
                    progress(finished, n_blocks)

        done(-1)  # blocks with nothing for `method` (every layer uncalibrated)
        method.prune_layers(layers, options, done=done)
        done(len(layers))

    if spec.reconstruction is not None:
        if not calibrated:
            def block_stats(i, lins, inputs):
                return {}
        elif spec.calibration.mode == "dense":
            dense = stats.dense_layer_stats(want_hessian=want_hessian)

            def block_stats(i, lins, inputs):
                return {lin.name: dense[lin.name].to(lm.device) for lin in lins}
        else:
            block_stats = collect_on_stream(want_hessian, lm.adapter.blocks(lm.model))
        result.reconstruction = reconstruct_sequentially(
            lm, stats.block_inputs(), block_stats, prune_block, spec.reconstruction, progress)
    elif not calibrated:
        prune_all(lambda lins: {})
    elif spec.calibration.mode == "dense":
        dense = stats.dense_layer_stats(want_hessian=want_hessian)
        prune_all(lambda lins: {lin.name: dense[lin.name].to(lm.device) for lin in lins})
    else:
        prune_sequentially(lm, stats.block_inputs(), prune_block,
                           want_hessian=want_hessian, progress=progress)
    if stats:
        result.stats_computed = stats.computed[computed_before:]
    return result
