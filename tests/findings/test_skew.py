"""Findings item 10 and the fairness benchmark's pieces: the preregistered text, methods as
overrides and their preflight, the rule on hand-made outcomes, comparisons with Bonferroni,
the figures, and a quick run of the item. Expected values are worked out by hand."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from fedgan.simulator.findings import skew as f10
from fedgan.simulator.findings.batch import SCENARIOS, Outcome
from fedgan.simulator.findings.fedmethods import (
    FEDAVG_RULES,
    Method,
    against,
    every_method,
    minority_coverage,
    minority_mass_ratio,
    skip_note,
    unavailable,
)
from fedgan.simulator.scenario import load

ROOT = Path(__file__).resolve().parents[2]


def _flat(text: str) -> str:
    return " ".join(text.replace("> ", " ").split())


def test_preregistration_quotes_the_expectation_and_rule_verbatim() -> None:
    doc = _flat((ROOT / "docs" / "prereg-findings-10.md").read_text())
    assert _flat(f10.EXPECTATION) in doc
    assert _flat(f10.RULE) in doc


# --- methods ----------------------------------------------------------------------------------


def test_methods_become_the_overrides_each_protocol_reads() -> None:
    assert Method("fedavg").overrides == ()
    assert Method("centralized").overrides == ()
    (cw,) = Method("fedavg", "coverage_weighted").overrides
    assert cw == 'strategy={"name": "coverage_weighted", "params": {"q": 2.0}}'
    assert Method("fedavg", "critic_swap").overrides == ('strategy={"name": "critic_swap"}',)
    md = Method("mdgan", "agnostic").overrides
    assert md[0] == "federation.protocol=mdgan"
    key, value = md[1].split("=", 1)
    assert key == "federation.protocol_params"
    assert json.loads(value) == {
        "swap_every": 100,
        "weighting": {"name": "agnostic", "params": {"step_size": 0.5}},
    }
    assert Method("uagan").overrides == ("federation.protocol=uagan",)
    assert Method("uagan", "group_aware").label == "UA-GAN + group_aware"
    # The overrides reach the scenario as the mappings they spell.
    s = load(SCENARIOS / f10.SCENARIO, list(Method("fedavg", "group_aware").overrides))
    assert s.strategy.name == "group_aware"
    assert s.strategy.params == {"beta": 2.0, "metric": "coverage"}


def test_every_method_is_each_protocol_with_each_weighting_then_fedavg_rules() -> None:
    ms = every_method(tuple(FEDAVG_RULES))
    assert len(ms) == 3 * 4 + 2 and ms[0] == Method("fedavg")
    assert [m.label for m in ms[4:8]] == [
        "MD-GAN",
        "MD-GAN + coverage_weighted",
        "MD-GAN + agnostic",
        "MD-GAN + group_aware",
    ]
    assert ms[-2:] == [Method("fedavg", "quality_qfedavg"), Method("fedavg", "critic_swap")]


def test_fedavg_methods_pass_the_preflight_and_missing_protocols_say_why() -> None:
    from fedgan.server.protocols import PROTOCOLS

    path = SCENARIOS / f10.SCENARIO
    quickstart = ROOT / "scenarios" / "quickstart.yaml"
    for m in every_method(tuple(FEDAVG_RULES)):
        for scenario in (path, quickstart):
            why = unavailable(scenario, m.overrides)
            if m.protocol == "fedavg" or m.protocol in PROTOCOLS:
                assert why == "", (m.label, why)
            else:  # not merged: skipped with the preflight's own words, never run
                assert why.startswith("federation.protocol: unknown protocol"), why
    assert unavailable(path, (), centralized=True) == ""
    assert "partition.params" in unavailable(path, ("partition.params={beta: 1}",))


def test_skip_note_groups_methods_by_reason() -> None:
    note = skip_note(
        {
            (Method("mdgan"), 0.05, 10): "no mdgan",
            (Method("mdgan", "agnostic"), 0.05, 10): "no mdgan",
            Method("uagan"): "no uagan",
        }
    )
    assert note == "MD-GAN, MD-GAN + agnostic: no mdgan · UA-GAN: no uagan"


# --- scores and the rule ------------------------------------------------------------------------


def _o(
    key: tuple[object, ...],
    c0: float,
    c1: float,
    min_mass: float = 0.5,
    mass: float = 0.05,
    **summary: float,
) -> Outcome:
    return Outcome(
        key,
        summary={"min_mass_ratio": min_mass, **summary},
        groups={"coverage": {"0": c0, "1": c1}, "mode_mass": {"0": mass, "1": mass}},
    )


def test_minority_scores_count_a_diverged_run_as_nothing_kept() -> None:
    o = _o((0,), 0.2, 0.6, mass=0.025)
    assert minority_coverage(o, ("0", "1")) == pytest.approx(0.4)
    assert minority_mass_ratio(o, ("0", "1"), 0.05) == pytest.approx(0.5)  # 0.025 / 0.05
    dead = Outcome((0,), diverged=True)
    assert minority_coverage(dead, ("0", "1")) == 0.0
    assert minority_mass_ratio(dead, ("0", "1"), 0.05) == 0.0


def _cells(
    twin: tuple[float, ...] = (0.5, 0.5, 0.5),
    fa_small: tuple[float, ...] = (0.0, 0.05, 0.1),
    fa_large: tuple[float, ...] = (0.4, 0.5, 0.6),
    mdgan: tuple[float, ...] | None = (0.3, 0.4, 0.5),
    uagan: tuple[float, ...] | None = (0.0, 0.0, 0.0),
    weighted: float = 0.1,
    few: tuple[float, ...] = (0.5, 0.5, 0.5),
    many: tuple[float, ...] = (0.2, 0.3, 0.4),
) -> dict[f10.Cell, list[Outcome]]:
    """Outcomes per cell, coverage c on both minority modes in each seed 0, 1, 2."""
    small, large, d = f10.SMALL_ALPHA, max(f10.ALPHAS), f10.DEFAULT_LOCAL

    def os(m: Method, a: float, k: int, covs: tuple[float, ...], mm: float = 0.5) -> list[Outcome]:
        return [_o((m.label, a, k, s), c, c, min_mass=mm) for s, c in enumerate(covs)]

    res = {
        (f10.TWIN, small, d): os(f10.TWIN, small, d, twin),
        (f10.FEDAVG, small, d): os(f10.FEDAVG, small, d, fa_small, 0.0),
        (f10.FEDAVG, large, d): os(f10.FEDAVG, large, d, fa_large, 0.6),
        (f10.FEDAVG, f10.DRIFT_ALPHA, 5): os(f10.FEDAVG, f10.DRIFT_ALPHA, 5, few),
        (f10.FEDAVG, f10.DRIFT_ALPHA, 40): os(f10.FEDAVG, f10.DRIFT_ALPHA, 40, many),
    }
    for p, covs in (("mdgan", mdgan), ("uagan", uagan)):
        if covs is not None:
            res[(Method(p), small, d)] = os(Method(p), small, d, covs)
    for p in ("fedavg", "mdgan", "uagan"):
        base = res.get((Method(p), small, d))
        if base is None:
            continue
        for w in ("coverage_weighted", "agnostic", "group_aware"):
            covs = tuple(minority_coverage(o, ("0", "1")) + weighted for o in base)
            res[(Method(p, w), small, d)] = os(Method(p, w), small, d, covs)
    return res


def test_rule_agrees_when_every_part_holds() -> None:
    j = f10.judge(_cells())
    assert j.regime and j.twin_kept == 3
    assert {p.name: p.ok for p in j.parts} == {"a": True, "b": True, "c": True, "d": True}
    assert j.agrees and j.decided


def test_rule_part_a_needs_a_drop_of_point_one_and_a_lower_mass_ratio() -> None:
    # FedAvg's small-α coverage 0.05 against 0.15 at α = 100: exactly 0.1 lower → holds.
    ok = f10.judge(_cells(fa_large=(0.15, 0.15, 0.15)))
    assert ok.parts[0].ok is True
    # 0.05 against 0.14: only 0.09 lower → fails, and the verdict disagrees.
    bad = f10.judge(_cells(fa_large=(0.14, 0.14, 0.14)))
    assert bad.parts[0].ok is False and not bad.agrees and bad.decided


def test_rule_part_b_needs_every_seed_above_fedavg_with_three_seeds() -> None:
    # MD-GAN − FedAvg = (0.3, −0.05, 0.4): one seed below, so the 97.5 % interval reaches it.
    j = f10.judge(_cells(mdgan=(0.3, 0.0, 0.5), uagan=(0.0, 0.05, 0.1)))
    assert j.parts[1].ok is False and not j.agrees


def test_rule_undecided_when_the_protocols_were_skipped() -> None:
    j = f10.judge(_cells(mdgan=None, uagan=None))
    parts = {p.name: p.ok for p in j.parts}
    assert parts["b"] is None  # both server-held protocols skipped
    assert parts["c"] is True  # judged on the 3 FedAvg weightings that ran
    assert not j.decided and not j.agrees
    assert "3 of 9 comparisons measured" in j.parts[2].text


def test_group_dro_rows_are_shown_but_outside_the_preregistered_family() -> None:
    """Issue 27's group_dro rows join item 10's grid at the small α (every protocol) without
    changing rule (c): its family stays 3 protocols × 3 weightings, and a group_dro cell far
    above its unweighted base cannot become the rule's "highest lower end"."""
    dro = [m for m in f10.SMALL_METHODS if m.rule == "group_dro"]
    assert dro == [Method(p, "group_dro") for p in ("fedavg", "mdgan", "uagan")]
    _, _, cells = f10._plan(quick=False)
    assert {c[0] for c in cells if c[0].rule == "group_dro"} == set(dro)
    assert len(cells) == len(set(cells)), "a cell planned twice"
    res = _cells()
    d = f10.DEFAULT_LOCAL
    for m in dro:
        res[(m, f10.SMALL_ALPHA, d)] = [_o((m.label, s), 0.9, 0.9) for s in range(3)]
    j = f10.judge(res)
    (c,) = [p for p in j.parts if p.name == "c"]
    assert "9 of 9 comparisons measured" in c.text and "group_dro" not in c.text


