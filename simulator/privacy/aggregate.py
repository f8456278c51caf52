"""The seeded DP aggregator of user-level DP-FedAvg (McMahan et al. 2018) — and of any release
that sums one clipped vector per client (MD-GAN's feedback, UA-GAN's answers).

Each client's contribution — an update Δ_k = θ_k − θ of *every* federated array, or an answer
block — is one vector, clipped to L2 norm C as a whole (Δ_k · min(1, C/‖Δ_k‖)), the clipped
vectors summed, Gaussian noise of std σ·C added to the sum (σ the noise multiplier), and the
sum divided by the *expected* cohort (a fixed number: dividing by the realized count would leak
it): the uniform mean's sensitivity is C / expected cohort under add/remove neighbours, 2C /
cohort under replace-one (fixed cohorts; `simulator.privacy.accountant` accounts for the 2).

Why our own and not Flower's `DifferentialPrivacyServerSideFixedClipping`: that wrapper draws
its noise from NumPy's global generator (a run is not reproducible, and a resume draws other
noise), adds it to every array of the record one by one, and under a per-network strategy
clips the generator and the critic separately (two releases a round); its clipping computes
current + (reply − current) in float32. Here the noise comes from the scenario seed, the round
and the exchange (`simulator.seeding.numpy_rng`), so a run and its resume draw the same noise,
and the arithmetic is float64 until the new arrays are written. A test holds our clipping and
noise scale against Flower's wrapper (tests/privacy/test_aggregate.py).

A non-finite contribution (a diverged client) counts as a zero vector: dropping it would make
the cohort data-dependent; it is counted in `clipped`. Adaptive clipping (Andrew et al. 2021):
the share of contributions with norm ≤ C, noised, moves C toward a quantile of the norms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from fedgan.simulator.seeding import numpy_rng


@dataclass(frozen=True)
class Adaptive:
    """Adaptive clipping's settings: move C toward the `target_quantile` of the contributions'
    norms with step `lr` (geometric update), the clipped count noised with std `count_noise`."""

    target_quantile: float
    lr: float
    count_noise: float


@dataclass
class Released:
    """One release: the noised mean of the clipped contributions (as arrays), what the clip
    did and the clip in force."""

    mean: dict[str, np.ndarray]
    norms: np.ndarray
    """[K] the contributions' L2 norms before clipping (inf: non-finite)."""
    clipped: int
    """Contributions that were scaled down (or were non-finite)."""
    clip: float

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / len(self.norms) if len(self.norms) else 0.0


def update_noise_multiplier(noise_multiplier: float, count_noise: float) -> float:
    """The update's noise multiplier z_Δ under adaptive clipping, so that the update (z_Δ) and
    the clipped count (std `count_noise` on a sum of bits shifted to ±½: multiplier 2σ_b)
    compose to one Gaussian release of multiplier z (Andrew et al. 2021, Thm. 1):
    z_Δ = (z⁻² − (2σ_b)⁻²)^(−½). Raises ValueError when 2σ_b ≤ z (no z_Δ is large enough)."""
    z, two_b = noise_multiplier, 2.0 * count_noise
    if z == 0.0:
        return 0.0
    if two_b <= z:
        raise ValueError(
            f"privacy.adaptive.count_noise: {count_noise:g} is too small for noise_multiplier "
            f"{z:g}: the count alone would spend the budget (needs 2·count_noise > σ)"
        )
    return float((z**-2 - two_b**-2) ** -0.5)


