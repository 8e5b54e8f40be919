"""The [predictor] section of a study file: defaults, the kind it belongs to, clear errors,
the derived search split and budget, and a recorded config that reads back as recorded (also
without the engine). The embedded model's config parses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prunestudio.engine.studies.config import load_config
from prunestudio.engine.study.proposers import proposer_kinds

from prunestudio.schema import SEARCH_KINDS, SHAPE_ONLY, Study
from prunestudio.schema.study_file import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[3]


def _config(**predictor) -> dict:
    data = {"study": {"kind": "predictor", "seed": 1},
            "calibration": {"source": "pydoc", "seqlen": 64, "n": 4},
            "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "n": 2}}],
            "tasks": {"names": ["offline"], "limit": 8}}
    if predictor:
        data["predictor"] = predictor
    return data


def test_predictor_is_a_search_kind_ranked_by_the_search_split():
    assert "predictor" in proposer_kinds() and "predictor" in SEARCH_KINDS
    config = parse_config(_config(rounds=2, samples_per_round=5, top_k=3))
    assert config.is_search and config.predictor.real_budget == 13
    assert config.search.budget == 13 and config.search.finalists == 0  # derived, not recorded
    assert config.search.split == config.predictor.split
    recorded = config.to_dict()
    assert "search" not in recorded and recorded["tasks"]["names"] == ["shakespeare_next_line"]
    again = parse_config(recorded)
    assert again == config and parse_config(recorded, context=SHAPE_ONLY).to_dict() == recorded
    assert Study.of({"id": 1, "kind": "predictor", "model": "m", "status": "created",
                     "config": recorded}).primary_role == "search"


@pytest.mark.parametrize(("data", "message"), [
    (_config(budget=1.2), "predictor.budget"),
    (_config(budget=0.1, tolerance=0.2), "tolerance (0.2) must be smaller than the budget"),
    (_config(mlp_range=[0.5, 0.2]), "0 ≤ lo ≤ hi < 1"),
    (_config(attention=False, mlp=False), "nothing to search"),
    (_config(importance="bogus"), "predictor.importance"),
    (_config(baselines=["wanda"]), "predictor.baselines"),
    (_config(sampels_per_round=3), "predictor.sampels_per_round: unknown key"),
    ({**_config(), "search": {"population": 4}}, "a predictor study's search split is "
                                                 "predictor.split"),
    ({**_config(rounds=1), "study": {"kind": "grid"}}, "[predictor] is for study.kind = "
                                                        "'predictor'"),
])
def test_bad_predictor_sections_are_clear_errors(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert message in str(err.value)


def test_the_embedded_models_config_parses():
    config = load_config(ROOT / "configs" / "predictor-smollm2.toml")
    p = config.predictor
    assert (p.budget, p.rounds, p.importance) == (0.2, 3, "taylor_second")
    assert config.tasks.names == ["shakespeare_next_line"]


def test_a_recorded_predictor_config_reads_without_torch(tmp_path):
    recorded = parse_config(_config(rounds=2)).to_dict()
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    script = tmp_path / "reader.py"
    script.write_text("""
import json, sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'lm_eval', 'lightgbm'):
            raise ImportError(f'blocked: {name}')
sys.meta_path.insert(0, _Block())
from prunestudio.schema import SHAPE_ONLY
from prunestudio.schema.study_file import parse_config
recorded = json.load(open('recorded.json'))
config = parse_config(recorded, context=SHAPE_ONLY)
assert config.to_dict() == recorded
print('ok', config.predictor.rounds, config.search.budget)
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok 2 36" in out.stdout
