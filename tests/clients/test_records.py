"""Arrays survive the trip through Flower records with their shapes, dtypes and values."""

from __future__ import annotations

import numpy as np

from clients.records import from_record, to_record


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
