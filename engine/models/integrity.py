"""Cheap integrity checks of model files, made before any weight is read.

A download cut short loads as garbage or fails deep inside a reader (`struct.error`, `cannot
reshape array of size 399424 into shape (576,960)`). Both formats here say in their header how
long the file must be, so a truncated file is caught from its header alone, in milliseconds:

* GGUF: magic, version, metadata, tensor table (name, shape, type, offset), then the tensor data
  at the next alignment boundary; the file must reach the end of the last tensor.
* safetensors: an 8-byte header length, a JSON header with each tensor's byte range; the file
  must reach the end of the last range.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path


class CorruptModelFileError(ValueError):
    """A model file that is truncated or not what its name says."""


class _Cut(Exception):
    """The header runs past the end of the file (internal)."""

    def __init__(self, need: int):
        self.need = need


# GGUF metadata value types (gguf.GGUFValueType): the fixed-size ones and their struct formats
_GGUF_FORMAT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                10: "<Q", 11: "<q", 12: "<d"}
_GGUF_WIDTH = {t: struct.calcsize(f) for t, f in _GGUF_FORMAT.items()}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# llama.cpp architecture names that differ from transformers' model_type
_GGUF_ARCH_TO_MODEL_TYPE = {"gptneox": "gpt_neox", "qwen2moe": "qwen2_moe", "gpt-oss": "gpt_oss"}


@dataclass(frozen=True)
class GGUFSummary:
    path: Path
    version: int
    architecture: str | None  # general.architecture as llama.cpp names it
    n_tensors: int
    data_offset: int
    expected_bytes: int  # where the last tensor's data ends
    file_bytes: int

    @property
    def model_type(self) -> str | None:
        """The transformers `model_type` this file's architecture loads as."""
        if self.architecture is None:
            return None
        return _GGUF_ARCH_TO_MODEL_TYPE.get(self.architecture, self.architecture)


def _corrupt(path: Path, why: str, hint: str = "") -> CorruptModelFileError:
    return CorruptModelFileError(
        f"GGUF file {path} is truncated or corrupt: {why}"
        + (f". {hint}" if hint else ". Download it again (compare its size with the source's)")
    )


class _Reader:
    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, fmt: str):
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Cut(self.pos + n)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return values

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Cut(self.pos + max(n, 0))
        self.pos += n

    def string(self) -> bytes:
        (n,) = self.take("<Q")
        if self.pos + n > self.size:
            raise _Cut(self.pos + n)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out


def _skip_value(r: _Reader, value_type: int, path: Path):
    """Skip one metadata value; return it when it is a string or an integer (else None)."""
    if value_type in _GGUF_FORMAT:
        (value,) = r.take(_GGUF_FORMAT[value_type])
        return value
    if value_type == _GGUF_STRING:
        return r.string()
    if value_type == _GGUF_ARRAY:
        element_type, count = r.take("<IQ")
        if element_type in _GGUF_WIDTH:
            r.skip(count * _GGUF_WIDTH[element_type])
        elif element_type == _GGUF_STRING:
            for _ in range(count):
                (n,) = r.take("<Q")
                r.skip(n)
        else:
            raise _corrupt(path, f"metadata array of unknown element type {element_type}")
        return None
    raise _corrupt(path, f"metadata value of unknown type {value_type} at byte {r.pos - 4}")


def _tensor_bytes(shape: tuple[int, ...], ggml_type: int) -> int | None:
    import gguf

    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


def check_gguf_file(path: str | Path, hint: str = "") -> GGUFSummary:
    """Parse the header of a GGUF file and check that the file holds every tensor's data.

    Raises CorruptModelFileError naming the file, what is wrong, and for a truncated file the
    bytes expected and found. `hint` replaces the default advice (download it again)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if len(magic) == 4 and magic != b"GGUF":
        raise CorruptModelFileError(
            f"{path} is not a GGUF file: it does not start with the GGUF magic bytes "
            f"(found {magic!r})")
    if size < 24:
        raise _corrupt(path, f"expected at least a 24-byte header, found {size} bytes", hint)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        r = _Reader(buf, size)
        r.skip(4)
        try:
            (version,) = r.take("<I")
            if version not in (2, 3):
                raise CorruptModelFileError(
                    f"GGUF file {path} has format version {version}; supported: 2 and 3 "
                    "(convert it again with a current llama.cpp)")
            n_tensors, n_kv = r.take("<QQ")  # every entry takes bytes: a cut ends the loops
            architecture, alignment = None, 32
            for _ in range(n_kv):
                key = r.string()
                (value_type,) = r.take("<I")
                value = _skip_value(r, value_type, path)
                if key == b"general.architecture" and isinstance(value, bytes):
                    architecture = value.decode("utf-8", "replace")
                elif key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            end = 0
            for _ in range(n_tensors):
                name = r.string()
                (n_dims,) = r.take("<I")
                if n_dims > 8:
                    raise _corrupt(path, f"tensor {name.decode('utf-8', 'replace')!r} has "
                                   f"{n_dims} dimensions", hint)
                dims = r.take(f"<{n_dims}Q")
                ggml_type, offset = r.take("<IQ")
                nbytes = _tensor_bytes(dims, ggml_type)
                if nbytes is None:
                    raise _corrupt(path, f"tensor {name.decode('utf-8', 'replace')!r} has "
                                   f"unknown type {ggml_type}", hint)
                end = max(end, offset + nbytes)
        except _Cut as cut:
            raise _corrupt(path, f"its header is cut short: expected at least {cut.need} "
                           f"bytes, found {size}", hint) from None
        data_offset = -(-r.pos // alignment) * alignment
        expected = data_offset + end
    if expected > size:
        raise _corrupt(path, f"the data of its {n_tensors} tensors ends at byte {expected}: "
                       f"expected at least {expected} bytes, found {size} ({expected - size} "
                       "missing)", hint)
    return GGUFSummary(path, version, architecture, n_tensors, data_offset, expected, size)


def check_safetensors_file(path: str | Path) -> None:
    """The file holds the byte range of every tensor its header lists."""
    path = Path(path)
    size = path.stat().st_size

    def bad(why: str) -> CorruptModelFileError:
        return CorruptModelFileError(f"weights file {path} is truncated or corrupt: {why}. "
                                     "Save or download it again")

    if size < 8:
        raise bad(f"expected at least an 8-byte header, found {size} bytes")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if 8 + n > size:
            raise bad(f"its header needs {8 + n} bytes, found {size}")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise bad(f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    end = max((t["data_offsets"][1] for k, t in header.items()
               if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t),
              default=0)
    expected = 8 + n + end
    if expected > size:
        raise bad(f"its tensors end at byte {expected}, but the file has {size} bytes "
                  f"(expected at least {expected} bytes, found {size})")
