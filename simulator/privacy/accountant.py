"""ε of repeated subsampled Gaussian releases, the noise for a target ε, and the run's ledger.

Every release this module accounts is a Gaussian sum: each sampled unit (a user at user level,
one training point at sample level) contributes a clipped vector of norm ≤ C, and noise of std
σ·C is added to the sum. `σ` is the noise multiplier, always relative to the per-unit clip C —
the conventions of the two samplings differ in what the accounting library is then handed:

* ``"poisson"`` — each unit joins a release independently with probability q = cohort / N;
  neighbouring datasets add or remove one unit, so one unit moves the sum by ≤ C and the event
  is ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` under add/remove neighbours.
* ``"fixed"`` — exactly m = cohort of N units, drawn without replacement (what Flower and our
  loop do). Amplification for this sampling is only known under replace-one neighbours (N is
  public): swapping one unit for another moves the clipped sum by ≤ 2C, so the noise is σ/2
  times the replace-one sensitivity. RDP: ``SampledWithoutReplacementDpEvent(N, m,
  GaussianDpEvent(σ/2))`` with ``NeighboringRelation.REPLACE_ONE`` (Wang, Balle and
  Kasiviswanathan 2019, Theorem 27, whose base mechanism is a Gaussian with the replace-one
  sensitivity). dp-accounting's docstrings and Flower's accountant pass σ unchanged there, which
  understates the RDP about 4× (google/differential-privacy#378).
  PLD: dp-accounting's PLD accountant has no without-replacement event; with m = N it is a
  plain Gaussian, and its REPLACE_ONE Gaussian already shifts by ±sensitivity (distance 2C), so
  there it gets ``GaussianDpEvent(σ)`` — σ unhalved. Both routes give μ = 2√T/σ for T
  full-cohort releases (the tests check each against the closed form).

RDP uses dp-accounting's default orders, ``rdp_privacy_accountant.DEFAULT_RDP_ORDERS`` (1.1 to
10.9 by 0.1, 11 to 63, then 128, 256, 512, 1024) — the grid Flower's accountant uses, and one
that reproduces the values measured in the project's privacy notes. A denser grid up to 10⁴
(501 orders) was measured on this module's settings (anchors of ε from 0.87 to 103): no ε moved
by more than 0.03 %, and the fixed-size account became ~30× slower, its cost growing with the
order.

`dp_accounting` (and Flower's accountant, for `flower_epsilon`) are imported inside the functions:
the ledger is plain data and loads without them, and importing this module stays cheap.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

__all__ = [
    "USER_LEVEL",
    "Accountant",
    "Ledger",
    "Run",
    "Sampling",
    "adaptive_noise",
    "calibrate",
    "epsilon",
    "flower_epsilon",
]

Sampling = Literal["poisson", "fixed"]
Accountant = Literal["rdp", "pld"]

#: One stretch of identical releases: (sampling, population, cohort, noise_multiplier, steps).
Run = tuple[Sampling, int, int, float, int]

#: The ledger's key for user-level accounting (sample-level keys are client ids, ≥ 0).
USER_LEVEL = -1

_SAMPLINGS: tuple[str, ...] = ("poisson", "fixed")
_ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")
_LEDGER_FORMAT = 1


# ----------------------------------------------------------------------------------- checks


def _int(name: str, value: Any, *, least: int) -> int:
    # operator.index accepts numpy integers and refuses floats; bool is an int we refuse too,
    # since True as a step count is a caller's bug, not a count.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < least:
        raise ValueError(f"{name} must be ≥ {least}, got {number}")
    return number


def _check_run(
    sampling: str, population: Any, cohort: Any, noise_multiplier: Any, steps: Any
) -> Run:
    if sampling not in _SAMPLINGS:
        raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
    n = _int("population", population, least=1)
    m = _int("cohort", cohort, least=1)
    if m > n:
        raise ValueError(f"cohort ({m}) exceeds population ({n})")
    sigma = float(noise_multiplier)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise_multiplier must be finite and ≥ 0, got {noise_multiplier!r}")
    t = _int("steps", steps, least=0)
    return cast(Sampling, sampling), n, m, sigma, t


def _check_delta(delta: float) -> float:
    value = float(delta)
    if not 0 < value < 1:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return value


def _check_accountant(accountant: str) -> None:
    if accountant not in _ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {_ACCOUNTANTS}, got {accountant!r}")


# ------------------------------------------------------------------------- dp-accounting glue


class _NoConvergenceNoise(logging.Filter):
    """Drops dp-accounting's "failed to converge … excluding this order" warnings.

    The RDP of a Poisson-subsampled Gaussian at fractional orders near 1 is a series that does
    not always converge (q ≈ 0.1, σ ≈ 1 already); dp-accounting then leaves that order out of
    the minimum, which can only loosen ε, never understate it. Left on, one calibration prints
    hundreds of these lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


