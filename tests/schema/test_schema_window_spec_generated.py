"""Window sets of the generated source `self` (text sampled from the model, Shin et al. 2024):
generation settings, what such a window set takes, [calibration] only, and text sources'
window sets (and so every recorded config and hash) unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pydantic
import pytest
from prunestudio.engine.studies.config import load_config, merge_window_overrides

from prunestudio.schema import SHAPE_ONLY
from prunestudio.schema.canonical import canonical_json
from prunestudio.schema.recovery import RecoverySettings
from prunestudio.schema.study_file import ConfigError, parse_config
from prunestudio.schema.window_spec import GenerationSettings, WindowSpec

SELF = {"source": "self", "seqlen": 64, "n": 8}
TEXT_SOURCES = "pydoc, shakespeare"  # the start of the list of text sources a refusal names


def _config(**over) -> dict:
    data = {
        "calibration": dict(SELF),
        "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "n": 2}}],
        "grid": {"methods": ["magnitude"]},
    }
    data.update(over)
    return data


def test_generation_settings_defaults_and_ranges() -> None:
    s = GenerationSettings()
    assert (s.prefix, s.temperature, s.top_k, s.top_p) == (5, 1.0, 50, 1.0)
    assert GenerationSettings(top_k=None, top_p=0.9, prefix=1).top_k is None
    for bad in ({"prefix": 0}, {"temperature": 0}, {"top_k": 0}, {"top_p": 0},
                {"top_p": 1.01}, {"seed": 1}):
        with pytest.raises(pydantic.ValidationError):
            GenerationSettings(**bad)


def test_a_self_window_set_gets_its_split_and_default_generation() -> None:
    w = WindowSpec(**SELF)
    assert w.split == "generated" and w.generation == GenerationSettings()
    assert w.model_dump()["generation"] == {"prefix": 5, "temperature": 1.0, "top_k": 50,
                                            "top_p": 1.0}
    given = WindowSpec(**SELF, generation={"top_k": None, "temperature": 0.7})
    assert given.generation.top_k is None and given.generation.prefix == 5
    assert WindowSpec.model_validate(given.model_dump()) == given  # round trip


@pytest.mark.parametrize("extra, message", [
    ({"n": None}, "give n"),
    ({"offset": 100}, "offset = 100 means nothing"),
    ({"end": 5000}, "end = 5000 means nothing"),
    ({"selection": "random"}, "selection = 'random' means nothing"),
    ({"selection": "documents"}, "selection = 'documents' means nothing"),
    ({"split": "train"}, "has no split 'train'; allowed: generated"),
])
def test_what_a_self_window_set_refuses(extra: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        WindowSpec(**{**SELF, **extra})


def test_text_sources_take_no_generation_and_dump_as_before() -> None:
    with pytest.raises(pydantic.ValidationError, match="leave generation out"):
        WindowSpec(source="pydoc", generation={})
    w = WindowSpec(source="pydoc", n=4, offset=40000)
    assert w.generation is None
    assert w.model_dump(mode="json") == {"source": "pydoc", "split": "all", "seqlen": 128,
                                         "n": 4, "offset": 40000, "end": None,
                                         "selection": "contiguous", "seed": 0}
    assert "generation" not in w.model_dump_json()
    # the embedded default study records exactly what it did before
    recorded = load_config().to_dict()
    assert "generation" not in canonical_json(recorded)


def test_shape_only_reads_back_a_recorded_self_window_set() -> None:
    recorded = WindowSpec(**SELF, generation={"top_k": 40}).model_dump(mode="json")
    back = WindowSpec.model_validate(recorded, context=SHAPE_ONLY)
    assert back.model_dump(mode="json") == recorded
    # shape only looks nothing up: no default filled in, nothing refused
    bare = WindowSpec.model_validate({"source": "self", "n": 2}, context=SHAPE_ONLY)
    assert bare.generation is None and "generation" not in bare.model_dump()


def test_a_study_calibrates_on_self() -> None:
    config = parse_config(_config(calibration={**SELF, "generation": {"prefix": 3}}))
    assert config.calibration.generation == GenerationSettings(prefix=3)
    recorded = config.to_dict()
    assert recorded["calibration"]["generation"]["prefix"] == 3
    assert parse_config(recorded).to_dict() == recorded  # a resume re-validates it in full


@pytest.mark.parametrize("over, where", [
    ({"evaluation": [{"role": "in_domain", "windows": dict(SELF)}]},
     "an evaluation set ([[evaluation]] 'in_domain')"),
    ({"study": {"kind": "gp"}, "grid": {}, "search": {"split": dict(SELF)}},
     "the search split ([search] split)"),
    ({"study": {"kind": "predictor"}, "grid": {}, "predictor": {"split": dict(SELF)}},
     "the search split ([predictor] split)"),
    ({"study": {"kind": "tpe"}, "grid": {},
      "tpe": {"splits": [{"source": "pydoc", "n": 2}, dict(SELF)]}},
     "an objective text ([tpe] splits[1])"),
    ({"recovery": {"windows": dict(SELF)}}, "recovery training windows"),
])
def test_self_is_refused_anywhere_but_calibration(over: dict, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(calibration={"source": "pydoc", "n": 4}, **over))
    text = str(info.value)
    assert ("text source 'self' is generated from the model and is for [calibration] only, "
            f"not {where}") in text
    assert TEXT_SOURCES in text and "wikitext2" in text


def test_recovery_needs_its_own_text_after_self_calibration() -> None:
    with pytest.raises(ConfigError, match=r"\[recovery\] trains on the calibration text by "
                       r"default.*give \[recovery\] windows"):
        parse_config(_config(recovery={"best": 1}))
    ok = parse_config(_config(recovery={"windows": {"source": "pydoc", "n": 4, "seqlen": 64}}))
    assert ok.recovery.windows.source == "pydoc"
    with pytest.raises(pydantic.ValidationError, match="for \\[calibration\\] only"):
        RecoverySettings(windows={"source": "self", "n": 4})


def test_tpe_pool_of_generated_windows() -> None:
    config = parse_config(_config(study={"kind": "tpe"}, grid={}, tpe={"samples": 4}))
    assert config.calibration.source == "self" and config.tpe.samples == 4
    with pytest.raises(ConfigError, match="pool has only 8"):
        parse_config(_config(study={"kind": "tpe"}, grid={}, tpe={"samples": 9}))


def test_calib_override_switches_to_self() -> None:
    base = load_config().to_dict()["calibration"]
    base = {**base, "offset": 4096, "end": 9000}
    merged = merge_window_overrides(base, {"source": "self", "n": 8,
                                           "generation.top_k": "none",
                                           "generation.temperature": 0.8})
    assert {"offset", "end", "split", "selection"}.isdisjoint(merged)
    assert merged["generation"] == {"top_k": None, "temperature": 0.8}
    w = WindowSpec.model_validate(merged)
    assert (w.n, w.seqlen, w.generation.top_k, w.generation.temperature) == (
        8, base["seqlen"], None, 0.8)
    back = merge_window_overrides(w.model_dump(), {"source": "pydoc"})
    assert "generation" not in back and WindowSpec.model_validate(back).split == "all"


def test_a_self_calibrated_config_reads_back_without_torch(tmp_path: Path) -> None:
    recorded = parse_config(_config()).to_dict()
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'lm_eval'):
                    raise ImportError(f'blocked: {name}')
        sys.meta_path.insert(0, _Block())
        from prunestudio.schema import SHAPE_ONLY
        from prunestudio.schema.study_file import parse_config
        recorded = json.load(open('recorded.json'))
        config = parse_config(recorded, context=SHAPE_ONLY)
        assert config.to_dict() == recorded
        print('generation', config.calibration.generation.top_k)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "generation 50" in out.stdout
