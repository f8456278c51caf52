"""Who trains in a round: the cohort, drawn from the scenario seed over partition ids.

Without privacy, and under `privacy.sampling: fixed`, a round takes `clients_per_round` clients
without replacement (all of them by default) — Flower's own sampling is fixed-size too. Under
user-level privacy with `sampling: poisson`, each client joins independently with
q = clients_per_round / N: the cohort's size varies, which is what the Poisson-subsampled
Gaussian accountant assumes (`simulator.privacy.accountant`).
"""

from __future__ import annotations

import math

from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import numpy_rng


def expected_cohort(s: Scenario) -> int:
    """Clients a round takes (fixed) or takes on average (Poisson): `clients_per_round`, by
    default all of them."""
    assert s.federation is not None
    n = s.partition.n_clients
    return min(s.federation.clients_per_round or n, n)


def poisson_cohorts(s: Scenario) -> bool:
    """Whether rounds sample clients independently (user-level DP with Poisson sampling)."""
    p = s.privacy
    return p is not None and p.level == "user" and p.sampling == "poisson"


def sample_clients(s: Scenario, round_: int) -> list[int]:
    """The partition ids trained in `round_` (seeded by scenario seed and round), sorted."""
    assert s.federation is not None
    n = s.partition.n_clients
    k = expected_cohort(s)
    rng = numpy_rng(s.seed, "sampling", round_)
    if poisson_cohorts(s):
        return [int(i) for i in (rng.random(n) < k / n).nonzero()[0]]
    if k >= n:
        return list(range(n))
    return sorted(rng.choice(n, size=k, replace=False).tolist())


def participation(s: Scenario, rounds: int) -> list[int]:
    """[N] how many of rounds 1..`rounds` sample each client. Extended from the last call for
    the same scenario (a run asks after every round: one round's sampling each time)."""
    key = s.to_json()
    done, counts = _PARTICIPATION.get(key, (0, [0] * s.partition.n_clients))
    if rounds < done:
        done, counts = 0, [0] * s.partition.n_clients
    counts = list(counts)
    for r in range(done + 1, rounds + 1):
        for c in sample_clients(s, r):
            counts[c] += 1
    _PARTICIPATION.clear()  # one run at a time: keep memory flat
    _PARTICIPATION[key] = (rounds, counts)
    return list(counts)


_PARTICIPATION: dict[str, tuple[int, list[int]]] = {}
"""The last scenario's participation counts after its last asked round."""


def steps_for(s: Scenario, n_train: int) -> int:
    """Generator steps a round of a client with `n_train` training points: `local_steps`, or
    with `local_epochs`, enough batches for that many passes over its points."""
    assert s.federation is not None
    f = s.federation
    if f.local_epochs is None:
        return f.local_steps
    return max(1, math.ceil(f.local_epochs * n_train / s.gan.batch_size))
