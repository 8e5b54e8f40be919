"""`prunestudio prune` flags → a typed request → the study config, in one step."""

from __future__ import annotations

import copy

import pytest
from prunestudio.engine.studies.config import load_config

from prunestudio.cli import build_parser
from prunestudio.commands.options import ModelChoice
from prunestudio.commands.prune import PruneRequest, default_study_data
from prunestudio.schema.study_file import ConfigError


def _request(*flags: str) -> PruneRequest:
    return PruneRequest.from_args(build_parser().parse_args(["prune", *flags, "--store",
                                                             "unused.db"]))


def _labels(config) -> list[tuple]:
    return [(s.method, s.sparsity, s.pattern.label, s.layer_ratios)
            for s in config.candidate_specs()]


def test_options_write_the_grid_out_in_grid_order_with_the_options_of_their_method():
    flags = ["--methods", "wanda,magnitude", "--patterns", "unstructured,4:8", "--sparsities",
             "0.3,0.6"]
    plain = _request(*flags).config()
    with_options = _request(*flags, "--option", "magnitude.scope=row").config()
    assert _labels(with_options) == _labels(plain)
    assert _labels(plain)[0][0] == "dense" and len(_labels(plain)) == 7
    for spec in with_options.candidate_specs():
        assert (spec.options.get("scope") == "row") == (spec.method == "magnitude")
    assert with_options.grid.methods == [] and not with_options.grid.include_dense


def test_model_flags_land_in_the_model_section_and_nothing_else_changes():
    default = load_config(None)
    config = _request("--model", "/models/x", "--device", "cpu", "--dtype", "float32").config()
    assert (config.model.source, config.model.device, config.model.dtype) == (
        "/models/x", "cpu", "float32")
    assert config.calibration == default.calibration
    assert config.evaluation == default.evaluation
    assert config.tasks is None  # the default study's lm-eval task only with --tasks
    assert _request().config().model == default.model


def test_metrics_without_methods_get_dense_first_and_the_default_base_is_untouched():
    base = default_study_data()
    before = copy.deepcopy(base)
    request = _request("--metric", "mul(W, sqrt(X))", "--patterns", "unstructured,2:4")
    data = request.study_data(base)
    assert base == before
    assert [c["method"] for c in data["candidates"]] == ["dense", "symbolic", "symbolic"]
    assert data["grid"]["methods"] == []
    assert {c["options"]["expression"] for c in data["candidates"][1:]} == {"mul(W,sqrt(X))"}


def test_option_for_a_method_not_pruned_is_refused():
    with pytest.raises(ConfigError, match=r"--option names method\(s\) \['magnitude'\] that "
                       r"are not in --methods \(wanda\)"):
        _request("--option", "magnitude.scope=row")


def test_model_choice_applies_once_to_a_parsed_config():
    config = load_config(None)
    assert ModelChoice().apply(config) is config
    changed = ModelChoice(source="/m", dtype="bfloat16").apply(config)
    assert (changed.model.source, changed.model.device, changed.model.dtype) == (
        "/m", "auto", "bfloat16")
    assert changed.model_dump(exclude={"model"}) == config.model_dump(exclude={"model"})


def test_reconstruct_flags_cross_every_unstructured_candidate_with_each_mode_and_epoch():
    config = _request("--methods", "wanda,magnitude", "--patterns", "unstructured,2:4",
                      "--reconstruct", "none,gp", "--reconstruct-epochs", "1,3",
                      "--reconstruct-set", "lr=1e-3,batch_size=4,samples=8").config()
    labels = [s.label for s in config.candidate_specs()]
    assert labels[:4] == ["dense", "wanda 50%", "wanda 50% +BR+GP 1ep n8",
                          "wanda 50% +BR+GP 3ep n8"]
    assert "magnitude[matrix] 2:4 +BR+GP 3ep n8" in labels and len(labels) == 1 + 4 * 3
    recipe = config.candidate_specs()[2].reconstruction
    assert (recipe.lr, recipe.batch_size, recipe.samples) == (1e-3, 4, 8)


@pytest.mark.parametrize("flags,message", [
    (["--reconstruct-epochs", "3"], "need --reconstruct MODES"),
    (["--reconstruct", "gp", "--reconstruct-epochs", "x"], "whole numbers"),
    (["--reconstruct", "gp", "--reconstruct-set", "epochs=3"], "give epochs with"),
])
def test_reconstruct_flag_mistakes_name_the_flag(flags, message):
    with pytest.raises(ConfigError, match=message):
        _request(*flags)


def test_an_unknown_reconstruction_mode_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="'none', 'lr', 'br' or 'gp'"):
        _request("--reconstruct", "bw").config()
