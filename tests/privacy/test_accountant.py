"""The privacy accountant against independent sources: dp-accounting called directly, Opacus,
closed forms of the Gaussian mechanism, Flower's own accountant and the measured notes.

No expected value here comes from the module's own output.
"""

from __future__ import annotations

import json
import math

import pytest

dpa = pytest.importorskip("dp_accounting")

from dp_accounting import (  # noqa: E402
    GaussianDpEvent,
    NeighboringRelation,
    PoissonSampledDpEvent,
    SampledWithoutReplacementDpEvent,
)
from dp_accounting.pld import PLDAccountant  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402
from fedgan.simulator.privacy.accountant import (  # noqa: E402
    USER_LEVEL,
    Ledger,
    adaptive_noise,
    calibrate,
    epsilon,
    flower_epsilon,
)
from scipy.optimize import brentq  # noqa: E402
from scipy.stats import norm  # noqa: E402

# dp-accounting's DEFAULT_RDP_ORDERS, the grid the module documents, written out.
ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]


def rdp_to_dp(rdp_at, delta: float) -> float:
    """ε from an RDP curve: Canonne, Kamath & Steinke 2020 (arXiv:2004.00010) Prop. 12, also
    Asoodeh et al. 2020 — ε = r(α) + log((α−1)/α) − (log δ + log α)/(α−1), minimised over α."""
    return max(
        0.0,
        min(
            rdp_at(a) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
            for a in ORDERS
        ),
    )


def gaussian_delta(eps: float, mu: float) -> float:
    """Balle & Wang 2018, Theorem 8: the exact δ(ε) of a Gaussian mechanism with μ = Δ/std."""
    return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


def gaussian_epsilon(mu: float, delta: float) -> float:
    return brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, 200.0, xtol=1e-12)


# ------------------------------------------------------------------ epsilon vs dp-accounting

SETTINGS = [  # (population, cohort, σ, steps, δ)
    (1000, 50, 1.0, 400, 5e-4),
    (100, 10, 0.8, 30, 1e-5),
    (5000, 20, 2.5, 1000, 1e-6),
]


@pytest.mark.parametrize(("n", "m", "sigma", "t", "delta"), SETTINGS)
def test_poisson_equals_dp_accounting(n, m, sigma, t, delta):
    direct = RdpAccountant()
    direct.compose(PoissonSampledDpEvent(m / n, GaussianDpEvent(sigma)), t)
    got = epsilon(
        sampling="poisson", population=n, cohort=m, noise_multiplier=sigma, steps=t, delta=delta
    )
    assert got == pytest.approx(direct.get_epsilon(delta), rel=1e-12)


@pytest.mark.parametrize(("n", "m", "sigma", "t", "delta"), SETTINGS)
def test_fixed_equals_dp_accounting_replace_one_half_sigma(n, m, sigma, t, delta):
    # Replacing one unit moves the clipped sum by 2C; noise σC is σ/2 of that sensitivity.
    direct = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    direct.compose(SampledWithoutReplacementDpEvent(n, m, GaussianDpEvent(sigma / 2)), t)
    got = epsilon(
        sampling="fixed", population=n, cohort=m, noise_multiplier=sigma, steps=t, delta=delta
    )
    assert got == pytest.approx(direct.get_epsilon(delta), rel=1e-12)


def test_poisson_pld_equals_dp_accounting():
    direct = PLDAccountant()
    direct.compose(PoissonSampledDpEvent(0.05, GaussianDpEvent(2.0)), 50)
    kwargs = dict(
        sampling="poisson", population=1000, cohort=50, noise_multiplier=2.0, steps=50, delta=1e-5
    )
    got = epsilon(**kwargs, accountant="pld")
    assert got == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    assert got < epsilon(**kwargs)  # PLD is the tighter account of the same mechanism


def test_pld_refuses_fixed_subsampled_cohort():
    with pytest.raises(ValueError, match="SampledWithoutReplacementDpEvent"):
        epsilon(
            sampling="fixed",
            population=100,
            cohort=10,
            noise_multiplier=1.0,
            steps=3,
            delta=1e-5,
            accountant="pld",
        )


# --------------------------------------------------------------------------- epsilon vs Opacus


