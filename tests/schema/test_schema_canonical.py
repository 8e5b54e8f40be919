from __future__ import annotations

import math

import pytest
from prunestudio.store import canonical_json, spec_hash


def test_key_order_does_not_matter() -> None:
    a = {"method": "wanda", "sparsity": 0.5, "pattern": {"n": 2, "m": 4}}
    b = {"pattern": {"m": 4, "n": 2}, "sparsity": 0.5, "method": "wanda"}
    assert canonical_json(a) == canonical_json(b)
    assert spec_hash(a) == spec_hash(b)


def test_compact_sorted_and_unicode_kept() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "é": "ü"}) == '{"a":[1,2],"b":1,"é":"ü"}'


def test_hash_is_stable_and_16_hex() -> None:
    h = spec_hash({"method": "magnitude", "sparsity": 0.5})
    # Pinned: a change here would silently split old and new candidates of a resumed study.
    assert h == "06fc043246938140"
    assert h == spec_hash({"sparsity": 0.5, "method": "magnitude"})


def test_integral_float_stays_float() -> None:
    assert canonical_json({"x": 1.0}) == '{"x":1.0}'
    assert spec_hash({"x": 1.0}) != spec_hash({"x": 1})


def test_tuples_are_lists() -> None:
    assert canonical_json({"x": (1, 2)}) == canonical_json({"x": [1, 2]})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": bad})
    with pytest.raises(ValueError):
        spec_hash({"nested": [1, bad]})


def test_sets_rejected() -> None:
    with pytest.raises(TypeError, match="sorted list"):
        canonical_json({"x": {1, 2}})


def test_numpy_scalars_hash_like_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    assert spec_hash({"k": np.int64(3), "r": np.float32(0.5)}) == spec_hash({"k": 3, "r": 0.5})
    assert canonical_json({"v": np.arange(3)}) == '{"v":[0,1,2]}'
