"""Fréchet distance against closed forms, on sets built with exact sample moments."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from fedgan.simulator.metrics import frechet_distance


def with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n points whose sample mean is `mean` and unbiased sample covariance is `cov`, exactly."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    white = np.linalg.solve(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False))), z.T).T
    return mean + white @ np.linalg.cholesky(cov).T


def test_identical_sets_are_at_distance_zero() -> None:
    x = np.random.default_rng(0).standard_normal((500, 6))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_covariances_closed_form() -> None:
    """Commuting covariances: Tr(Σa + Σb − 2(ΣaΣb)^{1/2}) = Σ_i (√a_i − √b_i)²."""
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = with_moments(rng, 300, mu_a, np.diag(var_a))
    b = with_moments(rng, 400, mu_b, np.diag(var_b))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    # By hand: means 1 + 0 + 4 + 1; roots (1 − 3)² + (2 − 1)² + 0 + (√2 − √½)² = 4 + 1 + ½.
    assert expected == pytest.approx(11.5)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_shared_eigenbasis_closed_form() -> None:
    """Covariances R diag(a) Rᵀ and R diag(b) Rᵀ commute: same closed form as diagonal."""
    rng = np.random.default_rng(2)
    rot, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    var_a, var_b = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([5.0, 1.0, 1.0, 4.0, 0.5])
    a = with_moments(rng, 200, np.zeros(5), rot @ np.diag(var_a) @ rot.T)
    b = with_moments(rng, 200, np.ones(5), rot @ np.diag(var_b) @ rot.T)
    expected = 5.0 + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_general_covariances_against_symmetric_form() -> None:
    """Tr (ΣaΣb)^{1/2} = Tr (Σa^{1/2} Σb Σa^{1/2})^{1/2}, the latter via symmetric eigh."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 4)) @ rng.standard_normal((4, 4))
    b = 0.5 + rng.standard_normal((250, 4)) @ rng.standard_normal((4, 4))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = scipy.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    root_a = psd_sqrt(ca)
    tr = np.trace(psd_sqrt(root_a @ cb @ root_a))
    diff = a.mean(axis=0) - b.mean(axis=0)
    expected = diff @ diff + np.trace(ca) + np.trace(cb) - 2 * tr
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_one_feature() -> None:
    rng = np.random.default_rng(4)
    a = with_moments(rng, 50, np.array([1.0]), np.array([[4.0]]))
    b = with_moments(rng, 60, np.array([3.0]), np.array([[1.0]]))
    assert frechet_distance(a, b) == pytest.approx((1 - 3) ** 2 + (2 - 1) ** 2)


def test_fewer_samples_than_features_stays_finite() -> None:
    rng = np.random.default_rng(5)
    value = frechet_distance(rng.standard_normal((5, 20)), rng.standard_normal((6, 20)))
    assert np.isfinite(value) and value > 0


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same number of features"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 2)))
