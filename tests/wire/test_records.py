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