@pytest.mark.parametrize(
    ("q", "sigma", "t", "delta"),
    [(0.05, 1.0, 400, 1e-4), (0.08, 2.0, 4000, 1e-4), (0.01, 1.1, 10_000, 1e-5)],
)
def test_poisson_matches_opacus(q, sigma, t, delta):
    pytest.importorskip("opacus")
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=t, orders=orders)
    expected, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    population = 10_000
    got = epsilon(
        sampling="poisson",
        population=population,
        cohort=round(q * population),
        noise_multiplier=sigma,
        steps=t,
        delta=delta,
    )
    assert got == pytest.approx(expected, rel=0.01)


# --------------------------------------------------- fixed, m = N: the Gaussian's closed forms


@pytest.mark.parametrize(
    ("sigma", "t", "delta"), [(4.0, 4, 1e-5), (8.0, 100, 1e-6), (1.0, 400, 5e-4)]
)
def test_fixed_full_cohort_rdp_closed_form(sigma, t, delta):
    # T releases, sensitivity 2C, noise σC: one Gaussian of μ = 2√T/σ, RDP α·μ²/2 = α·2T/σ².
    expected = rdp_to_dp(lambda a: a * 2 * t / sigma**2, delta)
    got = epsilon(
        sampling="fixed", population=50, cohort=50, noise_multiplier=sigma, steps=t, delta=delta
    )
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("sigma", "t", "delta"), [(6.0, 4, 1e-6), (10.0, 16, 1e-6), (2.0, 1, 1e-3)]
)
def test_fixed_full_cohort_pld_analytic_gaussian(sigma, t, delta):
    mu = 2 * math.sqrt(t) / sigma
    exact = gaussian_epsilon(mu, delta)
    got = epsilon(
        sampling="fixed",
        population=50,
        cohort=50,
        noise_multiplier=sigma,
        steps=t,
        delta=delta,
        accountant="pld",
    )
    # PLD's discretisation is pessimistic: never below the exact ε, and close to it. A doubled
    # (or halved) sensitivity would miss by a factor ~2.
    assert exact - 1e-6 <= got <= exact * 1.002
    assert gaussian_delta(got, mu) <= delta * (1 + 1e-6)


# ------------------------------------------------------------------ the notes' measured numbers


@pytest.mark.parametrize(
    ("sampling", "n", "m", "sigma", "t", "delta", "expected"),
    [
        ("poisson", 1000, 50, 1.0, 400, 5e-4, 5.7),
        ("fixed", 1000, 50, 1.0, 400, 5e-4, 103.0),
        ("poisson", 100, 10, 1.0, 30, 1e-5, 4.85),
        ("fixed", 100, 10, 1.0, 30, 1e-5, 32.3),
        ("poisson", 1000, 50, 1.0, 400, 1e-4, 6.5),
        ("poisson", 1000, 50, 1.0, 1000, 1e-4, 10.7),
        ("poisson", 1000, 50, 1.0, 4000, 1e-4, 25.0),
        ("poisson", 1000, 50, 2.0, 400, 1e-4, 2.1),
        ("poisson", 1000, 50, 2.0, 1000, 1e-4, 3.5),
        ("poisson", 1000, 50, 2.0, 4000, 1e-4, 7.9),
        ("poisson", 1600, 128, 1.0, 4000, 1e-4, 51.0),
        ("poisson", 1600, 128, 2.0, 4000, 1e-4, 14.0),
        ("poisson", 1600, 128, 3.0, 4000, 1e-4, 8.2),
        ("poisson", 10**6, 1000, 1.0, 1000, 1e-6, 0.87),
    ],
)
def test_notes_anchors(sampling, n, m, sigma, t, delta, expected):
    got = epsilon(
        sampling=sampling, population=n, cohort=m, noise_multiplier=sigma, steps=t, delta=delta
    )
    assert got == pytest.approx(expected, rel=0.02)


def test_notes_anchor_no_amplification_and_library_fixed():
    assert flower_epsilon(noise_multiplier=1.0, steps=400, delta=5e-4) == pytest.approx(
        275, rel=0.02
    )
    # The library's documented use (σ unhalved) gives the notes' 11.6: ours is ~9x that.
    naive = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    naive.compose(SampledWithoutReplacementDpEvent(1000, 50, GaussianDpEvent(1.0)), 400)
    assert naive.get_epsilon(5e-4) == pytest.approx(11.6, rel=0.02)


