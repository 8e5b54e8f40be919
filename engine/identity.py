"""What a recorded result was computed on, and the refusal to mix it with something else.

Every candidate records the fingerprint of the model it pruned (`info.model_fingerprint`), the
hash of its calibration tokens (`info.calibration_tokens_hash`) and, per perplexity, the hash of
the evaluation tokens (`protocol.tokens_hash`). Resume, export and eval load the model and cut
the windows again; if any of these differ from the record (the model folder was replaced, the
corpus package changed, another tokenizer), the new results would be silently compared with the
old ones — so they are refused, naming both values, unless the user passes
`--allow-changed-inputs`, which is then recorded as a warning event of the study.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALLOW_FLAG = "--allow-changed-inputs"


class IdentityMismatchError(ValueError):
    """The model or text now at hand differs from the one the study's results were computed on."""


@dataclass(frozen=True)
class Identity:
    """Fingerprints of a study's inputs: the model, the calibration and evaluation tokens."""

    model: str | None = None
    calibration: str | None = None
    evaluation: dict[str, str] = field(default_factory=dict)  # role -> tokens hash
    model_aliases: tuple[str, ...] = ()  # what older releases recorded for the same weights

    @classmethod
    def of_context(cls, ctx: Any) -> Identity:
        """The identity of a prepared study context (engine.runner.StudyContext)."""
        aliases = getattr(ctx.lm, "fingerprint_aliases", ())
        return cls(ctx.lm.fingerprint, ctx.calibration.tokens_hash,
                   {ev.role: ev.windows.tokens_hash for ev in ctx.evaluations},
                   tuple(aliases))


@dataclass(frozen=True)
class RecordedIdentity:
    """The identity recorded by candidates, with the candidate id that recorded each value."""

    model: tuple[str, int] | None = None
    calibration: tuple[str, int] | None = None
    evaluation: dict[str, tuple[str, int]] = field(default_factory=dict)


def recorded_identity(candidates: Iterable[Mapping[str, Any]]) -> RecordedIdentity:
    """The first recorded value of each fingerprint among `candidates` (with metrics)."""
    model = calibration = None
    evaluation: dict[str, tuple[str, int]] = {}
    for c in candidates:
        info = c.get("info") or {}
        if model is None and info.get("model_fingerprint"):
            model = (str(info["model_fingerprint"]), int(c["id"]))
        if calibration is None and info.get("calibration_tokens_hash"):
            calibration = (str(info["calibration_tokens_hash"]), int(c["id"]))
        for m in c.get("metrics") or ():
            proto = m.get("protocol") or {}
            if (m.get("name") == "ppl" and proto.get("tokens_hash") and "reused_from" not in proto
                    and m.get("role") not in evaluation):
                evaluation[str(m["role"])] = (str(proto["tokens_hash"]), int(c["id"]))
    return RecordedIdentity(model, calibration, evaluation)


def mismatches(recorded: RecordedIdentity, current: Identity, *, model_source: str) -> list[str]:
    """One sentence per input that differs from its record (empty: everything matches)."""
    out = []
    if (recorded.model and current.model
            and recorded.model[0] not in (current.model, *current.model_aliases)):
        out.append(f"the model {model_source!r} now has fingerprint {current.model}, but "
                   f"candidate {recorded.model[1]} was computed on fingerprint "
                   f"{recorded.model[0]} (the model files changed)")
    if (recorded.calibration and current.calibration
            and recorded.calibration[0] != current.calibration):
        out.append(f"the calibration tokens now hash to {current.calibration}, but candidate "
                   f"{recorded.calibration[1]} used {recorded.calibration[0]} (the text or the "
                   "tokenizer changed)")
    for role, (value, cid) in sorted(recorded.evaluation.items()):
        now = current.evaluation.get(role)
        if now is not None and now != value:
            out.append(f"the evaluation text {role!r} now hashes to {now}, but candidate {cid} "
                       f"was measured on {value} (the text or the tokenizer changed)")
    return out


def check_identity(recorded: RecordedIdentity, current: Identity, *, model_source: str,
                   action: str, allow: bool) -> list[str]:
    """Raise IdentityMismatchError naming every difference unless `allow`; return them."""
    found = mismatches(recorded, current, model_source=model_source)
    if found and not allow:
        raise IdentityMismatchError(
            f"refusing to {action}: " + "; ".join(found) + ". Results computed on other inputs "
            f"would be mixed with the recorded ones. If this is intended, pass {ALLOW_FLAG} "
            "(recorded as a warning event of the study)")
    return found
