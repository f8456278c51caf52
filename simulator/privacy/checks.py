"""What a `privacy:` section cannot run with, found before training (the preflight's share).

Under privacy only the privatized release leaves a client (see `simulator.privacy`): whatever
would read an un-noised statistic of a client's data is refused here, naming its key — a
strategy or weighting that reads the clients' local scores, losses or sizes, unequal client
weights (a weighted mean's sensitivity is the largest weight, not C/m), `critic_swap` at user
level (it moves private critics between clients un-noised; MD-GAN's own critic swaps are
refused in `MDGAN.check`), a plug-in protocol (its releases are unknown to the accountant),
adaptive clipping whose count noise would spend the whole budget. The decision for the
fairness weightings: refused, not noised — their scores would be further releases to account,
left to the every-skew weighting.
"""

from __future__ import annotations

from fedgan.simulator.scenario import Scenario
from fedgan.simulator.schedule import SCORE_READERS

BUILT_IN_PROTOCOLS = ("fedavg", "mdgan", "uagan", "dpfedavg_gan")

USER_LEVEL_STRATEGIES = ("fedavg",)
"""User level: the DP aggregator takes the strategy's place (a uniform mean of clipped
updates); a Flower strategy's own aggregation would be an un-noised release."""


def privacy_problems(s: Scenario, sizes: tuple[int, ...] = ()) -> list[str]:
    """Every problem of the scenario's `privacy:` section with the rest, as 'path: message'
    (`sizes`: the clients' training points — centralized: all of them —, for δ at sample
    level; () when the data could not be built)."""
    p, f = s.privacy, s.federation
    if p is None:
        return []
    out: list[str] = []
    if f is not None:
        if f.protocol not in BUILT_IN_PROTOCOLS:
            out.append(
                f"federation.protocol: {f.protocol} is a plug-in; under privacy the accountant "
                f"must know every release, which it does for {', '.join(BUILT_IN_PROTOCOLS)}"
            )
        name = s.strategy.name
        if name in SCORE_READERS:
            out.append(
                f"strategy.name: {name} weighs clients by statistics of their data (local "
                "scores, losses), which under privacy never reach the server; use fedavg"
            )
        elif p.level == "user" and f.protocol == "fedavg" and name not in USER_LEVEL_STRATEGIES:
            out.append(
                f"strategy.name: {name}: at user level the DP aggregator (clip, uniform mean, "
                "noise) is the aggregation; use fedavg"
            )
        if s.strategy.critic is not None and p.level == "user":
            out.append(
                "strategy.critic: at user level every federated array is clipped as one "
                "vector with one release a round; a second strategy for the critic would be "
                "a second, un-noised release"
            )
        params = f.protocol_params
        if params.get("weighting") is not None:
            out.append(
                "federation.protocol_params.weighting: a weighting reads the clients' local "
                "scores, which under privacy never reach the server (refused, not noised: "
                "README, 'Differential privacy')"
            )
        if f.protocol == "uagan" and params.get("pi", "size") != "uniform":
            out.append(
                "federation.protocol_params.pi: under privacy the clients' sizes are not "
                "released, and unequal weights raise the sensitivity; use pi: uniform"
            )
    out += _delta_problems(s, sizes)
    out += _dpsgd_problems(s)
    out += _adaptive_problems(s)
    return out


def _adaptive_problems(s: Scenario) -> list[str]:
    """Adaptive clipping's count noise must leave the update some of the budget: the update's
    multiplier z_Δ = (σ⁻² − (2σ_b)⁻²)^(−½) exists only for 2σ_b > σ (σ calibrated first when
    the scenario gives a target ε)."""
    p, f = s.privacy, s.federation
    if p is None or p.adaptive is None or p.level != "user" or f is None:
        return []
    from fedgan.simulator.cohorts import expected_cohort
    from fedgan.simulator.privacy.aggregate import update_noise_multiplier
    from fedgan.simulator.privacy.budget import noise_multiplier

    sigma = noise_multiplier(s)
    count = p.adaptive.count_noise or expected_cohort(s) / 20.0
    try:
        update_noise_multiplier(sigma, count)
    except ValueError:
        given = "" if p.adaptive.count_noise else " (its default: the expected cohort / 20)"
        return [
            f"privacy.adaptive.count_noise: {count:g}{given} is too small for σ = {sigma:.3g}: "
            f"the clipped count alone would spend the budget; it must exceed σ/2 = {sigma / 2:.3g}"
        ]
    return []


def _delta_problems(s: Scenario, sizes: tuple[int, ...]) -> list[str]:
    """δ < 1/N at sample level, N the fewest training points of a client (the schema checks
    δ against the clients at user level)."""
    p = s.privacy
    assert p is not None
    if p.level != "sample" or not sizes:
        return []
    n = min(sizes)
    out = []
    if p.delta >= 1.0 / n:
        out.append(
            f"privacy.delta: {p.delta:g} must be < 1/N = {1.0 / n:g} (N = {n}, the fewest "
            "training points of a client: one point is the unit at sample level)"
        )
    if s.gan.batch_size > n:
        out.append(
            f"gan.batch_size: {s.gan.batch_size} exceeds the {n} training points of the "
            "smallest client: DP-SGD draws each batch from the client's own points (q = B/n ≤ 1)"
        )
    return out


def _dpsgd_problems(s: Scenario) -> list[str]:
    """What DP-SGD cannot clip per sample in the critic (batch statistics)."""
    p = s.privacy
    if p is None or p.level != "sample" or s.gan.critic.kind in PER_SAMPLE_CRITICS:
        return []
    from fedgan.simulator.gan import dpsgd  # torch: only for a plug-in critic, built to look

    return dpsgd.dp_problems(s.gan.config())


PER_SAMPLE_CRITICS = ("mlp", "two_branch", "conv", "dcgan")
"""The built-in critic kinds: none uses batch statistics (`simulator.gan.dpsgd.dp_problems`
says the same, building the network), so `validate` needs no torch for them."""
