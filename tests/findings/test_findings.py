"""The findings' quick mode: the qualitative outcome of items 1, 3, 5, 7 and 8 (CI-sized), and
the document the runner writes. Expected values come from the definitions, not from the code."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from fedgan.simulator.cli import app
from fedgan.simulator.findings.common import Finding
from fedgan.simulator.findings.suite import parse_only, run_items, write_findings
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Finding]:
    figs = tmp_path_factory.mktemp("figures")
    return {f.number: f for f, _ in run_items([1, 3, 5, 7, 8], quick=True, fig_dir=figs)}


def test_item1_saturating_gradient_shrinks_with_d_non_saturating_does_not(
    quick: dict[int, Finding],
) -> None:
    v = quick[1].values
    # d/dv log(1 − σ(v)) = −σ(v) and d/dv −log σ(v) = −(1 − σ(v)): exact up to float32.
    assert v["logit_err"]["saturating"] < 1e-5
    assert v["logit_err"]["non_saturating"] < 1e-5
    # When the critic wins (D < 0.1) the saturating signal is a fraction of the contested one;
    # the non-saturating one is not.
    assert v["ratio"]["saturating"] < 0.5
    assert v["ratio"]["non_saturating"] >= 0.5
    assert v["ratio"]["non_saturating"] > 2 * v["ratio"]["saturating"]


def test_item3_js_flat_at_ln2_while_wasserstein_slopes(quick: dict[int, Finding]) -> None:
    v = quick[3].values
    ln2 = math.log(2.0)
    assert ln2 - 0.1 <= v["js_min"] and v["js_max"] <= ln2 + 1e-9
    assert abs(v["slope_js"]) < 0.1
    # W₁ between the lines x = 0 and x = θ with equal marginals is θ: slope 1.
    assert 0.7 < v["slope_w"] < 1.3
    assert v["grad_w"] > 0.5


def test_item5_clipped_weights_pile_up_at_the_box_edges(quick: dict[int, Finding]) -> None:
    m = quick[5].values["mean"]
    clip, gp, sn = quick[5].values["names"]
    assert m[clip]["sat0"] == 0.0  # the initial weights were scaled into [−c/2, c/2]
    # Uniform weights in [−c, c] would put ~0.1 % of the entries within 0.1 % of the edge.
    assert m[clip]["sat"] > 0.3
    # Slope bounded by c and the widths: far below the GP and SN critics' ≈ 1.
    assert m[clip]["lip"] < 0.1 < 0.5 < m[gp]["lip"]
    assert m[sn]["lip"] > 0.5
    assert m[clip]["capacity"] < min(m[gp]["capacity"], m[sn]["capacity"])


def test_item7_two_branch_spectral_norm_critic_exceeds_one(quick: dict[int, Finding]) -> None:
    m = quick[7].values
    assert m["two parallel branches"]["lip"] > 1.05
    assert m["two parallel branches"]["lip"] > 1.05 * m["two parallel branches"]["branch"]
    assert m["single chain (MLP)"]["lip"] <= m["single chain (MLP)"]["branch"]
    assert m["two parallel branches"]["lip"] <= m["two parallel branches"]["bound"]


def test_item8_diagnosis_names_dropping_and_collapse(quick: dict[int, Finding]) -> None:
    v = quick[8].values
    drop, inter = "drops component 1", "interpolates between the components"
    for dist in ("3", "4", "6"):
        assert set(v["labels"][f"{dist}/{drop}"]) == {"mode_dropping"}
        # Samples on one real component: density ≈ 1 (Naeem et al.: E density = 1 on-manifold).
        assert 0.8 < v["density"][f"{dist}/{drop}"] < 1.2
    for dist in ("4", "6"):  # the bridge leaves the support: density falls, collapse is named
        assert set(v["labels"][f"{dist}/{inter}"]) == {"manifold_collapse"}
        assert v["density"][f"{dist}/{inter}"] < 0.8
    assert v["per_distance"][6.0] and v["per_distance"][4.0]


def test_write_findings_writes_every_section_and_small_figures(tmp_path: Path) -> None:
    path, results = write_findings(tmp_path, quick=True, only=[2])
    doc = path.read_text()
    ((f, _),) = results
    assert f.number == 2 and f.agrees  # the Dirac-GAN is exact: growth √(1 + η²) per step
    for part in (
        "**Setup.**",
        "**Expectation (stated before measuring).**",
        "**Rule.**",
        "**Measured.**",
        "**Verdict: agrees.**",
    ):
        assert part in doc
    assert doc.index("**Expectation") < doc.index("**Measured.**") < doc.index("**Verdict")
    figs = re.findall(r"\(figures/([^)]+\.png)\)", doc)
    assert figs == ["02-rotation.png"]
    png = tmp_path / "figures" / figs[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 150_000
    assert not list(tmp_path.glob(".*.tmp*")) and not list((tmp_path / "figures").glob(".*"))


def test_a_run_cut_short_keeps_the_items_it_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedgan.simulator.findings import suite

    def broken(quick: bool, fig_dir: Path, jobs: int) -> Finding:
        raise KeyboardInterrupt  # the session ends during item 3

    monkeypatch.setitem(suite.ITEMS, 3, broken)
    with pytest.raises(KeyboardInterrupt):
        write_findings(tmp_path, quick=True, only=[2, 3])
    doc = (tmp_path / "findings.md").read_text()
    assert "## 2. Rotation" in doc and "| [3](#3)" not in doc


def test_only_rejects_unknown_items() -> None:
    assert parse_only("3,1,3") == [1, 3]
    assert parse_only(None) == list(range(0, 13))
    with pytest.raises(ValueError, match=r"no item\(s\) \[13\]; items are 0–12"):
        parse_only("1,13")
    res = CliRunner().invoke(app, ["findings", "--only", "x"])
    assert res.exit_code == 2 and "item numbers" in res.output


def test_item0_regime_budget_is_the_first_where_four_of_five_seeds_keep_both() -> None:
    """The rule on hand-made outcomes: a seed keeps both modes when coverage ≥ 0.3 on each."""
    from fedgan.simulator.findings.batch import Outcome
    from fedgan.simulator.findings.regime import keeps_both, regime_budgets

    def o(c0: float, c1: float) -> Outcome:
        return Outcome((), groups={"coverage": {"0": c0, "1": c1}})

    assert keeps_both(o(0.3, 0.9)) and not keeps_both(o(0.29, 0.9))
    assert not keeps_both(Outcome(()))  # a diverged run keeps nothing
    three = [o(0.5, 0.5)] * 3 + [o(0.1, 0.5)] * 2
    four = [o(0.5, 0.5)] * 4 + [o(0.0, 0.0)]
    by = {(0.02, 2000): three, (0.02, 4000): four, (0.02, 8000): three, (0.05, 2000): four}
    assert regime_budgets(by) == {0.02: 4000, 0.05: 2000}
    assert regime_budgets({(0.02, 2000): three}) == {0.02: None}


def test_a_pending_item_has_its_section_without_numbers_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    from fedgan.simulator.findings.skew import EXPECTATION, pending
    from fedgan.simulator.findings.suite import record_pending

    write_findings(tmp_path, quick=False, only=[2])  # a measured item to keep
    doc = record_pending(tmp_path, [pending()]).read_text()
    assert "| [10](#10) | Federation at the regime" in doc and "| not measured yet | — |" in doc
    assert "## 2. Rotation" in doc and "**Verdict: agrees.**" in doc
    ten = doc[doc.index('<a id="10"></a>') :]
    assert EXPECTATION in ten and "**Verdict: undecided.** Not measured yet" in ten
    assert "![item 10]" not in ten  # no figure before the run
    # The header counts the measured item's time and stamp only.
    assert " – " not in doc.splitlines()[2].split(";")[0]
