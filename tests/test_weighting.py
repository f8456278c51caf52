"""The weighting rules: hand-computed oracles, one definition shared by every protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedgan.simulator.messages import LocalEvaluation
from fedgan.simulator.weighting import (
    Agnostic,
    CoverageWeighted,
    GroupAware,
    Weighting,
    agnostic_weights,
    build_weighting,
    check_weighting,
    coverage_weights,
    group_aware_weights,
)


def _ev(
    coverage: float, expected: float = 0.9, group_n=(4, 0), recall_hits=(2, 0)
) -> LocalEvaluation:
    return LocalEvaluation(
        0.5, coverage, expected, sum(group_n), list(recall_hits), [1, 0], list(group_n)
    )


def test_coverage_weights_by_hand() -> None:
    base = np.array([1.0, 2.0, 3.0])
    got = coverage_weights(base, np.array([0.2, math.nan, 1.2]), q=2.0, eps=0.05)
    # NaN → the mean of the measured ones (0.7); 1.2 is clipped to 1.
    expected = [1 * 0.85**2, 2 * (1 - 0.7 + 0.05) ** 2, 3 * 0.05**2]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # No coverage at all: every factor is (1 + ε)^q, i.e. the base weights' proportions.
    flat = coverage_weights(base, np.full(3, math.nan), q=1.0, eps=0.05)
    np.testing.assert_allclose(flat / flat.sum(), base / base.sum())


def test_agnostic_weights_by_hand() -> None:
    lam, new = agnostic_weights({1: 2.0}, [0, 1], np.array([0.5, math.nan]), step_size=1.0)
    np.testing.assert_allclose(lam, [1.0, 2.0])  # before the update; unseen clients count 1
    # λ_0 ← 1·e^0.5, λ_1 ← 2·e^0 (NaN loss counts 0), rescaled to keep their mass 3.
    raw = np.array([math.exp(0.5), 2.0])
    expected = raw * 3.0 / raw.sum()
    assert new == pytest.approx({0: expected[0], 1: expected[1]})


def test_group_aware_weights_by_hand() -> None:
    # Two clients, two groups: client 0 holds only group 0, client 1 both halves.
    n = np.array([[4.0, 0.0], [2.0, 2.0]])
    hits = np.array([[4.0, 0.0], [2.0, 0.0]])  # group 1 recalled by nobody
    w, score = group_aware_weights(
        np.array([10.0, 10.0]), n, hits, np.array([True, True]), beta=2.0
    )
    np.testing.assert_allclose(score, [6 / 6, 0 / 2])
    # deficits (0, 1): client 0's expected deficit 0, client 1's 0.5.
    np.testing.assert_allclose(w, [10.0, 10.0 * (1 + 2.0 * 0.5)])


def test_rules_as_protocol_components() -> None:
    scores = [_ev(0.2), _ev(0.9, group_n=(2, 2), recall_hits=(2, 0))]
    base = np.array([1.0, 1.0])
    assert list(Weighting().weights([0, 1], base, scores)) == [1.0, 1.0]
    np.testing.assert_allclose(
        CoverageWeighted(q=1.0, eps=0.05).weights([0, 1], base, scores), [0.85, 0.15]
    )
    afl = Agnostic(step_size=1.0)
    np.testing.assert_allclose(afl.weights([0, 1], base, scores), [1.0, 1.0])
    # quality losses 0.7 and 0: λ moves to client 0, and is state.
    assert afl.relative_lambda[0] > 1.0 > afl.relative_lambda[1]
    assert afl.unscored(5, 123.0) == 1.0
    again = Agnostic(step_size=1.0)
    again.load_state(afl.state())
    assert again.relative_lambda == afl.relative_lambda
    ga = GroupAware(beta=1.0)
    # pooled recall: group 0 (2 + 2)/6, group 1 0/2 → deficits (1/3, 1); client 0 holds group 0
    # only (1 + 1/3), client 1 half of each (1 + 1/6 + 1/2).
    np.testing.assert_allclose(ga.weights([0, 1], base, scores), [4 / 3, 5 / 3])


def test_weighting_specs_are_checked_naming_the_key() -> None:
    path = "federation.protocol_params.weighting"
    assert check_weighting(None, path) == []
    assert check_weighting({"name": "agnostic", "params": {"step_size": 0.1}}, path) == []
    (bad,) = check_weighting({"name": "fair"}, path)
    assert bad.startswith(f"{path}.name: unknown weighting 'fair'; allowed:")
    assert "coverage_weighted" in bad
    (unknown,) = check_weighting({"name": "agnostic", "params": {"eta": 1}}, path)
    assert unknown.startswith(f"{path}.params.eta: agnostic has no such parameter")
    (value,) = check_weighting({"name": "coverage_weighted", "params": {"q": -1}}, path)
    assert "q must be a finite number ≥ 0, got -1" in value
    assert check_weighting("agnostic", path)[0].startswith(f"{path}: expected {{name, params}}")
    assert type(build_weighting(None)) is Weighting
    assert isinstance(build_weighting({"name": "group_aware"}), GroupAware)


# --- group_dro ----------------------------------------------------------------------------------


def test_group_dro_weights_by_hand() -> None:
    from fedgan.simulator.weighting import group_dro_weights

    # Two clients, three groups; client 1 has a NaN coverage (not measured): its counts still
    # say which groups it holds, its zero hits are not misses.
    n = np.array([[6.0, 2.0, 0.0], [2.0, 0.0, 4.0]])
    hits = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    measured = np.array([True, False])
    w, lq, q, cov = group_dro_weights(np.zeros(3), n, hits, measured, step_size=1.0, floor=0.5)
    # Pooled over measured clients: c = (3/6, 0/2, NaN) → shortfall (0.5, 1, 0: nobody measured).
    np.testing.assert_allclose(cov, [0.5, 0.0, np.nan])
    # log q = (0.5, 1, 0) − 1 → q ∝ (e^-0.5, 1, e^-1); q̃ = 0.5 q/Σq + 0.5/3.
    raw = np.exp([-0.5, 0.0, -1.0])
    qt = 0.5 * raw / raw.sum() + 0.5 / 3
    np.testing.assert_allclose(lq, [-0.5, 0.0, -1.0])
    np.testing.assert_allclose(q, qt)
    # Shares of each group's points: group 0 6/8 vs 2/8, group 1 all client 0, group 2 client 1.
    np.testing.assert_allclose(w, [qt[0] * 0.75 + qt[1], qt[0] * 0.25 + qt[2]])
    assert w.sum() == pytest.approx(1.0)  # the two clients hold every group


def test_group_dro_moves_toward_the_worst_covered_group() -> None:
    from fedgan.simulator.weighting import GroupDRO

    # Client 0 holds the minority group 0 (never covered) and a share of group 1 (covered);
    # clients 1, 2 hold group 1 only.
    def ev(n: tuple[int, int], hits: tuple[int, int]) -> LocalEvaluation:
        return LocalEvaluation(0.5, sum(hits) / sum(n), 0.9, sum(n), [0, 0], list(hits), list(n))

    scores = [ev((10, 10), (0, 8)), ev((0, 20), (0, 16)), ev((0, 20), (0, 16))]
    rule = GroupDRO(step_size=0.5, floor=0.0)
    seen = []
    for _ in range(5):
        w = rule.weights([0, 1, 2], np.array([20.0, 20.0, 20.0]), scores)
        assert w.mean() == pytest.approx(1.0)  # relative to an average client
        seen.append(w[0] / w.sum())
    # Group 0's shortfall is 1, group 1's 0.2: q_0 grows every round and client 0 with it.
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))
    q0 = np.exp(0.5 * 5 * 1.0) / (np.exp(0.5 * 5 * 1.0) + np.exp(0.5 * 5 * 0.2))
    # Client 0's share: q_0 (all of group 0) + q_1 · 10/50 (its share of group 1), over Σ = 1.
    assert seen[-1] == pytest.approx(q0 + (1 - q0) * 10 / 50)
    # State survives a round trip (a resume), and η = 0, floor 1 is group-balanced.
    other = GroupDRO(step_size=0.5, floor=0.0)
    other.load_state(rule.state())
    assert other.log_q == rule.log_q
    flat = GroupDRO(step_size=0.0, floor=1.0).weights([0, 1, 2], np.ones(3), scores)
    np.testing.assert_allclose(flat / flat.sum(), [0.5 + 0.5 * 0.2, 0.5 * 0.4, 0.5 * 0.4])


def test_group_dro_without_group_counts_is_the_base_rule() -> None:
    from fedgan.simulator.weighting import GroupDRO

    base = np.array([3.0, 1.0])
    skipped = [LocalEvaluation.skipped(), LocalEvaluation.skipped()]
    np.testing.assert_allclose(GroupDRO().weights([0, 1], base, skipped), base)
    assert GroupDRO().unscored(7, 123.0) == 1.0


def test_group_dro_parameters_are_checked() -> None:
    assert check_weighting({"name": "group_dro", "params": {"floor": 1.5}}, "w")
    assert check_weighting({"name": "group_dro", "params": {"step_size": -1}}, "w")
    assert not check_weighting({"name": "group_dro", "params": {"step_size": 0.2}}, "w")
