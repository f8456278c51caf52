"""Diagnosis: the rule on hand-set numbers, and on generators with a known failure."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.metrics import diagnose, expected_coverage, prdc

N = 1000
# Two Gaussians, σ = 0.5, at ±2: the valley between them holds almost no real points
# (density e^{-8} of the peaks), so mass put there is off the real manifold. (At ±1.5 the
# valley still holds a few reals with huge k-NN balls, and density barely drops there.)
MEANS = np.array([[-2.0, 0.0], [2.0, 0.0]])
SIGMA = 0.5


def mixture(rng: np.random.Generator, n: int, components: tuple[int, ...] = (0, 1)) -> np.ndarray:
    c = rng.choice(components, size=n)
    return MEANS[c] + SIGMA * rng.standard_normal((n, 2))


def label_of(fake: np.ndarray, seed: int) -> str:
    rng = np.random.default_rng(seed)
    real = mixture(rng, N)
    res = prdc(real, fake, 5)
    return diagnose(**res.as_dict(), expected_coverage=expected_coverage(N, N, 5)).label


@pytest.mark.parametrize("seed", [0, 1])
def test_true_samples_are_healthy(seed: int) -> None:
    assert label_of(mixture(np.random.default_rng(100 + seed), N), seed) == "healthy"


@pytest.mark.parametrize("seed", [0, 1])
def test_dropped_component_is_mode_dropping(seed: int) -> None:
    fake = mixture(np.random.default_rng(200 + seed), N, components=(1,))
    assert label_of(fake, seed) == "mode_dropping"


@pytest.mark.parametrize("seed", [0, 1])
def test_mass_between_components_is_manifold_collapse(seed: int) -> None:
    fake = 0.2 * np.random.default_rng(300 + seed).standard_normal((N, 2))
    assert label_of(fake, seed) == "manifold_collapse"


@pytest.mark.parametrize("seed", [0, 1])
def test_heavy_noise_is_low_fidelity(seed: int) -> None:
    rng = np.random.default_rng(400 + seed)
    fake = mixture(rng, N) + 1.0 * rng.standard_normal((N, 2))  # noise 2σ
    assert label_of(fake, seed) == "low_fidelity"


def test_rule_on_hand_set_numbers() -> None:
    assert diagnose(0.99, 0.99, 1.0, 0.97).label == "healthy"
    assert diagnose(0.99, 0.5, 1.0, 0.5).label == "mode_dropping"
    assert diagnose(0.99, 0.99, 1.0, 0.5).label == "mode_dropping"  # coverage alone falls
    assert diagnose(0.7, 1.0, 0.6, 0.8).label == "low_fidelity"  # density alone falls
    assert diagnose(0.3, 1.0, 0.9, 0.8).label == "low_fidelity"  # precision alone falls
    assert diagnose(0.5, 0.1, 0.3, 0.05).label == "manifold_collapse"
    assert diagnose(float("nan"), 0.99, 1.0, 0.97).label == "low_fidelity"


def test_coverage_threshold_is_relative_to_expected_coverage() -> None:
    # 0.72 passes the absolute floor 0.7 but not 0.75 × 0.969 = 0.727.
    assert diagnose(0.99, 0.99, 1.0, 0.72).label == "healthy"
    d = diagnose(0.99, 0.99, 1.0, 0.72, expected_coverage=0.969)
    assert d.label == "mode_dropping"
    assert not d.diversity_ok and d.fidelity_ok
    assert "coverage 0.720" in d.reason and "0.727" in d.reason


def test_thresholds_are_parameters() -> None:
    assert diagnose(0.99, 0.99, 0.85, 0.97).label == "healthy"
    assert diagnose(0.99, 0.99, 0.85, 0.97, min_density=0.9).label == "low_fidelity"
    assert diagnose(0.99, 0.55, 1.0, 0.97).label == "mode_dropping"
    assert diagnose(0.99, 0.55, 1.0, 0.97, min_recall=0.5).label == "healthy"
