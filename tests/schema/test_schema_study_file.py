"""The study file, candidate specs and method options are torch-free schema types.

Full validation (names checked, option defaults filled in) goes through the engine's catalog;
a torch-free reader validates a recorded config with ``SHAPE_ONLY``. Each subprocess here
blocks torch, transformers and lm-eval from being imported at all, so "works without torch" is
what is tested, not just "did not happen to import it".
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prunestudio.engine.studies.config import load_config

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import ConfigError, parse_config

_BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('torch', 'transformers', 'lm_eval'):
                raise ImportError(f'blocked: {name}')
    sys.meta_path.insert(0, _Block())
""")


def _without_torch(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "reader.py"
    script.write_text(_BLOCK_TORCH + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path)


def _gp_config() -> dict:
    return {
        "study": {"kind": "gp", "seed": 3},
        "calibration": {"source": "pydoc", "seqlen": 64, "n": 4},
        "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "n": 2}}],
        "search": {"population": 4, "iterations": 1, "seed_metrics": ["wanda"],
                   "baselines": ["dense", "wanda"]},
    }


@pytest.mark.parametrize("which", ["default", "gp"])
def test_a_recorded_config_reads_back_without_torch(which: str, tmp_path: Path) -> None:
    config = load_config() if which == "default" else parse_config(_gp_config())
    recorded = config.to_dict()
    (tmp_path / "recorded.json").write_text(json.dumps(recorded))
    out = _without_torch("""
        import json
        from prunestudio.schema import SHAPE_ONLY, CatalogMissingError
        from prunestudio.schema.spec import CandidateSpec
        from prunestudio.schema.study_file import parse_config
        recorded = json.load(open('recorded.json'))
        config = parse_config(recorded, context=SHAPE_ONLY)
        assert config.to_dict() == recorded, (config.to_dict(), recorded)
        for spec in recorded.get('candidates', []):
            assert CandidateSpec.model_validate(spec, context=SHAPE_ONLY).canonical() == spec
        try:  # full validation needs the engine: said, never half-done
            parse_config(recorded)
        except CatalogMissingError as exc:
            print('refused:', exc)
        bad = [m for m in sys.modules if m.startswith(('torch', 'prunestudio.engine'))]
        print('kind', config.study.kind, 'imported', bad)
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"kind {recorded['study']['kind']} imported []" in out.stdout
    assert "refused: checking method, source, task and expression names needs" in out.stdout


def test_full_validation_fills_defaults_and_checks_names() -> None:
    config = parse_config(_gp_config())
    # seed metric names become canonical expressions; default splits filled in per role
    assert config.search.seed_metrics == ["mul(W,sqrt(X))"]
    assert config.calibration.split == "all" and config.evaluation[0].windows.split == "all"
    spec = CandidateSpec(method="magnitude", sparsity=0.5)
    assert spec.options == {"scope": "matrix", "ties": "index"}  # defaults from schema.options
    with pytest.raises(ConfigError, match="unknown method 'wandaa'; allowed: .*wanda"):
        parse_config({**_gp_config(), "search": {"baselines": ["wandaa"]}})
    with pytest.raises(ConfigError, match="seed_metrics\\[0\\] 'nosuch' is neither a known"):
        parse_config({**_gp_config(), "search": {"seed_metrics": ["nosuch"]}})


def test_shape_only_still_checks_the_shape(tmp_path: Path) -> None:
    (tmp_path / "recorded.json").write_text(json.dumps(
        {**load_config().to_dict(), "grid": {"sparsities": [1.5]}}))
    out = _without_torch("""
        import json
        from prunestudio.schema import SHAPE_ONLY
        from prunestudio.schema.study_file import ConfigError, parse_config
        try:
            parse_config(json.load(open('recorded.json')), context=SHAPE_ONLY)
        except ConfigError as exc:
            print(exc)
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "grid.sparsities.0: sparsity must be in [0, 1), got 1.5" in out.stdout


def test_a_recovery_section_is_part_of_the_study_file() -> None:
    data = {**load_config().to_dict(), "recovery": {"steps": 5, "r": 4, "best": 2}}
    config = parse_config(data)
    assert (config.recovery.steps, config.recovery.r, config.recovery.best) == (5, 4, 2)
    assert config.to_dict()["recovery"]["best"] == 2
    assert "recovery" not in load_config().to_dict()  # unset: the recorded config as before
    with pytest.raises(ConfigError, match="recovery.r"):
        parse_config({**data, "recovery": {"r": 0}})
