"""Core data types: `Dataset`, `Modes`, `DataError`, and shared validation helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A bad dataset parameter, a missing or malformed file, or an inconsistent dataset.

    `key` names the dataset parameter at fault when one is (so a scenario error can point at
    `data.params.<key>` and validation can go on looking for the next problem)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _key(name: str) -> str | None:
    """The parameter a validation message is about: `name` itself when it is one
    ("n_per_side"), its first word otherwise ("minority_modes entry" → minority_modes)."""
    head = name.split(" ", 1)[0].split("[", 1)[0]
    return head if head.isidentifier() else None


def _frozen_copy(a: np.ndarray) -> np.ndarray:
    # A frozen dataclass does not stop in-place writes to its arrays; make them read-only too.
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


# eq=False: the generated __eq__ would compare arrays with `==` and fail on truth-testing.
@dataclass(frozen=True, eq=False)
class Modes:
    """The components of an isotropic Gaussian mixture.

    Attributes
    ----------
    means : float64 [K, d]
        Mode centres, in data units.
    sigma : float64 [K]
        Isotropic standard deviation of each mode, in data units.
    weights : float64 [K]
        Mixture weights; non-negative, summing to 1.
    """

    means: np.ndarray
    sigma: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        means, sigma, weights = (_frozen_copy(a) for a in (self.means, self.sigma, self.weights))
        if means.ndim != 2 or means.shape[0] < 1:
            raise DataError(f"Modes.means must have shape [K, d] with K >= 1, got {means.shape}")
        k = means.shape[0]
        if sigma.shape != (k,) or weights.shape != (k,):
            raise DataError(
                f"Modes.sigma and Modes.weights must have shape [{k}], "
                f"got {sigma.shape} and {weights.shape}"
            )
        if not (np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
            raise DataError(f"Modes.sigma must be positive and finite, got {sigma.tolist()}")
        if np.any(weights < 0) or not math.isclose(float(weights.sum()), 1.0, abs_tol=1e-9):
            raise DataError(f"Modes.weights must be non-negative and sum to 1, got {weights}")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "sigma", sigma)
        object.__setattr__(self, "weights", weights)

    @property
    def n_modes(self) -> int:
        """K, the number of mixture components."""
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        """d, the dimension of the data space."""
        return int(self.means.shape[1])


@dataclass
class Dataset:
    """Samples plus the group labels that define clients' non-IID splits and fairness groups.

    Attributes
    ----------
    name : str
        The registry name (or plug-in spec) that produced it.
    X : float32 [n, d]
        Samples; image data are flattened C·H·W rows.
    groups : DataFrame, n rows, >= 1 column
        Integer or categorical labels; the first column is the default group column.
    modes : Modes or None
        The true mixture components (synthetic mixtures only), for the 3σ mode protocol.
    image_shape : (C, H, W) or None
        Set for image data; C·H·W == d.
    info : dict
        Free-form facts (e.g. the digit classifier's test accuracy).
    """

    name: str
    X: np.ndarray
    groups: pd.DataFrame
    modes: Modes | None = None
    image_shape: tuple[int, int, int] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float32)
        if X.ndim != 2:
            raise DataError(f"dataset {self.name!r}: X must have shape [n, d], got {X.shape}")
        if not isinstance(self.groups, pd.DataFrame) or self.groups.shape[1] < 1:
            raise DataError(f"dataset {self.name!r}: groups must be a DataFrame with >= 1 column")
        if len(self.groups) != X.shape[0]:
            raise DataError(
                f"dataset {self.name!r}: groups has {len(self.groups)} rows but X has {X.shape[0]}"
            )
        if self.image_shape is not None and math.prod(self.image_shape) != X.shape[1]:
            raise DataError(
                f"dataset {self.name!r}: image_shape {self.image_shape} does not match "
                f"d = {X.shape[1]}"
            )
        if self.modes is not None and self.modes.dim != X.shape[1]:
            raise DataError(
                f"dataset {self.name!r}: modes have d = {self.modes.dim} but X has d = {X.shape[1]}"
            )
        self.X = X
        # Positional index, so that `subset` and row-wise joins with X never misalign.
        self.groups = self.groups.reset_index(drop=True)

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        """Dimension d of a (flattened) sample."""
        return int(self.X.shape[1])

    @property
    def group_column(self) -> str:
        """Name of the default group column (the first)."""
        return str(self.groups.columns[0])

    def labels(self, column: str | None = None) -> np.ndarray:
        """Group labels of one column (default: the first), shape [n]."""
        col = self.group_column if column is None else column
        if col not in self.groups.columns:
            raise DataError(
                f"dataset {self.name!r} has no group column {col!r}; "
                f"available: {list(map(str, self.groups.columns))}"
            )
        return self.groups[col].to_numpy()

    def subset(self, idx: np.ndarray | Sequence[int]) -> Dataset:
        """The rows `idx` (int positions [m] or a bool mask [n]) as a new Dataset.

        `modes` and `image_shape` are kept (they describe the distribution, not the sample);
        `info` is shallow-copied.
        """
        index = np.asarray(idx)
        if index.dtype == bool:
            if index.shape != (self.n,):
                raise DataError(f"a bool mask must have shape [{self.n}], got {index.shape}")
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = index.astype(np.int64)
        elif not np.issubdtype(index.dtype, np.integer):
            raise DataError(f"subset indices must be integers or a bool mask, got {index.dtype}")
        return Dataset(
            name=self.name,
            X=self.X[index],
            groups=self.groups.iloc[index],
            modes=self.modes,
            image_shape=self.image_shape,
            info=dict(self.info),
        )


# ----------------------------------------------------------------------------------------------
# Validation helpers shared by the factories. Values may come from YAML/JSON, so accept integral
# floats for ints but never bools (True would silently mean 1).


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """`value` as an int >= `minimum`, or DataError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{name} must be an integer, got {value!r}", _key(name))
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise DataError(f"{name} must be an integer, got {value!r}", _key(name))
    out = int(value)
    if minimum is not None and out < minimum:
        raise DataError(f"{name} must be >= {minimum}, got {value!r}", _key(name))
    return out


def check_float(name: str, value: object, *, positive: bool = False, nonneg: bool = False) -> float:
    """`value` as a finite float (optionally > 0 or >= 0), or DataError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{name} must be a number, got {value!r}", _key(name))
    out = float(value)
    if not math.isfinite(out):
        raise DataError(f"{name} must be finite, got {value!r}", _key(name))
    if positive and out <= 0:
        raise DataError(f"{name} must be > 0, got {value!r}", _key(name))
    if nonneg and out < 0:
        raise DataError(f"{name} must be >= 0, got {value!r}", _key(name))
    return out


def check_n_samples(n_samples: object, default: int | None) -> int | None:
    """`n_samples` as an int >= 1, `default` when None."""
    if n_samples is None:
        return default
    return check_int("n_samples", n_samples, minimum=1)


def normalize_weights(name: str, weights: object, k: int) -> np.ndarray:
    """K non-negative finite numbers → float64 [K] summing to 1; DataError naming `name`."""
    key = _key(name)
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence | np.ndarray):
        raise DataError(f"{name} must be a list of {k} numbers, got {weights!r}", key)
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a list of {k} numbers, got {weights!r}", key) from None
    if w.shape != (k,):
        raise DataError(f"{name} must have {k} entries (one per mode/class), got {w.size}", key)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DataError(f"{name} must be finite and non-negative, got {w.tolist()}", key)
    total = float(w.sum())
    if total <= 0:
        raise DataError(
            f"{name} must sum to a positive number, got sum {total} ({w.tolist()})", key
        )
    return w / total


def allocate_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """Split n items by `weights` (float64 [K], sums to 1) with largest-remainder rounding.

    Returns int64 [K] summing to n, with |count_k − n·w_k| < 1. Ties in the remainders go to
    the lower index, so the result is deterministic.
    """
    raw = n * np.asarray(weights, dtype=np.float64)
    # n·w is often an integer up to float error (5000·0.02 = 100.00000000000001 or 99.999...);
    # nudge before flooring so exact products are not sent through the remainder lottery.
    counts = np.floor(raw + 1e-9).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    elif short < 0:  # only if many products sit within 1e-9 below an integer; undo the nudge
        order = np.argsort(raw - counts, kind="stable")
        order = order[counts[order] > 0]
        counts[order[:-short]] -= 1
    return counts
