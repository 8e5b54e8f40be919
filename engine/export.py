"""Writing an exported model safely: never delete what Prune Studio did not write.

`prunestudio export CANDIDATE DIR` used to `rmtree(DIR)` under `--force`; pointed at the current
folder, the store's folder or the model's folder, that deleted a user's store and weights. Now:

- DIR must not be, or contain, the store, the source model, Prune Studio's cache or the current
  directory (each named in the refusal);
- an existing file at DIR is refused;
- a non-empty DIR is replaced (only with `--force`) when every entry in it is listed in the
  card (`prunestudio.json`) of a previous export; any other file is named and refused;
- the export is written into a temporary sibling folder and renamed into place, so a crash (or a
  failing save) leaves the previous export as it was. The previous export is removed only after
  the new one is in place, and it held nothing but files an export wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prunestudio.engine.structured.export import EXPORT_CARD


class ExportTargetError(ValueError):
    """DIR cannot receive an export (the message names what is in the way)."""


@dataclass(frozen=True)
class ExportTarget:
    """A checked export folder: `path` (resolved) and whether a previous export is replaced."""

    path: Path
    replaces_previous: bool


def _previous_export_files(folder: Path) -> set[str] | None:
    """The files a previous export listed in its card, or None when there is no valid card."""
    card = folder / EXPORT_CARD
    if not card.is_file():
        return None
    try:
        files = json.loads(card.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _entries(folder: Path) -> list[str]:
    """Every file and folder under `folder`, relative, folders with a trailing slash."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out.append(rel + "/" if p.is_dir() and not p.is_symlink() else rel)
    return out


def check_export_target(directory: str | os.PathLike[str], *, force: bool,
                        protected: Mapping[str, str | os.PathLike[str] | None]) -> ExportTarget:
    """Refuse a DIR that an export would damage; return the checked target.

    `protected`: what must survive, by what it is ("store", "source model", "current
    directory", ...) → path. DIR may be neither one of them nor a folder above one."""
    given = Path(directory).expanduser()
    target = Path(os.path.abspath(given))
    real = target.resolve()
    clashes = []
    for what, path in protected.items():
        if path is None:
            continue
        p = Path(path).expanduser().resolve()
        if real == p or real in p.parents:
            clashes.append(f"{'is' if real == p else 'contains'} the {what} ({p})")
    if clashes:
        raise ExportTargetError(
            f"export folder {given} {' and '.join(clashes)}; an export replaces its folder, "
            "so give a new folder of its own, e.g. exports/candidate-N")
    if target.exists() and not target.is_dir():
        raise ExportTargetError(f"export target {given} is an existing file, not a folder; give "
                                "a new folder path (the export writes config, weights and "
                                "tokenizer files into it)")
    if not target.is_dir():
        return ExportTarget(target, replaces_previous=False)
    entries = _entries(target)
    if not entries:
        return ExportTarget(target, replaces_previous=False)
    if not force:
        raise ExportTargetError(
            f"{given} is not empty; choose a new folder, or pass --force to replace a previous "
            "export there (only a folder holding nothing but a previous export's files)")
    listed = _previous_export_files(target)
    if listed is None:
        shown = ", ".join(entries[:8]) + (f", … ({len(entries)} entries)" if len(entries) > 8
                                          else "")
        raise ExportTargetError(
            f"{given} holds files that no prunestudio export wrote ({shown}; no "
            f"{EXPORT_CARD} listing them): --force replaces only a previous export; choose "
            "another folder")
    foreign = [e for e in entries if e.rstrip("/") not in listed
               and not any(f.startswith(e) for f in listed if e.endswith("/"))]
    if foreign:
        shown = ", ".join(foreign[:8]) + (f", … ({len(foreign)} entries)" if len(foreign) > 8
                                          else "")
        raise ExportTargetError(
            f"{given} holds a previous export plus files it did not write ({shown}): --force "
            "replaces only what an export wrote; move those files or choose another folder")
    return ExportTarget(target, replaces_previous=True)


def write_export(target: ExportTarget, write: Callable[[Path], object]) -> object:
    """Run `write(tmp)` into a new temporary sibling of the target, then move it into place.

    A failing `write` removes only the temporary folder (which this function created); the
    previous export is replaced only once the new one is complete."""
    parent = target.path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.path.name}.exporting-", dir=parent))
    except OSError as exc:
        raise ExportTargetError(f"cannot write an export next to {target.path}: "
                                f"{exc.strerror or exc}") from exc
    try:
        result = write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.path.exists():
        if target.replaces_previous:
            old = Path(tempfile.mkdtemp(prefix=f".{target.path.name}.previous-", dir=parent))
            os.rmdir(old)
            os.rename(target.path, old)
        # else: an empty folder, which rename() replaces
    try:
        os.rename(tmp, target.path)
    except OSError:
        if old is not None:
            os.rename(old, target.path)  # put the previous export back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old)  # a previous export: nothing but files an export wrote (checked)
    return result