@contextmanager
def _quiet() -> Iterator[None]:
    # dp-accounting logs through absl, whose Python logger is named "absl"; the filter is
    # attached only for the duration of our own calls so nobody else's logging changes.
    logger = logging.getLogger("absl")
    noise = _NoConvergenceNoise()
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


def _relation(sampling: Sampling) -> Any:
    from dp_accounting import NeighboringRelation

    if sampling == "poisson":
        return NeighboringRelation.ADD_OR_REMOVE_ONE
    return NeighboringRelation.REPLACE_ONE


def _fresh(accountant: str, sampling: Sampling) -> Any:
    """An empty dp-accounting accountant under the sampling's neighbouring relation."""
    if accountant == "rdp":
        from dp_accounting.rdp import RdpAccountant

        # orders=None: DEFAULT_RDP_ORDERS (see the module docstring for why not denser).
        return RdpAccountant(orders=None, neighboring_relation=_relation(sampling))
    from dp_accounting.pld import PLDAccountant

    return PLDAccountant(neighboring_relation=_relation(sampling))


def _event(
    accountant: str, sampling: Sampling, population: int, cohort: int, noise_multiplier: float
) -> Any:
    """The dp-accounting event of one release (σ > 0); see the module docstring."""
    from dp_accounting import (
        GaussianDpEvent,
        PoissonSampledDpEvent,
        SampledWithoutReplacementDpEvent,
    )

    if sampling == "poisson":
        return PoissonSampledDpEvent(cohort / population, GaussianDpEvent(noise_multiplier))
    if accountant == "rdp":
        # Replace-one sensitivity of the clipped sum is 2C: noise σ·C is σ/2 of it.
        return SampledWithoutReplacementDpEvent(
            population, cohort, GaussianDpEvent(noise_multiplier / 2)
        )
    if cohort < population:
        raise ValueError(
            "accountant='pld' cannot account a fixed-size cohort drawn without replacement "
            f"(cohort {cohort} of {population}): dp-accounting's PLDAccountant does not support "
            "SampledWithoutReplacementDpEvent. Use accountant='rdp'."
        )
    # No subsampling: a Gaussian. The PLD's REPLACE_ONE already moves the mean by ±1 (two
    # sensitivities), so σ goes in unhalved — halving it here would count the 2C twice.
    return GaussianDpEvent(noise_multiplier)


def _account(runs: Sequence[Run], delta: float, accountant: str) -> float:
    """ε of the composition of `runs` (one unit's releases) at `delta`."""
    delta = _check_delta(delta)
    _check_accountant(accountant)
    live = [run for run in runs if run[4] > 0]
    if not live:
        return 0.0
    samplings = {run[0] for run in live}
    if len(samplings) > 1:
        raise ValueError(
            "one unit's releases mix Poisson and fixed-size sampling: they are accounted under "
            "different neighbouring relations (add/remove vs replace-one) whose ε do not compose"
        )
    if any(run[3] == 0 for run in live):
        return math.inf  # a release without noise: no finite guarantee
    sampling = live[0][0]
    with _quiet():
        events = [(_event(accountant, *run[:4]), run[4]) for run in live]
        account = _fresh(accountant, sampling)
        for event, count in events:
            account.compose(event, count)
        return float(account.get_epsilon(delta))


# ---------------------------------------------------------------------------------- public API


def epsilon(
    *,
    sampling: Sampling,
    population: int,
    cohort: int,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountant: Accountant = "rdp",
) -> float:
    """ε after `steps` subsampled Gaussian releases, at `delta`.

    Parameters
    ----------
    sampling : {"poisson", "fixed"}
        How each release picks its units: Poisson with q = cohort / population (add/remove
        neighbours) or exactly `cohort` without replacement (replace-one neighbours).
    population : int
        N, the units a release samples from (users, or one client's training points).
    cohort : int
        The expected (Poisson) or exact (fixed) number of units per release, 1 ≤ cohort ≤ N.
    noise_multiplier : float
        σ: the noise std on the sum of clipped contributions, in units of the clip C.
    steps : int
        Number of releases (rounds, or local steps at sample level).
    delta : float
        Target δ, in (0, 1).
    accountant : {"rdp", "pld"}
        dp-accounting's RDP accountant (default orders) or its PLD accountant; PLD has no
        fixed-size cohort smaller than the population.

    Returns
    -------
    float
        ε; 0.0 for ``steps == 0``, ``math.inf`` for σ = 0 with ``steps > 0``.

    Raises
    ------
    ValueError
        Invalid arguments, or ``accountant="pld"`` with a fixed cohort smaller than N.
    """
    run = _check_run(sampling, population, cohort, noise_multiplier, steps)
    _check_accountant(accountant)
    if accountant == "pld" and run[0] == "fixed":
        _event(accountant, *run[:3], 1.0)  # refuses an unsupported event even when σ = 0
    return _account([run], delta, accountant)


