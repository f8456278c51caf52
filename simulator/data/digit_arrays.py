"""scikit-learn's bundled 8×8 digits as arrays, without torch: what the `digits` and
`stacked_digits` datasets are built from (and validated against), apart from the classifier
that scores generated digits (`digit_classifier`, which needs torch)."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (offline), read once per process, read-only.

    Returns
    -------
    X : float32 [1797, 64]
        Pixels scaled from 0..16 to [−1, 1] (the range of a tanh generator).
    y : int64 [1797]
        Digit labels 0..9.
    """
    from sklearn.datasets import load_digits  # lazy: sklearn import costs ~0.5 s

    bunch = load_digits()
    X = (np.asarray(bunch.data, dtype=np.float32) / 8.0 - 1.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    # Shared by every caller through the cache: fancy indexing copies, in-place edits must fail.
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y
