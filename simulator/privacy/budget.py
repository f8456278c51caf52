"""A run's privacy budget: the noise multiplier it runs with and its ε after every round.

What is accounted, per `privacy.level`:
- `user`: one unit, the client. FedAvg releases one noised mean a round; a server-held
  generator (MD-GAN, UA-GAN) one noised sum of answers per generator step, `local_steps` a
  round. Population N = `partition.n_clients`, cohort = `clients_per_round` (Poisson: its
  expectation). Every round counts, whoever answered (the accountant assumes the sampling, not
  the replies).
- `sample`: one unit per client, a training point of its. Every critic step of a client is one
  DP-SGD release over its n_k training points with batch B (`gan.batch_size`): n_critic ×
  local steps per round it is sampled in. Its ε grows only in the rounds it trains; the run's ε
  is the largest client's.

`noise_multiplier(s, sizes)` is `privacy.noise_multiplier`, or — with `target_epsilon` — the
smallest σ whose ε at the end of the planned rounds is ≤ the target (for every client at
sample level), calibrated before training; `extension_problems` refuses a resume whose extra
rounds would pass the target.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fedgan.simulator.cohorts import expected_cohort, participation, steps_for
from fedgan.simulator.privacy import accountant
from fedgan.simulator.scenario import Scenario

Sizes = tuple[int, ...]
"""Training points of each client (centralized: of the one training set); () at user level,
where the accountant needs none."""

USER = -1
"""The unit key of user-level accounting (sample level: the client's partition id)."""

SERVER_HELD = ("mdgan", "uagan")
"""Protocols whose clients answer once per generator step (one release per step at user level)."""


@dataclass(frozen=True)
class Unit:
    """One accounted unit: who (`key`: USER or a client id), how it is sampled (`sampling`,
    `cohort` of `population`) and how many releases one round it takes part in makes."""

    key: int
    sampling: accountant.Sampling
    population: int
    cohort: int
    per_round: int


def units(s: Scenario, sizes: Sizes = ()) -> list[Unit]:
    """The run's accounted units (`sizes`: needed at sample level)."""
    p = s.privacy
    assert p is not None
    f = s.federation
    if p.level == "user":
        assert f is not None
        per_round = f.local_steps if f.protocol in SERVER_HELD else 1
        return [Unit(USER, p.sampling, s.partition.n_clients, expected_cohort(s), per_round)]
    b, nc = s.gan.batch_size, s.gan.n_critic
    if f is None:  # the centralized DP-SGD run: one unit set, all training points
        (n,) = sizes
        return [Unit(0, p.sampling, n, min(b, n), nc)]
    return [Unit(c, p.sampling, n, min(b, n), nc * steps_for(s, n)) for c, n in enumerate(sizes)]


def releases(s: Scenario, sizes: Sizes, rounds: int) -> dict[int, int]:
    """Releases each unit has made after `rounds` rounds (centralized: generator steps)."""
    us = units(s, sizes)
    if s.federation is None:
        return {u.key: u.per_round * rounds for u in us}
    if us[0].key == USER:
        return {USER: us[0].per_round * rounds}
    counts = participation(s, rounds)
    return {u.key: u.per_round * counts[u.key] for u in us}


def epsilon(s: Scenario, unit: Unit, steps: int, noise: float | None = None) -> float:
    """ε of `unit` after `steps` releases at the run's δ (noise: the run's σ by default)."""
    p = s.privacy
    assert p is not None
    return _epsilon(
        unit.sampling,
        unit.population,
        unit.cohort,
        noise if noise is not None else p.noise_multiplier or 0.0,
        steps,
        p.delta,
        p.accountant,
    )


def _epsilon(
    sampling: accountant.Sampling,
    population: int,
    cohort: int,
    noise: float,
    steps: int,
    delta: float,
    kind: str,
) -> float:
    """ε of one unit: RDP from its cached curve (one RDP computation per unit's settings, then
    a conversion per round — a run writes ε every round); PLD composed anew (slower)."""
    if kind == "rdp":
        return _curve(sampling, population, cohort, noise).epsilon(steps, delta)
    return accountant.epsilon(
        sampling=sampling,
        population=population,
        cohort=cohort,
        noise_multiplier=noise,
        steps=steps,
        delta=delta,
        accountant="pld",
    )


@functools.lru_cache(maxsize=4096)
def _curve(
    sampling: accountant.Sampling, population: int, cohort: int, noise: float
) -> accountant.RdpCurve:
    return accountant.RdpCurve(sampling, population, cohort, noise)


def noise_multiplier(s: Scenario, sizes: Sizes = ()) -> float:
    """σ the run adds: `privacy.noise_multiplier`, or calibrated to `target_epsilon` over the
    scenario's rounds (or, centralized, its steps)."""
    p = s.privacy
    assert p is not None
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    assert p.target_epsilon is not None
    rounds = s.federation.rounds if s.federation is not None else s.train.steps
    key = (s.to_json(), rounds, sizes)
    if key not in _CALIBRATED:
        _CALIBRATED[key] = _calibrate(s, sizes, rounds)
    return _CALIBRATED[key]


_CALIBRATED: dict[tuple[str, int, tuple[int, ...]], float] = {}
"""Calibrated σ by (scenario, rounds, the units' populations): a run calibrates once."""


def _calibrate(s: Scenario, sizes: Sizes, rounds: int) -> float:
    """The smallest σ with every unit's ε after `rounds` ≤ the target: the largest of the
    units' own calibrations (ε falls as σ grows, for each unit)."""
    p = s.privacy
    assert p is not None and p.target_epsilon is not None
    done = releases(s, sizes, rounds)
    needs = {
        (u.sampling, u.population, u.cohort, done[u.key]) for u in units(s, sizes) if done[u.key]
    }
    return max(
        (
            accountant.calibrate(
                target_epsilon=p.target_epsilon,
                sampling=sampling,
                population=population,
                cohort=cohort,
                steps=steps,
                delta=p.delta,
                accountant=p.accountant,
            )
            for sampling, population, cohort, steps in sorted(needs)
        ),
        default=0.0,
    )


def run_epsilon(
    s: Scenario, sizes: Sizes, rounds: int, noise: float | None = None
) -> dict[int, float]:
    """Each unit's ε after `rounds` rounds (USER: the one user-level ε)."""
    sigma = noise if noise is not None else noise_multiplier(s, sizes)
    done = releases(s, sizes, rounds)
    return {u.key: epsilon(s, u, done[u.key], sigma) for u in units(s, sizes)}


def flower_epsilon(s: Scenario, sizes: Sizes, rounds: int, noise: float | None = None) -> float:
    """What Flower's own accountant would report for the same releases: no amplification by
    sampling (the largest unit's releases, composed as full-participation Gaussians —
    `accountant.flower_epsilon`, read off the cached curve of a cohort of the whole population:
    dp-accounting's q = 1 event is the Gaussian, the same orders and conversion)."""
    p = s.privacy
    assert p is not None
    sigma = noise if noise is not None else noise_multiplier(s, sizes)
    steps = max(releases(s, sizes, rounds).values(), default=0)
    return _curve("poisson", 1, 1, sigma).epsilon(steps, p.delta)


def extension_problems(old: Scenario, new: Scenario, sizes: Sizes) -> list[str]:
    """A resume to more rounds under a `target_epsilon`: refused when the run, with the σ it
    was calibrated with, would end above the target."""
    p = old.privacy
    if p is None or p.target_epsilon is None or new.federation is None:
        return []
    sigma = noise_multiplier(old, sizes)
    eps = max(run_epsilon(new, sizes, new.federation.rounds, sigma).values(), default=0.0)
    if eps <= p.target_epsilon * (1 + 1e-9):
        return []
    return [
        f"privacy.target_epsilon: extending to {new.federation.rounds} rounds would spend "
        f"ε = {eps:.3g} > {p.target_epsilon:g} with the σ = {sigma:.4g} the run was calibrated "
        "with; a resume may not pass the target"
    ]