def flower_epsilon(*, noise_multiplier: float, steps: int, delta: float) -> float:
    """ε that Flower 1.42's own accountant reports for `steps` releases with noise σ.

    Flower's DP wrappers accept an accountant only with ``SamplingMethod.NO_AMPLIFICATION``
    (``flwr/serverapp/strategy/dp_fixed_clipping.py``), which composes a plain
    ``GaussianDpEvent(σ)`` per round under add/remove neighbours on dp-accounting's RDP
    accountant with its default orders: no amplification by sampling, so it grows like a
    full-participation composition whatever the cohort.

    The simulator's core never imports Flower, so this composes the same events on
    dp-accounting directly — ``GaussianDpEvent(σ)`` `steps` times, add/remove neighbours,
    dp-accounting's default RDP orders — which is what Flower's accountant does under
    NO_AMPLIFICATION; `tests/privacy/test_accountant.py` holds it equal to Flower's own
    ``flwr.supercore.privacy_accounting.rdp_accountant.RdpAccountant``.

    Parameters
    ----------
    noise_multiplier : float
        σ: noise std on the clipped sum in units of the clip (Flower's `noise_multiplier`).
    steps : int
        Number of rounds (private releases).
    delta : float
        Target δ, in (0, 1).

    Returns
    -------
    float
        ε; 0.0 for ``steps == 0``, ``math.inf`` for σ = 0 with ``steps > 0`` (Flower itself
        refuses σ = 0).
    """
    delta = _check_delta(delta)
    _check_run("poisson", 1, 1, noise_multiplier, steps)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from dp_accounting import GaussianDpEvent
    from dp_accounting.rdp import RdpAccountant

    with _quiet():
        account = RdpAccountant(orders=None)
        account.compose(GaussianDpEvent(float(noise_multiplier)), int(steps))
        return float(account.get_epsilon(delta))


class RdpCurve:
    """ε after T identical releases, for any T, from one RDP computation.

    An RDP curve composes additively: T releases of one event cost T times its Rényi
    divergence at every order, so the event's RDP vector is computed once (the slow part:
    ~0.1 s for a Poisson-subsampled Gaussian, ~0.3 s without replacement) and each ε(T) is
    dp-accounting's own conversion of T·rdp at δ — the value `epsilon(..., steps=T)` gives
    (the same accountant, orders and conversion; a test holds them equal). What a run's
    per-round ε rows use: one curve per accounted unit's settings.
    """

    def __init__(
        self, sampling: Sampling, population: int, cohort: int, noise_multiplier: float
    ) -> None:
        _check_run(sampling, population, cohort, noise_multiplier, 1)
        self.noise_multiplier = noise_multiplier
        self._orders: Any = None
        self._rdp: Any = None
        if noise_multiplier > 0:
            with _quiet():
                account = _fresh("rdp", sampling)
                account.compose(_event("rdp", sampling, population, cohort, noise_multiplier), 1)
            self._orders, self._rdp = account.orders, account.rdp

    def epsilon(self, steps: int, delta: float) -> float:
        """ε after `steps` releases at `delta`."""
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        delta = _check_delta(delta)
        if steps <= 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        with _quiet():
            return float(compute_epsilon(self._orders, steps * self._rdp, delta)[0])


