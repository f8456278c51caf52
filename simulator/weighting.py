"""Fairness-aware client weights: one framework-free definition per rule, for every protocol.

A rule turns how well the current generator serves each client (its scores on the client's
held-out split, `simulator.messages.LocalEvaluation`) into one weight per client. The same
functions weight FedAvg's aggregation (the Flower strategies of `server/strategies/fair.py`),
MD-GAN's feedback weights w_k and UA-GAN's mixture weights π_k (`server/protocols/`):

- `coverage_weights` (`coverage_weighted`): b_k · (1 − c_k + ε)^q (after q-FFL, Li et al. 2020);
- `agnostic_weights` (`agnostic`): AFL's mixture λ (Mohri et al. 2019), moved by exponentiated
  gradient on the coverage shortfall;
- `group_aware_weights` (`group_aware`): b_k · (1 + β Σ_g s_kg (1 − recall_g)) (FairFed-like,
  Ezzeldin et al. 2023);
- `group_dro_weights` (`group_dro`): a weight q_g per *group*, moved by exponentiated gradient on
  the group's pooled coverage shortfall (group DRO, Sagawa et al. 2020), spread over the clients
  by their share of each group's points.

b_k is the protocol's *base* weight of client k: FedAvg's training points n_k, UA-GAN's
default π_k ∝ n_k, MD-GAN's uniform 1. Weights need not sum to one; callers normalise them over
the clients whose replies arrived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fedgan.simulator.messages import LocalEvaluation
from fedgan.simulator.registry import Registry, RegistryError, signature, subclass_of


def check(name: str, value: object, ok: bool, what: str) -> None:
    """ValueError naming parameter `name`, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")


def finite(x: object) -> bool:
    """A finite number (False for anything else: a YAML string or a bool is refused, not a
    TypeError)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _finite_at_least(name: str, value: float, low: float, strict: bool = False) -> None:
    ok = finite(value)
    ok = ok and (value > low if strict else value >= low)
    check(name, value, ok, f"a finite number {'>' if strict else '≥'} {low:g}")


# --- coverage_weighted -------------------------------------------------------------------------


def check_coverage(q: float, eps: float) -> None:
    _finite_at_least("q", q, 0.0)
    _finite_at_least("eps", eps, 0.0, strict=True)


def coverage_weights(base: np.ndarray, coverage: np.ndarray, q: float, eps: float) -> np.ndarray:
    """b_k · (1 − c_k + ε)^q for base [K] and coverage [K] ∈ [0, 1]. A NaN coverage (too few
    held-out points to measure it) counts as the mean of the others (an average client, not a
    fully or a totally uncovered one); with no coverage at all every factor is equal."""
    cov = np.asarray(coverage, dtype=np.float64)
    known = np.isfinite(cov)
    cov = np.where(known, cov, cov[known].mean() if known.any() else 0.0)
    # Coverage is a fraction of points; clip so a rounding excursion can't go negative.
    return np.asarray(base, np.float64) * np.power(1.0 - np.clip(cov, 0.0, 1.0) + eps, q)


# --- agnostic (AFL) ----------------------------------------------------------------------------


def check_agnostic(step_size: float) -> None:
    _finite_at_least("step_size", step_size, 0.0)


def agnostic_weights(
    relative_lambda: Mapping[int, float], pids: Sequence[int], losses: np.ndarray, step_size: float
) -> tuple[np.ndarray, dict[int, float]]:
    """AFL's weights of clients `pids` and their updated mixture.

    `relative_lambda[k]` = N·λ_k (1 for a client not seen yet, so the mixture starts uniform
    without knowing N). Returns (λ of `pids` before the update — AFL updates w and λ from the
    gradients at the same point —, their new N·λ after λ_k ← λ_k exp(η F_k), rescaled so the
    clients of `pids` keep their total mass: absent clients keep exactly their λ). `losses`
    [K]: F_k, the coverage shortfall; NaN (not measured) counts as 0 — not evidence of being
    underserved."""
    lam = np.array([relative_lambda.get(p, 1.0) for p in pids], dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    loss = np.where(np.isfinite(loss), loss, 0.0)
    # exp in the log domain, shifted by the max so a large η·loss can't overflow.
    logits = np.log(lam) + step_size * loss
    new = np.exp(logits - logits.max())
    new *= lam.sum() / new.sum()
    return lam, {int(p): float(v) for p, v in zip(pids, new, strict=True)}


# --- group_aware -------------------------------------------------------------------------------


METRICS = ("recall", "coverage")


def check_group_aware(beta: float, worst_groups: int | None, metric: str) -> None:
    _finite_at_least("beta", beta, 0.0)
    if worst_groups is not None:
        ok = isinstance(worst_groups, int) and not isinstance(worst_groups, bool)
        check("worst_groups", worst_groups, ok and worst_groups >= 1, "an integer ≥ 1 or null")
    check("metric", metric, metric in METRICS, "'recall' or 'coverage'")


def group_deficits(
    group_n: np.ndarray, hits: np.ndarray, measured: np.ndarray, worst_groups: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(pooled per-group score [G], deficit d_g = 1 − score [G]) from per-client counts
    group_n, hits [K, G] of the clients whose score was `measured` [K] (a client whose score is
    NaN had too few held-out points: its zero hits are not misses). With `worst_groups` = m only
    the m lowest-scoring groups keep their deficit (ties: the earlier group first). A group no
    measured client holds scores 1 (no deficit)."""
    n = np.asarray(group_n, dtype=np.float64)
    h = np.asarray(hits, dtype=np.float64)
    m = np.asarray(measured, dtype=bool)
    pooled_n = n[m].sum(axis=0)
    pooled_hits = h[m].sum(axis=0)
    score = np.divide(pooled_hits, pooled_n, out=np.ones_like(pooled_n), where=pooled_n > 0)
    deficit = 1.0 - score
    if worst_groups is not None and worst_groups < len(score):
        keep = np.argsort(score, kind="stable")[:worst_groups]
        mask = np.zeros(len(score), dtype=bool)
        mask[keep] = True
        deficit = np.where(mask, deficit, 0.0)
    return score, deficit


