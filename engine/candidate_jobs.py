"""Work on one recorded candidate after its study ran (`prunestudio export`, `prunestudio eval`):
find it, refuse what cannot work before anything loads, and rebuild its study's context — the
model loaded fresh, the recorded calibration and evaluation windows — so that it can be
re-pruned from its spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunestudio.engine.progress import Reporter
from prunestudio.store import open_store

from prunestudio.schema.study_file import ConfigError, StudyConfig, parse_config


def recorded_candidate(store_path: str | Path, candidate_id: int, action: str, *,
                       lock_timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(candidate, study) of a recorded candidate that `action` may re-prune: a failed one is
    refused before anything loads (it would fail again), naming its recorded error."""
    with open_store(store_path, readonly=True, timeout=lock_timeout) as store:
        cand = store.candidate(candidate_id)
        study = store.get_study(cand["study_id"])
    if cand["status"] == "failed":
        first = (cand.get("error") or "no error recorded").strip().splitlines()[0]
        raise ConfigError(
            f"candidate {cand['id']} of study {study['name']} failed when the study ran "
            f"({first}); {action} re-prunes it from its spec, which would fail again. "
            f"`prunestudio show {study['name']}` lists its error; pick a candidate with status "
            "done")
    return cand, study


def recorded_config(study: dict[str, Any]) -> StudyConfig:
    """The config a study recorded, parsed. A search recorded before the noise-aware fitness
    existed (its recorded [search] has no `noise_aware`) keeps the search it was started with:
    the paper's, `noise_aware = false` — a resume never changes a search's rules midway."""
    raw = study["config"]
    search = raw.get("search") if isinstance(raw, dict) else None
    if isinstance(search, dict) and "noise_aware" not in search:
        raw = {**raw, "search": {**search, "noise_aware": False}}
    return parse_config(raw, f"(study {study['name']})")


def candidate_context(store_path: str | Path, cand: dict[str, Any], study: dict[str, Any],
                      config: StudyConfig, reporter: Reporter, action: str, *,
                      allow_changed_inputs: bool = False, lock_timeout: float = 30.0):
    """The StudyContext of a recorded candidate: `config` (its study's recorded config, the
    device and dtype possibly changed) with the model loaded fresh and the study's calibration
    and evaluation windows — refused when the model or the text's fingerprints differ from the
    recorded ones (unless `allow_changed_inputs`: then a warning event is recorded)."""
    from prunestudio.engine.models.loading import validate_model_options
    from prunestudio.engine.runner import check_inputs_unchanged, prepare

    validate_model_options(config.model.device, config.model.dtype)
    ctx = prepare(config, reporter)
    with open_store(store_path, readonly=not allow_changed_inputs, timeout=lock_timeout) as store:
        check_inputs_unchanged(store, study, ctx, allow=allow_changed_inputs, candidates=[cand],
                               action=f"{action} candidate {cand['id']}")
    return ctx


def protected_paths(store_path: str | Path, study: dict[str, Any]) -> dict[str, Path | None]:
    """What an export folder may neither be nor contain: the store, the study's source model
    (a folder or file on disk), the cache, the current directory."""
    from prunestudio.engine.models.loading import DEFAULT_MODEL, default_gguf_path
    from prunestudio.engine.paths import cache_root

    source = study["model"]
    if source in (DEFAULT_MODEL, "", None):
        model_path: Path | None = default_gguf_path()
    else:
        model_path = Path(str(source)).expanduser()
        if not model_path.exists():
            model_path = None  # a hub id: nothing on disk to protect
    return {"store": Path(store_path), "source model": model_path,
            "Prune Studio cache": cache_root(), "current directory": Path.cwd()}



def reprune(args: Any, cand: dict[str, Any], study: dict[str, Any], config: StudyConfig,
            reporter: Reporter, action: str):
    """A recorded candidate re-pruned on a fresh load of its study's model (inputs checked):
    returns (StudyContext, CandidateSpec, pruned LoadedModel, PruneResult | None,
    StructuredInfo | None). `args`: the command's (store, allow_changed_inputs,
    lock_timeout)."""
    from prunestudio.engine.runner import pruned_model

    from prunestudio.schema.spec import CandidateSpec

    ctx = candidate_context(args.store, cand, study, config, reporter, action,
                            allow_changed_inputs=args.allow_changed_inputs,
                            lock_timeout=args.lock_timeout)
    spec = CandidateSpec.model_validate(cand["spec"])
    lm, result, structured = pruned_model(ctx, spec, reporter)
    return ctx, spec, lm, result, structured