def calibrate(
    *,
    target_epsilon: float,
    sampling: Sampling,
    population: int,
    cohort: int,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier σ whose ε (as `epsilon` computes it) is ≤ `target_epsilon`.

    σ is bracketed by doubling / halving from 1, then found by dp-accounting's
    ``mechanism_calibration.calibrate_dp_mechanism`` (Brent's method) on the very accountant
    and events `epsilon` uses, with a tolerance of 10⁻³ of the bracket's lower end: ε is
    roughly ∝ σ⁻¹ to σ⁻², so the returned σ sits within ~0.2 % of the exact one and its ε
    within ~0.5 % below the target. ε(σ) ≤ target is then checked with `epsilon` and σ nudged
    up by the tolerance if rounding put it over.

    Parameters
    ----------
    target_epsilon : float
        The ε the run may reach, > 0.
    sampling, population, cohort, steps, delta, accountant
        As in `epsilon`.

    Returns
    -------
    float
        σ; 0.0 when ``steps == 0`` (nothing is released).

    Raises
    ------
    ValueError
        Invalid arguments, an event the accountant does not support, or a target no σ in
        [2⁻²⁰, 2³⁰] reaches.
    """
    target = float(target_epsilon)
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"target_epsilon must be finite and > 0, got {target_epsilon!r}")
    sampling_, n, m, _, t = _check_run(sampling, population, cohort, 1.0, steps)
    delta = _check_delta(delta)
    _check_accountant(accountant)
    if t == 0:
        return 0.0
    _event(accountant, sampling_, n, m, 1.0)  # an unsupported event fails here, not in a loop

    seen: dict[float, float] = {}  # the bracket search revisits its ends; a fixed-size ε is slow

    def eps(sigma: float) -> float:
        if sigma not in seen:
            seen[sigma] = _account([(sampling_, n, m, sigma, t)], delta, accountant)
        return seen[sigma]

    unreachable = (
        f"no noise multiplier in [2^-20, 2^30] gives ε ≤ {target} at δ = {delta} "
        f"({sampling} sampling, cohort {m} of {n}, {t} steps, {accountant})"
    )
    # Our own bracket (calibrate_dp_mechanism's default starts at σ = 0, where the
    # without-replacement RDP divides by zero): lo fails the target, hi meets it.
    hi = 1.0
    while eps(hi) > target:
        hi *= 2
        if hi > 2.0**30:
            raise ValueError(unreachable)
    lo = hi / 2
    while eps(lo) <= target:
        hi, lo = lo, lo / 2
        if lo < 2.0**-20:
            # Even negligible noise meets the target; it is not "unreachable", but no σ
            # worth reporting is smaller, and ε(σ → 0) is infinite.
            return hi

    from dp_accounting import SelfComposedDpEvent
    from dp_accounting.mechanism_calibration import (
        ExplicitBracketInterval,
        calibrate_dp_mechanism,
    )

    tol = lo * 1e-3
    with _quiet():
        sigma = float(
            calibrate_dp_mechanism(
                make_fresh_accountant=lambda: _fresh(accountant, sampling_),
                make_event_from_param=lambda s: SelfComposedDpEvent(
                    _event(accountant, sampling_, n, m, s), t
                ),
                target_epsilon=target,
                target_delta=delta,
                bracket_interval=ExplicitBracketInterval(lo, hi),
                tol=tol,
            )
        )
    for _ in range(1000):
        if eps(sigma) <= target:
            return sigma
        sigma += tol
    raise ValueError(unreachable)  # pragma: no cover - ε is monotone in σ; hi meets the target


def adaptive_noise(noise_multiplier: float, count_noise: float, *, centered: bool = True) -> float:
    """The one noise multiplier to account an adaptive-clipping round with.

    Andrew et al. 2021 (*Differentially Private Learning with Adaptive Clipping*, Theorem 1):
    each round releases the clipped update sum with noise z_Δ·C and the count of units whose
    update was under the clip with noise std σ_b. Both are Gaussian, so the pair is one
    Gaussian mechanism on the concatenated vector (ΣΔ_i / (z_Δ C), Σ b_i / σ_b) with unit noise;
    its sensitivity is √(z_Δ⁻² + s_b²/σ_b²) where s_b is the count's sensitivity. With the
    paper's centred bits b_i − ½ ∈ {−½, ½}, s_b = ½ under add/remove, and the effective
    multiplier is ::

        z = (z_Δ⁻² + (2 σ_b)⁻²)^(−1/2)

    TFF's ``adaptive_clip_noise_params`` and Flower's ``compute_adaptive_noise_params`` invert
    this same formula for z_Δ.

    Under replace-one (fixed-size cohorts) the sum moves by 2C and the count by 1 whether the
    bits are centred or not: the multiplier over those sensitivities is z/2 — exactly what
    `epsilon` makes of z with ``sampling="fixed"``, so the formula holds there too.

    Parameters
    ----------
    noise_multiplier : float
        z_Δ, the update sum's noise multiplier (std z_Δ·C).
    count_noise : float
        σ_b, the std of the noise on the clipped count (``math.inf``: no count released).
    centered : bool
        Whether the count sums centred bits b_i − ½, as in the paper. Flower 1.42's adaptive
        wrappers sum the raw bits (sensitivity 1 under add/remove); pass False for those and
        get z = (z_Δ⁻² + σ_b⁻²)^(−1/2) — exact under add/remove, conservative under replace-one.

    Returns
    -------
    float
        z, the multiplier to pass to `epsilon` / `Ledger.add`; 0.0 when either noise is zero
        (that release has no guarantee, so the round has none).
    """
    z_delta = float(noise_multiplier)
    sigma_b = float(count_noise)
    if math.isnan(z_delta) or math.isnan(sigma_b) or z_delta < 0 or sigma_b < 0:
        raise ValueError(
            f"noise_multiplier and count_noise must be ≥ 0, got {noise_multiplier!r}, "
            f"{count_noise!r}"
        )
    if z_delta == 0 or sigma_b == 0:
        return 0.0
    count_multiplier = (2 * sigma_b) if centered else sigma_b  # σ_b over the count's sensitivity
    return float((z_delta**-2 + count_multiplier**-2) ** -0.5)


@dataclass
class Ledger:
    """The run's running privacy account, checkpointable as plain data.

    Per accounted unit — `USER_LEVEL` (−1) for user-level DP, a client id for that client's
    sample-level DP — the releases so far as a list of runs
    ``(sampling, population, cohort, noise_multiplier, steps)``.

    Attributes
    ----------
    runs : dict[int, list[Run]]
        Unit → its runs, in release order.
    """

    runs: dict[int, list[Run]] = field(default_factory=dict)

    def add(
        self,
        unit: int,
        sampling: Sampling,
        population: int,
        cohort: int,
        noise_multiplier: float,
        steps: int,
    ) -> None:
        """Record `steps` more releases for `unit`.

        Extends the unit's last run when its parameters are identical (so a run of rounds stays
        one entry), else appends a run. ``steps == 0`` records nothing.

        Raises
        ------
        ValueError
            Invalid arguments, or a sampling other than the one the unit was accounted under
            so far (the two use different neighbouring relations; see `epsilon`). The ledger is
            left unchanged.
        """
        key = _int("unit", unit, least=USER_LEVEL)
        run = _check_run(sampling, population, cohort, noise_multiplier, steps)
        if run[4] == 0:
            return
        history = self.runs.setdefault(key, [])
        if history and history[0][0] != run[0]:
            raise ValueError(
                f"unit {key} was accounted with {history[0][0]!r} sampling; a {run[0]!r} release "
                "is under another neighbouring relation and cannot join its account"
            )
        if history and history[-1][:4] == run[:4]:
            history[-1] = (*run[:4], history[-1][4] + run[4])
        else:
            history.append(run)

    def epsilon(self, unit: int, delta: float, accountant: Accountant = "rdp") -> float:
        """ε of all of `unit`'s releases composed, at `delta` (0.0 for an unknown unit).

        All runs go, each with its count, into one dp-accounting accountant, so heterogeneous
        runs (a σ change, a different cohort) compose exactly as the library composes them.
        """
        return _account(self.runs.get(unit, []), delta, accountant)

    def max_epsilon(self, delta: float, accountant: Accountant = "rdp") -> float:
        """The largest ε over all units (0.0 for an empty ledger)."""
        _check_delta(delta)
        return max((self.epsilon(unit, delta, accountant) for unit in self.runs), default=0.0)

    def to_data(self) -> dict[str, Any]:
        """The ledger as JSON-able plain data (unit ids become string keys, as JSON needs)."""
        return {
            "format": _LEDGER_FORMAT,
            "units": {
                str(unit): [list(run) for run in history] for unit, history in self.runs.items()
            },
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Ledger:
        """Rebuild a ledger from `to_data`'s output, validating every run.

        Raises
        ------
        ValueError
            An unknown format, or a malformed or invalid run.
        """
        if not isinstance(data, dict) or data.get("format") != _LEDGER_FORMAT:
            raise ValueError(f"not a privacy ledger of format {_LEDGER_FORMAT}: {data!r:.200}")
        units = data.get("units")
        if not isinstance(units, dict):
            raise ValueError("privacy ledger: 'units' must be a mapping")
        ledger = cls()
        for key, history in units.items():
            try:
                unit = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"privacy ledger: bad unit key {key!r}") from None
            if not isinstance(history, list):
                raise ValueError(f"privacy ledger: unit {key}'s runs must be a list")
            for run in history:
                if not isinstance(run, (list, tuple)) or len(run) != 5:
                    raise ValueError(f"privacy ledger: bad run {run!r} for unit {key}")
                ledger.add(unit, *run)
        return ledger
