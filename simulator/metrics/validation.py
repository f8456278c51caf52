"""Input checks shared by the metric functions: feature matrices and neighbour counts."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_features(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return `x` as a C-contiguous float64 matrix [n, d], or raise ValueError.

    Parameters
    ----------
    x : array_like, shape [n, d]
        One sample per row, one feature per column.
    name : str
        Name used in error messages ("real", "fake", ...).
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, n_features], got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ValueError(f"{name} contains NaN or infinite values ({bad} rows)")
    return np.ascontiguousarray(arr)


def check_same_dim(a: NDArray[np.float64], b: NDArray[np.float64], na: str, nb: str) -> None:
    """Raise ValueError unless `a` [n, d] and `b` [m, d] share the feature dimension d."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{na} and {nb} must have the same number of features, "
            f"got {a.shape[1]} and {b.shape[1]}"
        )


def check_k(k: object) -> int:
    """Return `k` as a positive int, or raise ValueError (bools are refused)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)
