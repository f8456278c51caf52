"""Arrays survive the trip through Flower records with their shapes, dtypes and values."""

from __future__ import annotations

import numpy as np
from fedgan.wire.records import from_record, to_record


def test_shapes_survive_including_zero_d_and_non_contiguous() -> None:
    arrays = {
        "opt.step": np.array(7.0, np.float32),  # 0-d: an optimizer's step counter
        "w": np.arange(12, dtype=np.float64).reshape(3, 4).T,  # a non-contiguous view
        "empty": np.zeros((0, 2), np.float32),
    }
    back = from_record(to_record(arrays))
    for k, v in arrays.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        np.testing.assert_array_equal(back[k], v)


def test_decoded_arrays_carry_the_bytes_flower_would_write() -> None:
    from fedgan.wire.records import DecodedArray, to_decoded_record
    from flwr.app import Array

    arrays = {
        "step": np.array(3.0, np.float32),
        "w": np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32).T,
        "idx": np.arange(6, dtype=np.int64).reshape(2, 3),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 2)),
    }
    record = to_decoded_record(arrays)
    for k, v in arrays.items():
        d = record[k]
        assert isinstance(d, DecodedArray)
        # Byte for byte what Flower's own Array(ndarray) holds, so any reader decodes the same.
        flower = Array(np.require(v, requirements="C"))
        assert d.data == flower.data and d.object_id == flower.object_id, k
        assert (d.dtype, d.shape, d.stype) == (flower.dtype, flower.shape, flower.stype), k
        plain = Array(d.dtype, d.shape, d.stype, d.data).numpy()
        np.testing.assert_array_equal(plain, v)
        got = d.numpy()
        got[...] = 0 if got.size else got  # a copy: the record itself is not changed
        np.testing.assert_array_equal(d.numpy(), v)


def test_values_read_what_flower_decodes_without_a_copy() -> None:
    """`values` against Flower's own `Array.numpy()` (np.load) for what `Array(ndarray)`
    writes: numeric dtypes of both byte orders, 0-d, empty, Fortran order (np.load's job),
    a structured dtype; the result is read-only, from_record's is a writable copy."""
    import pytest
    from fedgan.wire.records import to_decoded_record, values
    from flwr.app import Array

    rng = np.random.default_rng(1)
    cases = {
        "f32": rng.normal(size=(4, 129)).astype(np.float32),
        "f64 big-endian": rng.normal(size=(3, 2)).astype(">f8"),
        "0-d": np.array(7.0, np.float32),
        "empty": np.zeros((0, 3), np.int16),
        "bool": np.array([True, False, True]),
        "int64": np.arange(24, dtype=np.int64).reshape(2, 3, 4),
        "fortran": np.asfortranarray(rng.normal(size=(3, 5))),
        "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    }
    for name, x in cases.items():
        a = Array(x)
        expected = a.numpy()
        got = values(a)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected)
        if name not in ("fortran", "structured"):  # these np.load decodes (writable)
            with pytest.raises(ValueError):
                got[...] = got  # read-only: the bytes are not ours to change
    decoded = to_decoded_record({"w": cases["f32"]})
    with pytest.raises(ValueError):
        values(decoded["w"])[0, 0] = 1.0
    back = from_record(decoded)
    back["w"][0, 0] = 1.0  # a writable copy
    np.testing.assert_array_equal(values(decoded["w"]), cases["f32"])