def test_rule_no_regime_means_nothing_is_judged() -> None:
    j = f10.judge(_cells(twin=(0.5, 0.1, 0.2)))  # twin keeps both in 1 of 3 seeds
    assert not j.regime and j.twin_kept == 1
    assert j.decided and not j.agrees


def test_rule_part_d_compares_the_most_and_fewest_local_steps() -> None:
    j = f10.judge(_cells(many=(0.46, 0.46, 0.46)))  # 0.04 below 0.5: not the 0.05 asked
    assert j.parts[3].ok is False


# --- comparisons against FedAvg ---------------------------------------------------------------


def test_bonferroni_can_turn_a_95_percent_difference_indistinguishable() -> None:
    # Differences (0.2, 0.2, 0.2, 0.2, −0.1): a resample with k copies of −0.1 has mean
    # 0.2 − 0.06 k, k ~ Binomial(5, 1/5). P(k ≥ 3) = .058 > 2.5 % ≥ P(k ≥ 4) = .0067, so the
    # 95 % interval starts at k = 3: 0.02 > 0. At 1 − 0.05/13 the lower quantile is .19 %:
    # P(k ≥ 4) > .19 % > P(k = 5) = .0003, so it starts at k = 4: −0.04 < 0.
    base = [_o(("FedAvg", s), 0.1, 0.1) for s in range(5)]
    covs = (0.3, 0.3, 0.3, 0.3, 0.0)
    better = [_o(("x", s), c, c) for s, c in enumerate(covs)]
    clear = [_o(("y", s), 0.6, 0.6) for s in range(5)]
    metric = {"minority coverage": lambda o: minority_coverage(o, ("0", "1"))}
    a, b = against(base, {Method("mdgan"): better, Method("uagan"): clear}, metric, family=13)
    assert a.ci95.low == pytest.approx(0.02) and a.adjusted.low == pytest.approx(-0.04)
    assert a.ci95.mean == pytest.approx(0.14)
    assert a.word == "indistinguishable" and not a.separated
    assert b.word == "higher" and b.adjusted.low == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seed order"):
        against(base, {Method("mdgan"): better[::-1]}, metric, family=1)


