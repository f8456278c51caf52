"""Mode metrics: values derived from the definitions, on the 8-ring and on hand-made cases."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fedgan.simulator.metrics import mode_metrics

Sampler = Callable[..., tuple[np.ndarray, np.ndarray]]  # the `ring` fixture
SIGMA = 0.02  # the ring fixture's component standard deviation


def test_true_ring_samples_capture_all_modes(ring: Sampler, ring_mu: np.ndarray) -> None:
    """In 2-D the standardized distance is χ with 2 dof: P(χ² < 9) = 1 − e^{−4.5}."""
    rng = np.random.default_rng(0)
    fake, labels = ring(rng, 8000)
    mm = mode_metrics(fake, ring_mu, SIGMA, np.full(8, 1 / 8))
    assert mm.modes_captured == 8 and mm.n_modes == 8
    p = 1 - math.exp(-4.5)
    assert p == pytest.approx(0.98889, abs=1e-5)
    se = math.sqrt(p * (1 - p) / 8000)
    assert mm.high_quality_rate == pytest.approx(p, abs=4 * se)
    np.testing.assert_array_equal(mm.assignment, labels)  # modes are 1.5 apart, σ = 0.02
    assert mm.min_mass_ratio > 0.9
    assert mm.reverse_kl < 0.005
    assert not mm.no_high_quality


def test_one_mode_generator(ring: Sampler, ring_mu: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    fake, _ = ring(rng, 500, modes=[5])
    mm = mode_metrics(fake, ring_mu, SIGMA)
    assert mm.modes_captured == 1
    np.testing.assert_array_equal(mm.mass_per_mode, np.eye(8)[5])
    assert mm.min_mass_ratio == 0.0
    assert mm.reverse_kl == pytest.approx(math.log(8))  # 1 · log(1 / (1/8))


def test_dropped_two_percent_mode_exact_histogram(ring_mu: np.ndarray) -> None:
    """Samples placed on the means in exact proportions: mass = w_k / 0.98 on the 7 kept modes,
    so KL = Σ (w_k/0.98) log(1/0.98) = log(1/0.98) ≈ 0.0202, while min mass ratio is 0."""
    weights = np.array([0.02] + [0.14] * 7)
    fake = np.repeat(ring_mu[1:], 100, axis=0)  # 700 samples, 1/7 = 0.14/0.98 on each kept mode
    mm = mode_metrics(fake, ring_mu, SIGMA, weights)
    assert mm.high_quality_rate == 1.0
    assert mm.modes_captured == 7
    assert mm.reverse_kl == pytest.approx(math.log(1 / 0.98), rel=1e-12)
    assert mm.reverse_kl == pytest.approx(0.0202, abs=1e-4)
    assert mm.min_mass_ratio == 0.0
    np.testing.assert_allclose(mm.mass_per_mode, np.r_[0.0, np.full(7, 1 / 7)])


def test_dropped_two_percent_mode_sampled(ring_mu: np.ndarray) -> None:
    weights = np.array([0.02] + [0.14] * 7)
    rng = np.random.default_rng(2)
    n = 20_000
    labels = rng.choice(np.arange(1, 8), size=n)  # the mixture without mode 0
    fake = ring_mu[labels] + SIGMA * rng.standard_normal((n, 2))
    mm = mode_metrics(fake, ring_mu, SIGMA, weights)
    assert mm.min_mass_ratio == 0.0
    assert mm.modes_captured == 7
    # Expected KL of the empirical histogram: log(1/0.98) + ≈ (7 − 1)/(2n) of sampling bias.
    assert mm.reverse_kl == pytest.approx(math.log(1 / 0.98), abs=0.003)


def test_hand_computed_case() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    fake = np.array(
        [
            [0.5, 0.0],  # 0.5σ from mode 0: high quality
            [10.0, 2.0],  # 2σ from mode 1: high quality
            [5.0, 0.0],  # 5σ from both: not
            [0.0, -3.0],  # exactly 3σ from mode 0: not (strict <)
        ]
    )
    mm = mode_metrics(fake, means, 1.0, [0.25, 0.75])
    np.testing.assert_allclose(mm.distance, [0.5, 2.0, 5.0, 3.0])
    np.testing.assert_array_equal(mm.assignment[[0, 1, 3]], [0, 1, 0])
    np.testing.assert_array_equal(mm.high_quality, [True, True, False, False])
    assert mm.high_quality_rate == 0.5 and mm.n_high_quality == 2
    assert mm.modes_captured == 2
    np.testing.assert_allclose(mm.mass_per_mode, [0.5, 0.5])
    # 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 log(4/3)
    assert mm.reverse_kl == pytest.approx(0.5 * math.log(4 / 3))
    assert mm.min_mass_ratio == pytest.approx(2 / 3)  # min(0.5/0.25, 0.5/0.75)


def test_per_mode_sigma_standardizes_before_assigning() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    fake = np.array([[9.5, 0.0], [9.0, 0.0]])
    mm = mode_metrics(fake, means, [1.0, 0.1], [0.5, 0.5], threshold=6.0)
    # (9.5, 0): 9.5σ₀ from mode 0, 0.5/0.1 = 5σ₁ from mode 1 → mode 1 at 5.
    # (9, 0): 9σ₀ from mode 0, 1/0.1 = 10σ₁ from mode 1 → mode 0 at 9.
    np.testing.assert_array_equal(mm.assignment, [1, 0])
    np.testing.assert_allclose(mm.distance, [5.0, 9.0])
    np.testing.assert_array_equal(mm.high_quality, [True, False])


def test_weights_are_normalized_and_uniform_by_default() -> None:
    means = np.array([[0.0], [10.0]])
    fake = np.array([[0.0], [0.1], [10.0]])
    a = mode_metrics(fake, means, 1.0)
    b = mode_metrics(fake, means, 1.0, [3.0, 3.0])
    assert a.reverse_kl == b.reverse_kl
    # p = (2/3, 1/3), w = (1/2, 1/2)
    expected = (2 / 3) * math.log(4 / 3) + (1 / 3) * math.log(2 / 3)
    assert a.reverse_kl == pytest.approx(expected)


def test_no_high_quality_sample_gives_nan_and_a_flag() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    mm = mode_metrics(np.array([[5.0, 5.0], [-9.0, 0.0]]), means, 1.0)
    assert mm.no_high_quality
    assert mm.high_quality_rate == 0.0 and mm.modes_captured == 0
    assert math.isnan(mm.reverse_kl) and math.isnan(mm.min_mass_ratio)
    assert np.isnan(mm.mass_per_mode).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": [1.0, 1.0, 1.0]}, "sigma"),
        ({"sigma": 1.0, "weights": [1.0]}, "weights"),
        ({"sigma": 1.0, "weights": [1.0, 0.0]}, "weights"),
        ({"sigma": 1.0, "threshold": 0.0}, "threshold"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, Any], match: str) -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    with pytest.raises(ValueError, match=match):
        mode_metrics(np.zeros((3, 2)), means, **kwargs)


def test_dimension_mismatch() -> None:
    with pytest.raises(ValueError, match="same number of features"):
        mode_metrics(np.zeros((3, 3)), np.zeros((2, 2)), 1.0)
