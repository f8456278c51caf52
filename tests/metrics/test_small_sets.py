"""Many small sets' recall/coverage terms at once equal `prdc` on each set alone."""

from __future__ import annotations

import numpy as np
import pytest
from fedgan.simulator.metrics import prdc
from fedgan.simulator.metrics.small_sets import recall_coverage_terms


def _sets(seed: int, d: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    reals, fakes = [], []
    for c in range(40):
        n, m = int(rng.integers(6, 60)), int(rng.integers(6, 60))
        r = rng.normal(size=(n, d))
        f = rng.normal(size=(m, d)) * 1.3 + 0.2
        if c % 5 == 0:
            f[: m // 2] = f[0]  # a partly collapsed generator: zero radii
        if c % 7 == 0:
            r[:3] = r[3]  # duplicated real points sit on each other's ball boundaries
        reals.append(r)
        fakes.append(f)
    return reals, fakes


@pytest.mark.parametrize("d", [2, 9])  # 9: numpy's pairwise summation order matters
def test_terms_equal_prdc_set_by_set(d: int) -> None:
    reals, fakes = _sets(d, d)
    got = recall_coverage_terms(reals, fakes, k=5)
    for r, f, (rec, cov) in zip(reals, fakes, got, strict=True):
        want = prdc(r, f, k=5)
        np.testing.assert_array_equal(rec, want.recall_per_real)
        np.testing.assert_array_equal(cov, want.coverage_per_real)


def test_too_small_a_set_is_refused() -> None:
    with pytest.raises(ValueError, match="more than k=5"):
        recall_coverage_terms([np.zeros((5, 2))], [np.zeros((9, 2))], k=5)
