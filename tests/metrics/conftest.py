"""Shared samplers for the metric tests: the 8-mode ring of the mode-collapse literature."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

RING_SIGMA = 0.02


def ring_means() -> np.ndarray:
    """[8, 2]: means 2·(cos θ, sin θ), θ = linspace(0, 2π, 9)[:-1]."""
    theta = np.linspace(0, 2 * np.pi, 9)[:-1]
    return 2.0 * np.stack([np.cos(theta), np.sin(theta)], axis=1)


RingSampler = Callable[..., tuple[np.ndarray, np.ndarray]]


def sample_ring(
    rng: np.random.Generator, n: int, modes: Sequence[int] = tuple(range(8))
) -> tuple[np.ndarray, np.ndarray]:
    """n points [n, 2] from equal-weight components `modes` of the ring, and their labels [n]."""
    labels = np.asarray(modes)[np.arange(n) % len(modes)]  # balanced: exact group sizes
    rng.shuffle(labels)
    x = ring_means()[labels] + RING_SIGMA * rng.standard_normal((n, 2))
    return x, labels


@pytest.fixture
def ring() -> RingSampler:
    return sample_ring


@pytest.fixture
def ring_mu() -> np.ndarray:
    return ring_means()
