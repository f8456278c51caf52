"""Percentile bootstrap intervals over seeds: of a mean, and of a paired-by-seed difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its percentile bootstrap interval at `level`; `n` seeds used."""

    mean: float
    low: float
    high: float
    level: float
    n: int

    def above(self, value: float = 0.0) -> bool:
        """Whether the whole interval lies above `value` (False when undefined)."""
        return bool(self.low > value)

    def below(self, value: float = 0.0) -> bool:
        return bool(self.high < value)

    def excludes(self, value: float = 0.0) -> bool:
        return self.above(value) or self.below(value)

    def cell(self, fmt: str = "+.2f") -> str:
        """'m [lo, hi]', or 'n/a' when no seed was usable."""
        if self.n == 0:
            return "n/a"
        return f"{self.mean:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def bonferroni(m: int, alpha: float = 0.05) -> float:
    """The interval level that keeps the family-wise error of `m` comparisons at `alpha`."""
    if m < 1:
        raise ValueError(f"m must be ≥ 1 comparison, got {m}")
    return 1.0 - alpha / m


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> Interval:
    """The mean of `values` [n] and its percentile bootstrap interval: resample the n values
    with replacement `n_boot` times, take the (1 − level)/2 and (1 + level)/2 quantiles of the
    resampled means. NaNs are dropped first; with no value left everything is NaN (n = 0)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan, level, 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(float(v.mean()), float(lo), float(hi), level, len(v))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Mean of the per-seed differences a_s − b_s and its percentile bootstrap interval,
    resampling whole seeds (the pairs stay together, so what a seed does to both methods —
    its data, partition and initialisation — cancels). a, b [n]: one value per seed, in the
    same seed order; a pair with a NaN on either side is dropped."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two vectors of one value per seed, got {x.shape} and {y.shape}")
    return bootstrap_mean(x - y, level, n_boot, seed)