def test_edges():
    common = dict(population=100, cohort=10, delta=1e-5)
    for sampling in ("poisson", "fixed"):
        assert epsilon(sampling=sampling, noise_multiplier=1.0, steps=0, **common) == 0.0
        assert epsilon(sampling=sampling, noise_multiplier=0.0, steps=5, **common) == math.inf
        assert epsilon(sampling=sampling, noise_multiplier=0.0, steps=0, **common) == 0.0
    assert flower_epsilon(noise_multiplier=1.0, steps=0, delta=1e-5) == 0.0
    assert flower_epsilon(noise_multiplier=0.0, steps=3, delta=1e-5) == math.inf
    bad = [
        dict(
            sampling="uniform", population=10, cohort=1, noise_multiplier=1.0, steps=1, delta=1e-5
        ),
        dict(sampling="fixed", population=10, cohort=11, noise_multiplier=1.0, steps=1, delta=1e-5),
        dict(sampling="fixed", population=10, cohort=0, noise_multiplier=1.0, steps=1, delta=1e-5),
        dict(sampling="fixed", population=10, cohort=2, noise_multiplier=-1.0, steps=1, delta=1e-5),
        dict(sampling="fixed", population=10, cohort=2, noise_multiplier=1.0, steps=-1, delta=1e-5),
        dict(sampling="fixed", population=10, cohort=2, noise_multiplier=1.0, steps=1, delta=0.0),
        dict(sampling="fixed", population=10, cohort=2, noise_multiplier=1.0, steps=1.5, delta=0.1),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            epsilon(**kwargs)
    with pytest.raises(ValueError):
        epsilon(
            sampling="poisson",
            population=10,
            cohort=2,
            noise_multiplier=1.0,
            steps=1,
            delta=1e-5,
            accountant="prv",
        )


# ------------------------------------------------------------------------------- flower_epsilon


@pytest.mark.parametrize(
    ("sigma", "t", "delta"), [(1.0, 100, 1e-5), (0.7, 30, 1e-3), (3.0, 2000, 1e-6)]
)
def test_flower_epsilon_is_flowers_code_path(sigma, t, delta):
    from flwr.supercore import privacy_accounting as fpa
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant as FlowerRdp

    # What DifferentialPrivacyServerSideFixedClipping does with an accountant: the only model
    # it accepts, one GaussianPrivacyEvent(σ, cohort, N) composed per round.
    population, cohort = 1000, 50
    flower = FlowerRdp(
        fpa.PrivacyConfig(
            target_delta=delta,
            population_size=population,
            neighboring_relation=fpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=fpa.SamplingMethod.NO_AMPLIFICATION,
        )
    )
    for _ in range(t):
        flower.compose(fpa.GaussianPrivacyEvent(sigma, cohort, population))
    expected = flower.get_privacy_spent().epsilon
    got = flower_epsilon(noise_multiplier=sigma, steps=t, delta=delta)
    assert got == pytest.approx(expected, rel=1e-9)
    # ...and what that is: T unsampled Gaussians, RDP α·T/(2σ²) (add/remove, sensitivity C).
    assert got == pytest.approx(rdp_to_dp(lambda a: a * t / (2 * sigma**2), delta), rel=1e-9)


# ------------------------------------------------------------------------------------ calibrate


@pytest.mark.parametrize(
    ("sampling", "n", "m", "t", "delta", "target"),
    [
        ("poisson", 1600, 128, 4000, 1e-4, 10.0),
        ("poisson", 1600, 128, 4000, 1e-4, 1.0),
        ("poisson", 1000, 50, 400, 1e-5, 3.0),
        ("poisson", 10**6, 1000, 1000, 1e-6, 0.5),
        ("fixed", 100, 10, 30, 1e-5, 8.0),
        ("fixed", 50, 50, 100, 1e-5, 2.0),
        ("fixed", 50, 50, 10, 1e-3, 30.0),
    ],
)
def test_calibrate_reaches_target_minimally(sampling, n, m, t, delta, target):
    def eps(s: float) -> float:
        return epsilon(
            sampling=sampling, population=n, cohort=m, noise_multiplier=s, steps=t, delta=delta
        )

    sigma = calibrate(
        target_epsilon=target, sampling=sampling, population=n, cohort=m, steps=t, delta=delta
    )
    reached = eps(sigma)
    assert reached <= target
    assert reached >= 0.99 * target  # ends at, not far below, the target
    assert eps(0.98 * sigma) > target  # minimal


def test_calibrate_pld_full_cohort_matches_analytic_gaussian():
    # Independent: the exact μ meeting (ε, δ) for a Gaussian, σ = 2√T/μ.
    t, delta, target = 1, 1e-5, 1.0
    mu = brentq(lambda x: gaussian_delta(target, x) - delta, 1e-3, 50.0, xtol=1e-12)
    sigma = calibrate(
        target_epsilon=target,
        sampling="fixed",
        population=20,
        cohort=20,
        steps=t,
        delta=delta,
        accountant="pld",
    )
    assert sigma == pytest.approx(2 * math.sqrt(t) / mu, rel=0.01)


def test_calibrate_refusals():
    common = dict(sampling="poisson", population=100, cohort=10, steps=10, delta=1e-5)
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate(target_epsilon=0.0, **common)
    with pytest.raises(ValueError, match="SampledWithoutReplacementDpEvent"):
        calibrate(
            target_epsilon=1.0,
            sampling="fixed",
            population=100,
            cohort=10,
            steps=10,
            delta=1e-5,
            accountant="pld",
        )
    assert calibrate(target_epsilon=1.0, **{**common, "steps": 0}) == 0.0


# ------------------------------------------------------------------------------- adaptive_noise


def test_adaptive_noise_formula():
    # Andrew et al. 2021, Theorem 1, by hand: z = (z_Δ⁻² + (2σ_b)⁻²)^(−1/2).
    assert adaptive_noise(1.0, 2.5) == pytest.approx((1 + 1 / 25) ** -0.5, rel=1e-12)
    assert adaptive_noise(1.0, 2.5, centered=False) == pytest.approx((1 + 1 / 6.25) ** -0.5)
    assert adaptive_noise(1.3, math.inf) == pytest.approx(1.3)
    assert adaptive_noise(0.0, 2.0) == 0.0
    assert adaptive_noise(1.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        adaptive_noise(-1.0, 1.0)


@pytest.mark.parametrize(("z", "count_noise"), [(1.0, 2.5), (0.5, 0.3), (2.0, 10.0)])
def test_adaptive_noise_inverts_flowers_split(z, count_noise):
    # Flower (like TFF) splits a target z into the update's z_Δ for a given σ_b by the paper's
    # formula: feeding that z_Δ back must give z.
    from flwr.supercore.differential_privacy import compute_adaptive_noise_params

    _, z_delta = compute_adaptive_noise_params(z, 50, count_noise)
    assert adaptive_noise(z_delta, count_noise) == pytest.approx(z, rel=1e-12)


# ---------------------------------------------------------------------------------------- Ledger


def test_ledger_composes_heterogeneous_poisson_runs_like_dp_accounting():
    ledger = Ledger()
    ledger.add(USER_LEVEL, "poisson", 1000, 50, 1.0, 60)
    ledger.add(USER_LEVEL, "poisson", 1000, 50, 1.0, 40)  # merges: same parameters
    ledger.add(USER_LEVEL, "poisson", 1000, 100, 1.5, 200)
    assert ledger.runs[USER_LEVEL] == [
        ("poisson", 1000, 50, 1.0, 100),
        ("poisson", 1000, 100, 1.5, 200),
    ]
    direct = RdpAccountant()
    direct.compose(PoissonSampledDpEvent(0.05, GaussianDpEvent(1.0)), 100)
    direct.compose(PoissonSampledDpEvent(0.1, GaussianDpEvent(1.5)), 200)
    assert ledger.epsilon(USER_LEVEL, 1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)


def test_ledger_pld_composes_full_cohort_runs_into_one_gaussian():
    # Gaussians compose exactly: μ² adds, μ_i² = 4 T_i / σ_i² (sensitivity 2C, noise σ_i C).
    ledger = Ledger()
    ledger.add(USER_LEVEL, "fixed", 30, 30, 6.0, 2)
    ledger.add(USER_LEVEL, "fixed", 30, 30, 9.0, 5)
    mu = math.sqrt(4 * 2 / 6.0**2 + 4 * 5 / 9.0**2)
    exact = gaussian_epsilon(mu, 1e-6)
    got = ledger.epsilon(USER_LEVEL, 1e-6, "pld")
    assert exact - 1e-6 <= got <= exact * 1.002


def test_ledger_composes_heterogeneous_fixed_runs_like_dp_accounting():
    ledger = Ledger()
    ledger.add(3, "fixed", 100, 10, 1.0, 20)
    ledger.add(3, "fixed", 100, 100, 2.0, 10)  # a full-cohort stretch: no amplification
    direct = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    direct.compose(SampledWithoutReplacementDpEvent(100, 10, GaussianDpEvent(0.5)), 20)
    direct.compose(GaussianDpEvent(1.0), 10)
    assert ledger.epsilon(3, 1e-5) == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    with pytest.raises(ValueError, match="SampledWithoutReplacementDpEvent"):
        ledger.epsilon(3, 1e-5, "pld")


def test_ledger_units_round_trip_and_refusals():
    ledger = Ledger()
    ledger.add(0, "poisson", 1792, 128, 2.0, 500)
    ledger.add(1, "poisson", 1152, 128, 2.0, 500)
    ledger.add(1, "poisson", 1152, 128, 2.0, 0)  # nothing released, nothing recorded
    ledger.add(2, "fixed", 20, 20, 3.0, 10)
    assert ledger.epsilon(7, 1e-4) == 0.0  # a unit never released about
    per_unit = [ledger.epsilon(u, 1e-4) for u in (0, 1, 2)]
    assert per_unit[1] > per_unit[0]  # the smaller client is sampled at a higher rate
    assert ledger.max_epsilon(1e-4) == max(per_unit)
    assert Ledger().max_epsilon(1e-4) == 0.0

    data = json.loads(json.dumps(ledger.to_data()))
    again = Ledger.from_data(data)
    assert again == ledger
    assert again.max_epsilon(1e-4) == ledger.max_epsilon(1e-4)

    with pytest.raises(ValueError, match="neighbouring relation"):
        ledger.add(0, "fixed", 1792, 128, 2.0, 1)
    assert ledger.runs[0] == [("poisson", 1792, 128, 2.0, 500)]  # unchanged
    mixed = {"format": 1, "units": {"-1": [["poisson", 10, 2, 1.0, 3], ["fixed", 10, 2, 1.0, 3]]}}
    with pytest.raises(ValueError):
        Ledger.from_data(mixed)
    with pytest.raises(ValueError):
        Ledger.from_data({"format": 99, "units": {}})
    # A hand-built mixed account is refused at epsilon time too.
    forged = Ledger({USER_LEVEL: [("poisson", 10, 2, 1.0, 3), ("fixed", 10, 2, 1.0, 3)]})
    with pytest.raises(ValueError, match="mix"):
        forged.epsilon(USER_LEVEL, 1e-5)


@pytest.mark.parametrize(
    ("sampling", "population", "cohort", "sigma"),
    [("poisson", 1792, 128, 2.0), ("poisson", 1000, 50, 0.9), ("fixed", 100, 10, 1.5)],
)
def test_rdp_curve_is_epsilon_at_every_step_count(sampling, population, cohort, sigma):
    from fedgan.simulator.privacy.accountant import RdpCurve

    curve = RdpCurve(sampling, population, cohort, sigma)
    for steps in (1, 7, 400, 4000):
        direct = epsilon(
            sampling=sampling,
            population=population,
            cohort=cohort,
            noise_multiplier=sigma,
            steps=steps,
            delta=1e-4,
        )
        assert curve.epsilon(steps, 1e-4) == pytest.approx(direct, rel=1e-12)
    assert curve.epsilon(0, 1e-4) == 0.0
    assert RdpCurve(sampling, population, cohort, 0.0).epsilon(3, 1e-4) == math.inf
