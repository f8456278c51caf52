"""Per-group PRDC tables: against masks and pandas groupby computed by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.metrics import PRDC, group_prdc, prdc

Sampler = Callable[..., tuple[np.ndarray, np.ndarray]]  # the `ring` fixture
Dropped = tuple[PRDC, np.ndarray, np.ndarray]
DROPPED = 3


@pytest.fixture
def dropped_mode(ring: Sampler) -> Dropped:
    """8-ring reals (100 per mode) against a generator that never produces mode 3."""
    rng = np.random.default_rng(21)
    real, real_labels = ring(rng, 800)
    fake, fake_labels = ring(rng, 700, modes=[m for m in range(8) if m != DROPPED])
    return prdc(real, fake, 5), real_labels, fake_labels


def test_dropped_mode_recall_and_coverage_by_group(dropped_mode: Dropped) -> None:
    res, real_labels, _ = dropped_mode
    report = group_prdc(res, pd.DataFrame({"mode": real_labels}))
    by = report.by_group
    for metric, per_real in (("recall", res.recall_per_real), ("coverage", res.coverage_per_real)):
        for g in range(8):
            mask = real_labels == g
            assert by.loc[g, metric] == pytest.approx(per_real[mask].mean()), (metric, g)
    assert by.loc[DROPPED, "recall"] == 0.0 and by.loc[DROPPED, "coverage"] == 0.0
    assert (by.drop(index=DROPPED)["recall"] > 0.9).all()
    summary = report.summary
    assert summary.loc["recall", "group_min"] == 0.0
    assert summary.loc["recall", "ratio"] == 0.0
    assert summary.loc["recall", "difference"] == pytest.approx(
        by.drop(index=DROPPED)["recall"].max()
    )
    assert summary.loc["recall", "difference"] > 0.9
    assert summary.loc["recall", "worst_group"] == DROPPED
    assert summary.loc["coverage", "worst_group"] == DROPPED
    np.testing.assert_array_equal(by["n_real"], np.bincount(real_labels))


def test_fakes_attributed_to_nearest_real_group(dropped_mode: Dropped) -> None:
    """By construction each fake's nearest real point is on the fake's own mode (σ ≪ spacing),
    so the default attribution must reproduce masks by the true fake labels."""
    res, real_labels, fake_labels = dropped_mode
    report = group_prdc(res, pd.DataFrame({"mode": real_labels}))
    by = report.by_group
    np.testing.assert_array_equal(real_labels[res.nearest_real_index], fake_labels)
    for g in range(8):
        mask = fake_labels == g
        assert by.loc[g, "n_fake"] == mask.sum()
        if g == DROPPED:
            assert np.isnan(by.loc[g, "precision"]) and np.isnan(by.loc[g, "density"])
        else:
            assert by.loc[g, "precision"] == pytest.approx(res.precision_per_fake[mask].mean())
            assert by.loc[g, "density"] == pytest.approx(res.density_per_fake[mask].mean())
    # A group the generator never reaches is the worst group of the fake-side summaries, as
    # precision (and density) 0 — not left out, which read as ratio 1 / difference 0 before.
    present = by.drop(index=DROPPED)
    for metric in ("precision", "density"):
        stats = report.summary.loc[metric]
        assert stats["group_min"] == 0.0 and stats["ratio"] == 0.0
        assert stats["difference"] == pytest.approx(present[metric].max())
        assert stats["group_max"] == pytest.approx(present[metric].max())
        assert stats["worst_group"] == DROPPED
    tidy = report.tidy()
    row = tidy[(tidy["mode"] == DROPPED) & (tidy["metric"] == "precision")]
    assert np.isnan(row["value"].iloc[0]) and row["n"].iloc[0] == 0  # its own row: n/a


def test_unreached_group_is_the_worst_even_when_the_rest_is_equal() -> None:
    """Two groups of 50 real points each; every fake sits on group "a": by hand, group "a" has
    the fakes' precision, "b" none. Today's fairlearn summary over defined groups only would
    read ratio 1, difference 0."""
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    fake = rng.normal(0, 0.1, (40, 2))
    labels = np.array(["a"] * 50 + ["b"] * 50)
    res = prdc(real, fake, 3)
    report = group_prdc(res, labels, min_group_size=1)
    prec_a = res.precision_per_fake.mean()  # every fake is attributed to "a"
    assert prec_a > 0.5
    stats = report.summary.loc["precision"]
    assert stats["group_min"] == 0.0 and stats["worst_group"] == "b"
    assert stats["difference"] == pytest.approx(prec_a) and stats["ratio"] == 0.0
    assert np.isnan(report.by_group.loc["b", "precision"])
    # Real-side summaries are fairlearn's, unchanged: both groups have recall values.
    rec = res.recall_per_real
    assert report.summary.loc["recall", "group_min"] == pytest.approx(
        min(rec[:50].mean(), rec[50:].mean())
    )


def test_explicit_fake_groups_and_series_input(dropped_mode: Dropped) -> None:
    res, real_labels, fake_labels = dropped_mode
    # Deliberately wrong labels for the fakes: the table must follow them, not the geometry.
    shifted = (fake_labels + 1) % 8
    report = group_prdc(res, pd.Series(real_labels, name="mode"), pd.Series(shifted, name="mode"))
    expected = pd.Series(res.density_per_fake).groupby(shifted).mean()
    pd.testing.assert_series_equal(
        report.by_group["density"].dropna(), expected, check_names=False, check_index_type=False
    )


def test_intersectional_groups_match_groupby(dropped_mode: Dropped) -> None:
    res, real_labels, _ = dropped_mode
    side = np.where(np.arange(800) % 3 == 0, "a", "b")
    groups = pd.DataFrame({"mode": real_labels, "side": side})
    report = group_prdc(res, groups)
    assert isinstance(report.by_group.index, pd.MultiIndex)
    expected = pd.Series(res.coverage_per_real.astype(float)).groupby([real_labels, side]).mean()
    np.testing.assert_allclose(report.by_group["coverage"].to_numpy(), expected.to_numpy())
    assert report.summary.loc["coverage", "worst_group"][0] == DROPPED


def test_small_group_flag() -> None:
    rng = np.random.default_rng(3)
    real = rng.standard_normal((120, 2))
    fake = rng.standard_normal((120, 2))
    labels = np.array(["big"] * 100 + ["small"] * 20)
    report = group_prdc(prdc(real, fake, 3), labels, min_group_size=30)
    assert report.small_groups == ["small"]
    assert report.by_group.loc["small", "small"] and not report.by_group.loc["big", "small"]
    assert report.by_group.loc["small", "n_real"] == 20


def test_bootstrap_intervals(dropped_mode: Dropped) -> None:
    res, real_labels, _ = dropped_mode
    report = group_prdc(
        res,
        pd.DataFrame({"mode": real_labels}),
        n_boot=30,
        ci_quantiles=[0.05, 0.95],
        random_state=0,
    )
    assert report.ci is not None and report.summary_ci is not None
    lo, hi = report.ci[("recall", 0.05)], report.ci[("recall", 0.95)]
    assert (lo <= hi).all()
    # Every resample of an all-False group has recall 0.
    assert lo[DROPPED] == 0.0 and hi[DROPPED] == 0.0
    assert (report.ci[("coverage", 0.05)] <= report.by_group["coverage"] + 1e-12).all()
    assert report.summary_ci.loc["recall", ("ratio", 0.95)] == 0.0
    tidy = report.tidy()
    assert set(tidy["metric"]) == {"precision", "recall", "density", "coverage"}
    assert len(tidy) == 4 * 8
    assert {"q0.05", "q0.95", "value", "n", "mode"} <= set(tidy.columns)


def test_no_bootstrap_by_default(dropped_mode: Dropped) -> None:
    res, real_labels, _ = dropped_mode
    report = group_prdc(res, real_labels)
    assert report.ci is None and report.summary_ci is None
    assert "group" in report.tidy().columns


def test_length_mismatch_is_rejected(dropped_mode: Dropped) -> None:
    res, real_labels, _ = dropped_mode
    with pytest.raises(ValueError, match="real_groups"):
        group_prdc(res, real_labels[:-1])
    with pytest.raises(ValueError, match="fake_groups"):
        group_prdc(res, real_labels, np.zeros(3))


def test_accepts_any_prdc_result() -> None:
    rng = np.random.default_rng(4)
    res: PRDC = prdc(rng.standard_normal((60, 12)), rng.standard_normal((50, 12)), 2)
    labels = np.arange(60) % 2
    report = group_prdc(res, labels)
    for g in (0, 1):
        assert report.by_group.loc[g, "recall"] == pytest.approx(
            res.recall_per_real[labels == g].mean()
        )


def test_intersectional_groups_are_fairlearns_several_sensitive_features() -> None:
    """group_by [[sex, region]]: one group per combination, labelled "F|north", with the values
    fairlearn's MetricFrame gives for sensitive_features=[sex, region] and a mask by hand."""
    from fairlearn.metrics import MetricFrame
    from fedgan.simulator.metrics.groups import group_labels, grouping_name

    rng = np.random.default_rng(4)
    real = rng.normal(0, 1, (240, 2))
    fake = rng.normal(0, 1, (200, 2))
    people = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], 240),
            "region": rng.choice(["north", "south", "east"], 240, p=[0.5, 0.4, 0.1]),
        }
    )
    labels = group_labels(people, ["sex", "region"])
    assert grouping_name(["sex", "region"]) == "sex|region" == labels.name
    res = prdc(real, fake, 5)
    report = group_prdc(res, labels, min_group_size=1)
    frame = MetricFrame(
        metrics=lambda y, _: float(np.mean(y)),
        y_true=res.recall_per_real,
        y_pred=res.recall_per_real,
        sensitive_features=people[["sex", "region"]],
    )
    for (sex, region), value in frame.by_group.items():
        mask = (people["sex"] == sex) & (people["region"] == region)
        assert report.by_group.loc[f"{sex}|{region}", "recall"] == pytest.approx(value)
        assert value == pytest.approx(res.recall_per_real[mask.to_numpy()].mean())
    assert len(report.by_group) == len(frame.by_group) == 6
    assert report.summary.loc["recall", "difference"] == pytest.approx(
        frame.difference(method="between_groups")
    )
