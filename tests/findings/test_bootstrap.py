"""The paired-by-seed bootstrap: expected intervals from exact enumeration of tiny cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from fedgan.simulator.findings.bootstrap import bonferroni, bootstrap_mean, paired_bootstrap


def exact_quantiles(d: list[float], level: float) -> tuple[float, float]:
    """Inverse-CDF quantiles of the mean of n draws with replacement from d, from all n^n
    equally likely resamples (the distribution the bootstrap samples from)."""
    n = len(d)
    means = np.sort([float(np.mean(c)) for c in itertools.product(d, repeat=n)])
    cdf = np.arange(1, len(means) + 1) / len(means)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    return float(means[np.searchsorted(cdf, lo_q)]), float(means[np.searchsorted(cdf, hi_q)])


def test_two_seeds_match_the_exact_resampling_distribution() -> None:
    # Prepare: d = (0, 1). Resampled means: 0 (1/4), 0.5 (1/2), 1 (1/4).
    # Execute
    wide = paired_bootstrap([0.0, 1.0], [0.0, 0.0], level=0.95, n_boot=20_000)
    narrow = paired_bootstrap([0.0, 1.0], [0.0, 0.0], level=0.4, n_boot=20_000)
    # Assert: the 2.5 % / 97.5 % quantiles sit on the atoms 0 and 1; the 30 % / 70 % ones on 0.5.
    assert (wide.low, wide.high, wide.mean) == (0.0, 1.0, 0.5)
    assert (narrow.low, narrow.high) == (0.5, 0.5)


def test_three_seeds_match_exact_enumeration() -> None:
    # d = (0, 1, 3): by hand, P(sum ≤ 0) = 1/27 and P(sum ≤ 1) = 4/27 bracket 10 %, so the 10 %
    # quantile of the mean is 1/3; P(sum ≤ 6) = 23/27 < 90 % ≤ P(sum ≤ 7) = 26/27: it is 7/3.
    d = [0.0, 1.0, 3.0]
    assert exact_quantiles(d, 0.8) == pytest.approx((1 / 3, 7 / 3))
    got = bootstrap_mean(d, level=0.8, n_boot=50_000, seed=3)
    assert (got.low, got.high) == pytest.approx((1 / 3, 7 / 3))
    assert got.mean == pytest.approx(4 / 3) and got.n == 3


def test_an_interval_that_must_exclude_zero() -> None:
    # Every seed's difference is positive: every resampled mean lies in [min d, max d].
    a = np.array([0.5, 0.6, 0.55, 0.7, 0.65])
    b = a - np.array([0.2, 0.3, 0.25, 0.4, 0.35])
    got = paired_bootstrap(a, b, level=bonferroni(13))
    assert got.low >= 0.2 - 1e-12 and got.high <= 0.4 + 1e-12
    assert got.above(0.0) and got.excludes(0.0) and not got.below(0.0)
    assert got.mean == pytest.approx(0.3)


def test_an_interval_that_must_include_zero() -> None:
    # d = (−1, 1, −1, 1, 0): the resampled means are symmetric about 0, so the percentile
    # interval at any level straddles it.
    b = np.zeros(5)
    got = paired_bootstrap(np.array([-1.0, 1.0, -1.0, 1.0, 0.0]), b)
    assert got.low < 0.0 < got.high and not got.excludes(0.0)
    assert got.mean == 0.0


def test_pairing_cancels_what_a_seed_does_to_both() -> None:
    # The seeds spread both methods over 0..20, but a beats b by exactly 1 in every seed: the
    # paired interval is the point 1; the two means' own intervals overlap widely.
    b = np.array([0.0, 5.0, 10.0, 15.0, 20.0])
    a = b + 1.0
    got = paired_bootstrap(a, b)
    assert (got.low, got.mean, got.high) == pytest.approx((1.0, 1.0, 1.0))
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    assert ia.low < ib.high  # unpaired, they would be indistinguishable


def test_nan_pairs_are_dropped_and_all_nan_is_undefined() -> None:
    got = paired_bootstrap([1.0, math.nan, 3.0], [0.0, 0.0, math.nan])
    assert got.n == 1 and (got.low, got.mean, got.high) == (1.0, 1.0, 1.0)
    none = paired_bootstrap([math.nan], [0.0])
    assert none.n == 0 and math.isnan(none.mean) and not none.above() and not none.below()
    assert none.cell() == "n/a"
    with pytest.raises(ValueError, match="one value per seed"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_bonferroni_levels() -> None:
    assert bonferroni(1) == pytest.approx(0.95)
    assert bonferroni(2) == pytest.approx(0.975)
    assert bonferroni(13) == pytest.approx(1 - 0.05 / 13)
    with pytest.raises(ValueError):
        bonferroni(0)