# --- figures and a quick run ------------------------------------------------------------------


def test_figures_draw_bytes_where_the_runs_counted_them(tmp_path: Path) -> None:
    res = _cells()
    for (m, _a, _k), os_ in res.items():
        for o in os_:
            if m.protocol != "fedavg":
                o.totals = {"fed.bytes_down": 2e6, "fed.bytes_up": 1e6}
    d = f10.DEFAULT_LOCAL
    names = [
        f10._figure_alpha(res, d, tmp_path),
        f10._figure_modes(res, d, tmp_path),
        f10._figure_bytes(res, d, tmp_path),
    ]
    assert names == ["10-coverage-alpha.png", "10-coverage-modes.png", "10-bytes.png"]
    for n in names:
        png = tmp_path / n
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 150_000
    o = res[(Method("mdgan"), f10.SMALL_ALPHA, d)][0]
    assert o.bytes == 3e6
    assert math.isnan(res[(f10.FEDAVG, f10.SMALL_ALPHA, d)][0].bytes)  # no fed.bytes rows


def test_quick_item_10_runs_every_method_it_can_and_skips_the_rest(tmp_path: Path) -> None:
    from fedgan.server.protocols import PROTOCOLS

    f = f10.run(quick=True, fig_dir=tmp_path, n_jobs=2)
    skipped = f.values["skipped"]
    ran = f.values["coverage"]
    for m in f10.SMALL_METHODS:
        key = f"{m.label}/{f10.SMALL_ALPHA:g}/{f10.QUICK_DEFAULT}"
        assert (key in ran) != (key in skipped)
        assert (key in ran) == (m.protocol == "fedavg" or m.protocol in PROTOCOLS)
    for a in f10.ALPHAS:
        assert f"FedAvg/{a:g}/{f10.QUICK_DEFAULT}" in ran
    for k in f10.QUICK_LOCAL:
        assert f"FedAvg/{f10.DRIFT_ALPHA:g}/{k}" in ran
    assert f"twin/{f10.SMALL_ALPHA:g}/{f10.QUICK_DEFAULT}" in ran
    for label in ("| FedAvg + agnostic |", "| MD-GAN |", "| α = 100 |", "| centralized twin |"):
        assert label in f.table
    figs = [f.figure, *f.more_figures]
    assert all((tmp_path / str(n)).is_file() for n in figs) and len(figs) == 3
    assert f.outcome in ("agrees", "disagrees", "undecided")
    if skipped:
        assert "Skipped" in f.notes and re.search(r"unknown protocol '(mdgan|uagan)'", f.notes)
