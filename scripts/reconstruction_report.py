"""Reconstruction (Shin et al. 2024) from a store of grid studies with reconstructed
candidates: per study (its calibration text), method × {none, LR, BR, BR+GP} held-out PPL of
every evaluation role and the calibration error against the dense model; then every sweep
(candidates equal but for epochs or samples) with its calibration error and held-out PPL, and
the overfitting warnings (the schema's rule, as `show` prints them).

    .venv/bin/python scripts/reconstruction_report.py STORE [--markdown]

Reads the store through its record API only.
"""

from __future__ import annotations

import argparse
import sys

from prunestudio.store import open_store, queries
from report_tables import print_table

from prunestudio.schema import Candidate
from prunestudio.schema.labels import RECONSTRUCTION_TITLES, spec_label
from prunestudio.schema.overfitting import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    overfitting_warnings,
    sweep_points,
)

MODES = ("none", "lr", "br", "gp")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _calib(c: Candidate) -> float | None:
    return c.value(CALIBRATION_ERROR, RECONSTRUCTION_ROLE)


def _mode(c: Candidate) -> str:
    recipe = c.spec.get("reconstruction")
    return "none" if not recipe else str(recipe.get("mode"))


def mode_table(cands: list[Candidate], roles: list[str], markdown: bool) -> None:
    """Rows: the pruned specs (without reconstruction); columns: role × mode, calib × mode."""
    done = [c for c in cands if c.status == "done" and not c.is_dense]
    dense = next((c for c in cands if c.is_dense and c.status == "done"), None)
    groups: dict[str, dict[str, Candidate]] = {}
    for c in done:
        base = spec_label({**dict(c.spec), "reconstruction": None})
        groups.setdefault(base, {})
        groups[base].setdefault(_mode(c), c)  # the first recorded (a sweep's others below)
    modes = [m for m in MODES if any(m in g for g in groups.values())]
    titles = {m: "none" if m == "none" else RECONSTRUCTION_TITLES[m] for m in modes}
    cols = ["candidate"] + [f"{r} {titles[m]}" for r in roles for m in modes] + [
        f"calib err {titles[m]}" for m in modes if m != "none"]
    rows = []
    if dense is not None:
        rows.append(["dense"] + [_fmt(dense.ppl(r).value if dense.ppl(r) and m == "none"
                                      else None) for r in roles for m in modes]
                    + ["—"] * (len(modes) - 1))
    for base, by_mode in groups.items():
        row = [base]
        for r in roles:
            for m in modes:
                c = by_mode.get(m)
                row.append(_fmt(c.ppl(r).value if c is not None and c.ppl(r) else None))
        row += [_fmt(_calib(by_mode[m]) if m in by_mode else None, 4) for m in modes
                if m != "none"]
        rows.append(row)
    print_table(cols, rows, markdown)


def sweeps(cands: list[Candidate], roles: list[str], markdown: bool) -> None:
    for variable in ("epochs", "samples"):
        for label, points in sweep_points(cands, variable).items():
            print(f"\nsweep over {variable}: {label}")
            cols = [variable, "calib err", *(f"PPL {r}" for r in roles)]
            rows = [["all" if v is None else str(v), _fmt(_calib(c), 4),
                     *(_fmt(c.ppl(r).value if c.ppl(r) else None) for r in roles)]
                    for v, c in points]
            print_table(cols, rows, markdown)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    with open_store(args.store, readonly=True) as store:
        for study in queries.study_records(store):
            cands = store.candidate_records(study.id)
            if not any(c.spec.get("reconstruction") for c in cands):
                continue
            roles = list(study.evaluation_roles)
            calibration = study.config.get("calibration", {})
            print(f"\n## {study.name}: calibration {calibration.get('source')} "
                  f"{calibration.get('n')} × {calibration.get('seqlen')}\n")
            mode_table(cands, roles, args.markdown)
            sweeps(cands, roles, args.markdown)
            for w in overfitting_warnings(cands, roles):
                print(f"warning: {w.text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