def group_aware_weights(
    base: np.ndarray,
    group_n: np.ndarray,
    hits: np.ndarray,
    measured: np.ndarray,
    beta: float,
    worst_groups: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(b_k · (1 + β Σ_g s_kg d_g) [K], the pooled per-group score [G]); s_kg: client k's share
    of its held-out points in group g (a client without any has no deficit)."""
    n = np.asarray(group_n, dtype=np.float64)
    score, deficit = group_deficits(n, hits, measured, worst_groups)
    totals = n.sum(axis=1, keepdims=True)
    shares = np.divide(n, totals, out=np.zeros_like(n), where=totals > 0)
    return np.asarray(base, np.float64) * (1.0 + beta * shares @ deficit), score


# --- group_dro -----------------------------------------------------------------------------------

GROUP_DRO_STEP_SIZE = 0.1
"""η of `group_dro`, chosen before any measurement (docs/prereg-every-skew.md): with a forgotten
group's shortfall ≈ 1 and a learnt one's ≈ 0.25, log q moves 0.075 a round apart — a 20× tilt
in about 40 rounds of a 400-round run, slow enough not to flip on one round's noise."""
GROUP_DRO_FLOOR = 0.2
"""The share of the weight spread evenly over the groups (each keeps ≥ floor / G), chosen before
any measurement: the groups the generator serves well are never dropped from the objective."""


def check_group_dro(step_size: float, floor: float) -> None:
    _finite_at_least("step_size", step_size, 0.0)
    check("floor", floor, finite(floor) and 0.0 <= floor <= 1.0, "a number in [0, 1]")


def group_dro_weights(
    log_q: np.ndarray,
    group_n: np.ndarray,
    hits: np.ndarray,
    measured: np.ndarray,
    step_size: float,
    floor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group DRO's client weights and its updated group weights.

    Parameters
    ----------
    log_q : ndarray [G]
        log q_g up to a constant (zeros: uniform; a wrong length restarts uniform).
    group_n, hits : ndarray [K, G]
        Each client's held-out points per group and how many of them the received generator
        covers (`local.group_n`, `local.coverage_hits`).
    measured : ndarray of bool [K]
        Whose coverage was measured (a NaN coverage: too few points; its zeros are not misses).
    step_size, floor : float
        η and the even share (`GROUP_DRO_STEP_SIZE`, `GROUP_DRO_FLOOR`).

    Returns
    -------
    weights : ndarray [K]
        w_k = Σ_g q̃_g · n_kg / N_g, q̃ = (1 − floor)·q + floor / G, N_g = Σ_k n_kg: each group's
        weight spread over the clients holding it by their share of its points. Sums to the
        weight of the groups these clients hold (1 when they hold every group).
    log_q : ndarray [G]
        log q + η · ℓ, ℓ_g = 1 − c_g the shortfall of the pooled coverage c_g = Σ_k hits_kg /
        Σ_k n_kg over measured clients (a group no measured client holds: ℓ = 0, no move);
        shifted so its maximum is 0.
    q : ndarray [G]
        q̃, the group weights the client weights were built from (after this update: the
        online group-DRO step moves q first, then the model on the q-weighted objective).
    coverage : ndarray [G]
        c_g (NaN where no measured client holds the group).
    """
    n = np.asarray(group_n, dtype=np.float64)
    h = np.asarray(hits, dtype=np.float64)
    m = np.asarray(measured, dtype=bool)
    k, g = n.shape
    lq = np.asarray(log_q, dtype=np.float64)
    if lq.shape != (g,):
        lq = np.zeros(g)
    pooled_n, pooled_hits = n[m].sum(axis=0), h[m].sum(axis=0)
    coverage = np.divide(pooled_hits, pooled_n, out=np.full(g, np.nan), where=pooled_n > 0)
    loss = np.where(pooled_n > 0, 1.0 - np.clip(np.nan_to_num(coverage), 0.0, 1.0), 0.0)
    lq = lq + step_size * loss
    lq = lq - lq.max() if g else lq
    q = np.exp(lq)
    q = (1.0 - floor) * q / q.sum() + floor / g if g else q
    totals = n.sum(axis=0)
    shares = np.divide(n, totals, out=np.zeros_like(n), where=totals > 0)
    return shares @ q if g else np.zeros(k), lq, q, coverage


# --- rules as protocol components --------------------------------------------------------------


class Weighting:
    """A weighting rule for a protocol: client weights from the base weights and the current
    generator's scores. This base rule (`none`) keeps the base weights. Rules with state (AFL's
    λ) keep it as plain data (`state`/`load_state`: what a checkpoint stores)."""

    name = "none"

    def weights(
        self, pids: Sequence[int], base: np.ndarray, scores: Sequence[LocalEvaluation]
    ) -> np.ndarray:
        """One weight ≥ 0 per client of `pids` (base [K], their scores); need not sum to 1."""
        return np.asarray(base, dtype=np.float64)

    def unscored(self, pid: int, base: float) -> float:
        """The weight of client `pid` before it was ever scored: its base weight."""
        return float(base)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        del state


class CoverageWeighted(Weighting):
    """b_k · (1 − coverage_k + ε)^q: poorly covered clients count more (`coverage_weights`)."""

    name = "coverage_weighted"

    def __init__(self, q: float = 1.0, eps: float = 0.05) -> None:
        check_coverage(q, eps)
        self.q, self.eps = float(q), float(eps)

    def weights(
        self, pids: Sequence[int], base: np.ndarray, scores: Sequence[LocalEvaluation]
    ) -> np.ndarray:
        cov = np.array([e.coverage for e in scores], dtype=np.float64)
        return coverage_weights(base, cov, self.q, self.eps)


class Agnostic(Weighting):
    """AFL's mixture λ over all clients (`agnostic_weights`); the base weights are not used
    (AFL weighs clients, not examples). λ is state."""

    name = "agnostic"

    def __init__(self, step_size: float = 0.5) -> None:
        check_agnostic(step_size)
        self.step_size = float(step_size)
        self.relative_lambda: dict[int, float] = {}

    def weights(
        self, pids: Sequence[int], base: np.ndarray, scores: Sequence[LocalEvaluation]
    ) -> np.ndarray:
        losses = np.array([e.quality_loss for e in scores], dtype=np.float64)
        lam, new = agnostic_weights(self.relative_lambda, pids, losses, self.step_size)
        self.relative_lambda.update(new)
        return lam

    def unscored(self, pid: int, base: float) -> float:
        """λ of a client not scored yet (uniform, relative to N)."""
        return self.relative_lambda.get(pid, 1.0)

    def state(self) -> dict[str, Any]:
        return {"relative_lambda": dict(self.relative_lambda)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.relative_lambda = {int(k): float(v) for k, v in state["relative_lambda"].items()}


class GroupAware(Weighting):
    """b_k · (1 + β Σ_g s_kg (1 − score_g)), score = pooled per-group recall or coverage of
    the current generator (`group_aware_weights`)."""

    name = "group_aware"

    def __init__(
        self, beta: float = 1.0, worst_groups: int | None = None, metric: str = "recall"
    ) -> None:
        check_group_aware(beta, worst_groups, metric)
        self.beta, self.worst_groups, self.metric = float(beta), worst_groups, metric

    def weights(
        self, pids: Sequence[int], base: np.ndarray, scores: Sequence[LocalEvaluation]
    ) -> np.ndarray:
        n = np.array([e.group_n for e in scores], dtype=np.float64)
        hits = np.array(
            [e.recall_hits if self.metric == "recall" else e.coverage_hits for e in scores],
            dtype=np.float64,
        )
        measured = np.isfinite([getattr(e, self.metric) for e in scores])
        w, _ = group_aware_weights(base, n, hits, measured, self.beta, self.worst_groups)
        return w


class GroupDRO(Weighting):
    """Group DRO over the evaluation's first grouping (`group_dro_weights`): a weight per group
    moved toward the groups the generator covers worst, spread over the clients that hold them.
    Needs each client's per-group counts of its own held-out points (its group labels); a
    client that sent none (not measured) gets the average weight, and with no groups at all
    the rule is the base rule. The base weights are not used otherwise (it weighs groups, not
    examples). log q is state."""

    name = "group_dro"

    def __init__(
        self, step_size: float = GROUP_DRO_STEP_SIZE, floor: float = GROUP_DRO_FLOOR
    ) -> None:
        check_group_dro(step_size, floor)
        self.step_size, self.floor = float(step_size), float(floor)
        self.log_q: list[float] = []

    def weights(
        self, pids: Sequence[int], base: np.ndarray, scores: Sequence[LocalEvaluation]
    ) -> np.ndarray:
        have = [bool(e.measured and e.group_n) for e in scores]
        lengths = {len(e.group_n) for e, ok in zip(scores, have, strict=True) if ok}
        if not any(have) or len(lengths) != 1:
            return np.asarray(base, dtype=np.float64)
        (g,) = lengths
        rows = [i for i, ok in enumerate(have) if ok]
        n = np.array([scores[i].group_n for i in rows], dtype=np.float64).reshape(len(rows), g)
        hits = np.array([scores[i].coverage_hits for i in rows], dtype=np.float64).reshape(n.shape)
        measured = np.isfinite([scores[i].coverage for i in rows])
        w, lq, _, _ = group_dro_weights(
            np.asarray(self.log_q), n, hits, measured, self.step_size, self.floor
        )
        self.log_q = lq.tolist()
        # Relative to the mean (1 = an average client), so a client without counts, or one not
        # scored yet (`unscored`), sits at 1 on the same scale.
        rel = w * len(w) / w.sum() if w.sum() > 0 else np.ones(len(w))
        out = np.ones(len(scores))
        out[rows] = rel
        return out

    def unscored(self, pid: int, base: float) -> float:
        """An average client's weight (1 on the scale `weights` returns)."""
        return 1.0

    def state(self) -> dict[str, Any]:
        return {"log_q": list(self.log_q)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.log_q = [float(v) for v in state.get("log_q", [])]


WEIGHTINGS: Registry[type[Weighting]] = Registry(
    "weighting", check=subclass_of(Weighting, "fedgan.simulator.weighting.Weighting")
)
for _cls in (Weighting, CoverageWeighted, Agnostic, GroupAware, GroupDRO):
    WEIGHTINGS.add(_cls.name, _cls)


def check_weighting(spec: Mapping[str, Any] | None, path: str) -> list[str]:
    """Problems with a weighting spec `{name, params}` as 'path.key: message' (empty: fine)."""
    if spec is None:
        return []
    if not isinstance(spec, Mapping) or set(spec) - {"name", "params"} or "name" not in spec:
        return [f"{path}: expected {{name, params}}, got {spec!r}; names: {WEIGHTINGS.allowed()}"]
    name, params = spec["name"], spec.get("params") or {}
    try:
        cls = WEIGHTINGS.get(str(name))
    except RegistryError as exc:
        return [f"{path}.name: {exc}"]
    if not isinstance(params, Mapping):
        return [f"{path}.params: expected a mapping, got {params!r}"]
    try:
        sig = signature("weighting", str(name), cls.__init__, skip=1)
    except RegistryError as exc:
        return [f"{path}.name: {exc}"]
    problems = sig.check(dict(params)).by_key(f"{path}.params", str(name))
    if not problems:
        try:
            cls(**params)
        except (TypeError, ValueError) as exc:
            problems.append(f"{path}.params: {exc}")
        except Exception as exc:  # noqa: BLE001 - whatever a constructor raises is a refusal
            problems.append(f"{path}.params: {type(exc).__name__}: {exc}")
    return problems


def build_weighting(spec: Mapping[str, Any] | None) -> Weighting:
    """The weighting of spec `{name, params}` (None: `none`, the base weights)."""
    if spec is None:
        return Weighting()
    return WEIGHTINGS.get(str(spec["name"]))(**(spec.get("params") or {}))
