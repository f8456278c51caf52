"""Synthetic isotropic Gaussian mixtures: ring, grid and two overlapping Gaussians.

Every factory fills `Dataset.modes` (means, per-mode σ, weights) and a group column "mode"
holding each sample's mode id, so the metrics can apply the 3σ mode-coverage protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from fedgan.simulator.data.base import (
    DataError,
    Dataset,
    Modes,
    allocate_counts,
    check_float,
    check_int,
    check_n_samples,
    normalize_weights,
)
from fedgan.simulator.data.registry import DATASETS

DEFAULT_N = 5000

SigmaArg = float | Sequence[float]


def mode_weights(
    k: int,
    weights: Sequence[float] | np.ndarray | None,
    minority_modes: Sequence[int] | None,
    minority_weight: float,
) -> np.ndarray:
    """Per-mode weights, float64 [K] summing to 1.

    Either `weights` (K non-negative numbers, normalized), or `minority_modes` (mode ids), each
    given `minority_weight` while the other modes share the rest equally; neither → uniform.
    """
    if weights is not None and minority_modes is not None:
        raise DataError("give either weights or minority_modes, not both", "minority_modes")
    if weights is not None:
        return normalize_weights("weights", weights, k)
    w = np.full(k, 1.0 / k)
    if minority_modes is None:
        return w
    if isinstance(minority_modes, str | bytes) or not isinstance(
        minority_modes, Sequence | np.ndarray
    ):
        raise DataError(
            f"minority_modes must be a list of mode ids, got {minority_modes!r}", "minority_modes"
        )
    ids = [check_int("minority_modes entry", m) for m in minority_modes]
    if not ids:
        return w
    bad = [m for m in ids if not 0 <= m < k]
    if bad:
        raise DataError(
            f"minority_modes {bad} out of range; mode ids are 0..{k - 1}", "minority_modes"
        )
    if len(set(ids)) != len(ids):
        raise DataError(f"minority_modes has repeated ids: {list(ids)}", "minority_modes")
    mw = check_float("minority_weight", minority_weight, nonneg=True)
    if len(ids) == k:
        raise DataError(
            f"minority_modes lists all {k} modes; leave at least one majority mode "
            "(or give weights instead)",
            "minority_modes",
        )
    if mw * len(ids) >= 1:
        raise DataError(
            f"minority_weight × len(minority_modes) = {mw} × {len(ids)} = {mw * len(ids):g} "
            "must be < 1",
            "minority_weight",
        )
    w[:] = (1.0 - mw * len(ids)) / (k - len(ids))
    w[ids] = mw
    return w


def mode_sigmas(sigma: SigmaArg, k: int) -> np.ndarray:
    """`sigma` (one number, or one per mode) as float64 [K], each > 0 and finite."""
    if isinstance(sigma, Sequence | np.ndarray) and not isinstance(sigma, str | bytes):
        vals = list(sigma)
        if len(vals) != k:
            raise DataError(
                f"sigma must be one number or {k} numbers (one per mode), got {vals}", "sigma"
            )
        return np.array([check_float(f"sigma[{i}]", v, positive=True) for i, v in enumerate(vals)])
    return np.full(k, check_float("sigma", sigma, positive=True))


def sample_mixture(
    name: str, modes: Modes, n: int, seed: int, info: dict[str, object] | None = None
) -> Dataset:
    """Draw n samples from `modes` with exact per-mode counts, shuffled.

    Counts are largest-remainder roundings of n·w (a 2 % mode of 5,000 gets exactly 100 points),
    so clients' non-IID splits and minority-mode metrics are not at the mercy of sampling noise.
    """
    rng = np.random.default_rng(seed)
    counts = allocate_counts(n, modes.weights)
    labels = np.repeat(np.arange(modes.n_modes, dtype=np.int64), counts)
    labels = labels[rng.permutation(n)]
    z = rng.standard_normal((n, modes.dim))
    X = modes.means[labels] + modes.sigma[labels, None] * z
    return Dataset(
        name=name,
        X=X.astype(np.float32),
        groups=pd.DataFrame({"mode": labels}),
        modes=modes,
        info={"n_modes": modes.n_modes, "mode_counts": counts.tolist(), **(info or {})},
    )


def ring(
    n_samples: int | None = DEFAULT_N,
    seed: int = 0,
    n_modes: int = 8,
    radius: float = 2.0,
    sigma: SigmaArg = 0.02,
    weights: Sequence[float] | None = None,
    minority_modes: Sequence[int] | None = None,
    minority_weight: float = 0.02,
) -> Dataset:
    """K Gaussians with means radius·(cos 2πi/K, sin 2πi/K), i = 0..K−1; X float32 [n, 2]."""
    n = check_n_samples(n_samples, DEFAULT_N)
    assert n is not None
    k = check_int("n_modes", n_modes, minimum=1)
    r = check_float("radius", radius, positive=True)
    # K+1 points then drop the last: linspace(0, 2π, K) would put mode K−1 on top of mode 0.
    angles = np.linspace(0.0, 2.0 * np.pi, k + 1)[:-1]
    means = r * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    w = mode_weights(k, weights, minority_modes, minority_weight)
    modes = Modes(means, mode_sigmas(sigma, k), w)
    return sample_mixture("ring", modes, n, seed, {"radius": r})


def grid(
    n_samples: int | None = DEFAULT_N,
    seed: int = 0,
    n_per_side: int = 5,
    spacing: float = 2.0,
    sigma: SigmaArg = 0.05,
    weights: Sequence[float] | None = None,
    minority_modes: Sequence[int] | None = None,
    minority_weight: float = 0.02,
) -> Dataset:
    """n×n Gaussians on a grid centred at 0; X float32 [n_samples, 2].

    Mode id i·n_per_side + j has mean (c_i, c_j), c = (arange(n) − (n−1)/2)·spacing; the
    defaults give {−4, −2, 0, 2, 4}².
    """
    n = check_n_samples(n_samples, DEFAULT_N)
    assert n is not None
    side = check_int("n_per_side", n_per_side, minimum=1)
    step = check_float("spacing", spacing, positive=True)
    coords = (np.arange(side) - (side - 1) / 2.0) * step
    xx, yy = np.meshgrid(coords, coords, indexing="ij")
    means = np.stack([xx.ravel(), yy.ravel()], axis=1)
    k = side * side
    w = mode_weights(k, weights, minority_modes, minority_weight)
    modes = Modes(means, mode_sigmas(sigma, k), w)
    return sample_mixture("grid", modes, n, seed, {"spacing": step})


def two_gaussians(
    n_samples: int | None = DEFAULT_N,
    seed: int = 0,
    distance: float = 3.0,
    sigma: SigmaArg = 0.5,
    dim: int = 2,
    weights: Sequence[float] | None = None,
    minority_modes: Sequence[int] | None = None,
    minority_weight: float = 0.02,
) -> Dataset:
    """Two isotropic Gaussians at ∓distance/2 along axis 0; X float32 [n, dim].

    With distance ≈ a few σ the modes overlap, the case where generators put mass on the
    low-density bridge between them instead of separating them.
    """
    n = check_n_samples(n_samples, DEFAULT_N)
    assert n is not None
    dist = check_float("distance", distance, positive=True)
    d = check_int("dim", dim, minimum=1)
    means = np.zeros((2, d))
    means[:, 0] = [-dist / 2.0, dist / 2.0]
    w = mode_weights(2, weights, minority_modes, minority_weight)
    modes = Modes(means, mode_sigmas(sigma, 2), w)
    return sample_mixture("two_gaussians", modes, n, seed, {"distance": dist})


DATASETS.add("ring", ring)
DATASETS.add("grid", grid)
DATASETS.add("two_gaussians", two_gaussians)
