"""Findings item 11 (who privacy forgets): the preregistered text, the plan, and the rule
applied to constructed outcomes whose verdict is worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

from fedgan.simulator.findings import privacy_cost as f11
from fedgan.simulator.findings.batch import Outcome
from fedgan.simulator.findings.privacy_cost import MAJORITY, MINORITY, Method, judge

ROOT = Path(__file__).resolve().parents[2]


def _flat(text: str) -> str:
    return " ".join(text.replace("> ", " ").split())


def test_preregistration_quotes_the_expectation_and_rule_verbatim() -> None:
    doc = _flat((ROOT / "docs" / "prereg-findings-11.md").read_text())
    assert _flat(f11.EXPECTATION) in doc
    assert _flat(f11.RULE) in doc


def _o(part: str, m: str, eps: float, seed: int, minority: float, majority: float) -> Outcome:
    o = Outcome((part, m, eps, seed))
    o.groups["coverage"] = {g: minority for g in MINORITY} | {g: majority for g in MAJORITY}
    return o


def _results(min_at_3: dict[str, float], maj_at_3: float = 0.9) -> dict:
    """Every cell of both parts, 3 seeds: at ε = ∞ minority 0.6, majority 0.9 for every
    method; at ε = 3 the given minority coverage (per protocol) and `maj_at_3`."""
    res: dict = {}
    for part, (_, methods) in f11.PARTS.items():
        for m in methods:
            for eps in f11.EPSILONS:
                if part == "user" and m.centralized and not math.isinf(eps):
                    continue
                mi = 0.6 if math.isinf(eps) else min_at_3.get(m.protocol, 0.6)
                ma = 0.9 if math.isinf(eps) else maj_at_3
                bump = {"mdgan": 0.0, "uagan": 0.0}.get(m.protocol, 0.0)
                res[(part, m, eps)] = [
                    _o(part, m.protocol, eps, s, mi + bump + 0.01 * s, ma) for s in (0, 1, 2)
                ]
    return res


def test_the_minority_falling_first_agrees() -> None:
    # At ε = 3 every method's minority coverage halves (0.6 → ~0.3: loses ~50 %) while the
    # majority loses 1 − 0.85/0.9 ≈ 6 %: 50 % ≥ 6 % + 10 %, part (a) holds for every method.
    # (b): MD-GAN's 0.5 against FedAvg's 0.3 at user level in every seed: the paired
    # difference is 0.2 in each seed, its interval [0.2, 0.2] above 0.
    res = _results({"fedavg": 0.3, "mdgan": 0.5, "uagan": 0.3, "centralized": 0.3}, 0.85)
    j = judge(res)
    assert j.regime == {"sample": True, "user": True}
    assert j.parts == {"a": True, "b": True}
    assert j.decided and j.agrees


def test_the_majority_falling_as_fast_disagrees_with_a() -> None:
    # Minority 0.6 → 0.3 (−50 %), majority 0.9 → 0.45 (−50 %): not 10 points more.
    res = _results({"fedavg": 0.3, "mdgan": 0.3, "uagan": 0.3, "centralized": 0.3}, 0.45)
    j = judge(res)
    assert j.parts["a"] is False
    assert j.parts["b"] is False  # every protocol equal: no interval above 0
    assert not j.agrees


def test_no_regime_leaves_the_verdict_undecided() -> None:
    res = _results({"fedavg": 0.3})
    for part in f11.PARTS:
        res[(part, Method("centralized"), math.inf)] = [
            _o(part, "centralized", math.inf, s, 0.1, 0.9) for s in (0, 1, 2)
        ]
    j = judge(res)
    assert j.regime == {"sample": False, "user": False}
    assert not j.decided


def test_the_target_is_met_by_a_method_keeping_both_modes_at_epsilon_10() -> None:
    res = _results({"fedavg": 0.3})
    # At ε = 10 the minority coverage is 0.6 for every method (≥ 0.3 on each mode).
    assert judge(res).target
    for key in res:
        if key[2] <= 10:
            for o in res[key]:
                o.groups["coverage"]["1"] = 0.2  # mode 1 lost at every finite ε
    j = judge(res)
    assert not j.target and "missed" in j.target_text


def test_the_plan_runs_the_user_level_twin_only_without_privacy() -> None:
    cells = [c for c, _ in f11.plan(False)]
    twins = [c for c in cells if c[0] == "user" and c[1].centralized]
    assert twins == [("user", Method("centralized"), math.inf)]
    sample_twins = [c for c in cells if c[0] == "sample" and c[1].centralized]
    assert len(sample_twins) == len(f11.EPSILONS)
    overrides = dict(f11.plan(False))
    assert overrides[("user", Method("uagan"), 3.0)] == (
        "federation.protocol=uagan",
        "federation.protocol_params={pi: uniform}",
        "privacy.target_epsilon=3",
    )
    assert overrides[("sample", Method("fedavg"), math.inf)] == ("privacy=null",)


def test_a_missed_target_says_whether_the_majority_was_lost_too() -> None:
    res = _results({"fedavg": 0.3}, maj_at_3=0.05)
    for key, os_ in res.items():
        if key[2] <= 10:
            for o in os_:  # everything lost at every finite ε
                o.groups["coverage"] = {g: 0.02 for g in (*MINORITY, *MAJORITY)}
    j = judge(res)
    assert not j.target
    assert "none kept the majority either" in j.target_text
    assert "0.02" in j.target_text