@dataclass
class DPAggregator:
    """Clip, sum, noise, divide — seeded (see the module).

    `clip`: C (the current one under adaptive clipping: part of the run's state);
    `noise_multiplier`: σ of the *update* (under adaptive clipping, `update_noise_multiplier`);
    `expected_cohort`: the divisor (q·N for Poisson cohorts, m for fixed ones); `seed`: the
    scenario's.
    """

    clip: float
    noise_multiplier: float
    expected_cohort: float
    seed: int
    adaptive: Adaptive | None = None
    purpose: str = "dp-noise"
    history: list[float] = field(default_factory=list)
    """The clip of each release so far (adaptive clipping's trace)."""

    def release(
        self, vectors: Sequence[np.ndarray], round_: int, step: int = 0
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(noised mean [P], norms [K], clipped count) of the contributions `vectors` ([P]
        each, float64 after the cast), with noise drawn for (round, step)."""
        rng = numpy_rng(self.seed, self.purpose, round_, step)
        c = self.clip
        size = int(vectors[0].size) if vectors else 0
        total = np.zeros(size, dtype=np.float64)
        norms = np.empty(len(vectors), dtype=np.float64)
        clipped = 0
        for i, v in enumerate(vectors):
            v = np.asarray(v, dtype=np.float64).ravel()
            norm = float(np.linalg.norm(v)) if np.isfinite(v).all() else math.inf
            norms[i] = norm
            if not math.isfinite(norm):
                clipped += 1  # a diverged client counts as a zero vector (see the module)
                continue
            if norm > c:
                clipped += 1
                v = v * (c / norm)
            total += v
        if self.noise_multiplier > 0 and size:
            total += rng.normal(0.0, self.noise_multiplier * c, size)
        mean = total / self.expected_cohort
        if self.adaptive is not None:
            self._adapt(norms, rng)
        self.history.append(c)
        return mean, norms, clipped

    def _adapt(self, norms: np.ndarray, rng: np.random.Generator) -> None:
        """C ← C·exp(−lr·(b̃ − γ)), b̃ the noised share of norms ≤ C (drawn after the update's
        noise, from the same stream). The released count is of the bits centred to ±½ —
        Σ(b_k − ½) + N(0, σ_b²), whose add/remove sensitivity is ½, so its multiplier is 2σ_b
        as `update_noise_multiplier` accounts (Andrew et al. 2021) — then shifted back by
        the expected cohort's ½·m, a public number. (Summing raw 0/1 bits, as Flower's adaptive
        wrappers do, has sensitivity 1: multiplier σ_b, half the privacy.)"""
        a = self.adaptive
        assert a is not None
        centred = float(np.sum(norms <= self.clip)) - 0.5 * len(norms)
        noised = (centred + rng.normal(0.0, a.count_noise)) / self.expected_cohort + 0.5
        self.clip = float(self.clip * math.exp(-a.lr * (noised - a.target_quantile)))

    def combine(
        self,
        current: Mapping[str, np.ndarray],
        replies: Sequence[Mapping[str, np.ndarray]],
        round_: int,
        step: int = 0,
    ) -> Released:
        """DP-FedAvg of `replies` (each client's arrays, the keys of `current`): their updates
        from `current` as one vector each, released; `mean` holds the new arrays
        current + noised mean update, in the arrays' dtypes."""
        keys = sorted(current)
        base = [np.asarray(current[k], dtype=np.float64) for k in keys]
        pairs = list(zip(keys, base, strict=True))
        vectors = [
            np.concatenate([(np.asarray(r[k], np.float64) - b).ravel() for k, b in pairs])
            if keys
            else np.zeros(0)
            for r in replies
        ]
        clip = self.clip
        mean, norms, clipped = self.release(vectors, round_, step)
        out: dict[str, np.ndarray] = {}
        at = 0
        for k, b in zip(keys, base, strict=True):
            part = mean[at : at + b.size].reshape(b.shape)
            at += b.size
            out[k] = (b + part).astype(np.asarray(current[k]).dtype)
        return Released(out, norms, clipped, clip)

    def to_data(self) -> dict[str, float]:
        """What a checkpoint keeps (the adaptive clip; the rest is the scenario's)."""
        return {"clip": self.clip}

    def load_data(self, data: Mapping[str, float]) -> None:
        self.clip = float(data["clip"])
