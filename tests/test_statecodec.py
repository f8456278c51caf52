"""State as JSON + arrays: everything a strategy keeps comes back equal, nothing else gets in."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from fedgan.simulator.statecodec import StateError, decode, encode, register


def _roundtrip(value: object) -> object:
    tree, arrays = encode(value)
    text = json.dumps(tree, allow_nan=False)  # strict JSON: no NaN literals sneak in
    return decode(json.loads(text), {k: np.array(v) for k, v in arrays.items()})


def test_plain_values_round_trip_with_their_types() -> None:
    value = {
        "none": None,
        "flags": [True, False],
        "n": 3,
        "x": 0.25,
        "text": "λ",
        "pair": (1, (2.0, "b")),
        "by_node": {7: 0, 12: 1},  # node id → partition id: int keys stay ints
        "$odd": 1,  # a str key that looks like a tag is escaped
        "nested": {"deep": [{"k": (3,)}]},
    }
    assert _roundtrip(value) == value
    got = _roundtrip(value)
    assert isinstance(got, dict) and isinstance(got["pair"], tuple)
    assert list(got["by_node"]) == [7, 12]


def test_non_finite_floats_and_numpy_scalars() -> None:
    got = _roundtrip([math.nan, math.inf, -math.inf, np.float32(0.5), np.int64(7)])
    assert isinstance(got, list)
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == -math.inf
    assert got[3] == 0.5 and got[3].dtype == np.float32
    assert got[4] == 7 and got[4].dtype == np.int64


def test_arrays_are_members_not_json() -> None:
    moments = {"m.w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(4)}
    tree, arrays = encode({"moments": moments})
    assert "arange" not in json.dumps(tree) and len(arrays) == 2
    got = decode(tree, arrays)
    assert isinstance(got, dict)
    for k, v in moments.items():
        np.testing.assert_array_equal(got["moments"][k], v)
        assert got["moments"][k].dtype == v.dtype and got["moments"][k].shape == v.shape


@dataclass
class _Point:
    x: float
    y: float


def test_registered_types_and_refusals() -> None:
    with pytest.raises(StateError, match=r"\$\.p: .*_Point is not plain data"):
        encode({"p": _Point(1.0, 2.0)})
    register("point", _Point, lambda p: [p.x, p.y], lambda xy: _Point(*xy))
    assert _roundtrip({"p": _Point(1.0, 2.0)}) == {"p": _Point(1.0, 2.0)}
    with pytest.raises(StateError, match="not plain data"):
        encode([lambda: 0])  # code is never state
    with pytest.raises(StateError, match="object array"):
        encode(np.array([object()]))


def test_a_tree_it_did_not_write_is_refused() -> None:
    with pytest.raises(StateError, match="unknown tag '\\$exec'"):
        decode({"$exec": "os.system('x')"}, {})
    with pytest.raises(StateError, match="not registered"):
        decode({"$type": ["os.system", "x"]}, {})
    with pytest.raises(StateError, match="missing"):
        decode({"$array": "a9"}, {})
    with pytest.raises(StateError, match="not a non-finite float"):
        decode({"$float": "__import__"}, {})
