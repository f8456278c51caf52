"""The two candidate rules for "forgotten", side by side on the constructed cases: a group's mass
(share of samples inside its k-NN balls) against its share of *all* samples (the issue's
literal rule) or of the *on-support* samples (the project's rule). Prints, per case, the groups
each rule calls forgotten and the on-support share P.

    .venv/bin/python benchmarks/forgotten_rules.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.simulator.data import load_dataset
from fedgan.simulator.metrics import prdc
from fedgan.simulator.metrics.forgetting import (
    FORGOTTEN_MASS_RATIO,
    ball_hits,
    ball_pairs,
    group_mass,
)
from fedgan.simulator.prepare import prepare_data
from fedgan.simulator.scenario import load

ROOT = Path(__file__).resolve().parents[1]


def both(real: np.ndarray, labels: np.ndarray, fake: np.ndarray) -> tuple[list, list, float]:
    r = prdc(real, fake, 5)
    groups = sorted(set(labels.tolist()))
    codes = np.array([groups.index(v) for v in labels])
    hits = ball_hits(ball_pairs(real, fake, r.real_radii), codes, len(groups), len(fake))
    m, support = group_mass(hits)
    share = np.bincount(codes) / len(codes)
    literal = [g for g, x in zip(groups, m / share, strict=True) if x < FORGOTTEN_MASS_RATIO]
    on_support = [
        g for g, x in zip(groups, m / (share * support), strict=True) if x < FORGOTTEN_MASS_RATIO
    ]
    return literal, on_support, support


def main() -> None:
    s = load(ROOT / "scenarios" / "quickstart.yaml")
    _, held = prepare_data(s)
    labels = held.groups["mode"].to_numpy()
    print(f"{'case':46s} {'all samples':>14s} {'on-support':>12s} {'P':>6s}")
    for name in ("fedavg", "twin"):
        fake = np.load(ROOT / "tests" / "metrics" / f"{name}-quickstart-seed0.npy")
        lit, ons, p = both(held.X, labels, fake)
        print(f"{'quickstart ' + name:46s} {str(lit):>14s} {str(ons):>12s} {p:6.3f}")
    ring = {
        "n_modes": 8,
        "radius": 2.0,
        "sigma": 0.02,
        "minority_modes": [0, 1],
        "minority_weight": 0.02,
    }
    real = load_dataset("ring", 5000, 0, ring)
    rng = np.random.default_rng(1)
    w = np.array([0.02, 0.02] + [0.96 / 6] * 6)
    theta = np.linspace(0, 2 * np.pi, 9)[:-1]
    means = 2 * np.stack([np.cos(theta), np.sin(theta)], 1)
    for blur in (2.0, 4.0, 8.0):
        c = rng.choice(8, 2500, p=w)
        fake = means[c] + blur * 0.02 * rng.standard_normal((2500, 2))
        lit, ons, p = both(real.X, real.groups["mode"].to_numpy(), fake)
        print(f"{f'8-ring, {blur:g}σ blur':46s} {str(lit):>14s} {str(ons):>12s} {p:6.3f}")
    for d in (4.0, 6.0):
        for seed in (0, 1):
            real = load_dataset("two_gaussians", 2000, seed, {"distance": d, "sigma": 0.5})
            rng = np.random.default_rng(2000 + seed)
            a, b = np.array([-d / 2, 0]), np.array([d / 2, 0])
            t = rng.uniform(0.3, 0.7, (2000, 1))
            fake = (1 - t) * a + t * b + 0.25 * rng.standard_normal((2000, 2))
            lit, ons, p = both(real.X, real.groups["mode"].to_numpy(), fake)
            name = f"two Gaussians {d:g} apart, interpolated, seed {seed}"
            print(f"{name:46s} {str(lit):>14s} {str(ons):>12s} {p:6.3f}")


if __name__ == "__main__":
    main()
