"""The gate's finite check against numpy's own elementwise one."""

from __future__ import annotations

import numpy as np
from fedgan.server.gate import all_finite


def test_all_finite_is_numpy_s_elementwise_answer() -> None:
    big = np.finfo(np.float32).max
    cases = [
        np.zeros((3, 4), np.float32),
        np.array([big, big], np.float32),  # finite values whose sum overflows: finite
        np.array([1.0, np.nan], np.float32),
        np.array([np.inf, -np.inf]),  # a sum of NaN
        np.array([-np.inf, 1.0]),
        np.array(np.nan),  # 0-d
        np.zeros((0, 3)),
        np.arange(5, dtype=np.int64),
        np.array([True, False]),
        np.array([np.finfo(np.float16).max] * 3, np.float16),
    ]
    for x in cases:
        assert all_finite(x) == bool(np.isfinite(x).all()), x
