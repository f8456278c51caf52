"""One evaluation: headline, per-group rows, modes and diagnosis, on generators we construct."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.data import load_dataset
from fedgan.simulator.evaluate import Evaluator, label_mode_metrics


@pytest.fixture(scope="module")
def held():
    return load_dataset("ring", 2000, 0, {})


def _rows(ev, metric: str) -> pd.DataFrame:
    rows = [
        {**r, "group": str(r["group"])}
        for r in ev.rows
        if r["metric"] == metric and r.get("group", "") != ""
    ]
    return pd.DataFrame(rows)


def test_true_samples_are_healthy_with_every_mode(held) -> None:
    fake = load_dataset("ring", 2000, 1, {}).X
    ev = Evaluator(held)(fake)
    assert ev.summary["modes_captured"] == 8
    assert ev.summary["high_quality_rate"] > 0.97  # ≤ 1 − e^(−4.5) = 98.89 % in 2-D
    assert ev.summary["min_mass_ratio"] > 0.8
    assert ev.diagnosis.label == "healthy"
    assert ev.summary["coverage"] == pytest.approx(ev.summary["expected_coverage"], abs=0.05)


def test_missing_mode_three_shows_in_the_group_rows_and_diagnosis(held) -> None:
    src = load_dataset("ring", 2400, 2, {})
    fake = src.X[src.groups["mode"].to_numpy() != 3]
    ev = Evaluator(held)(fake)
    recall = _rows(ev, "recall").set_index("group")["value"]
    assert recall["3"] == 0.0
    assert all(recall[str(g)] > 0.9 for g in range(8) if g != 3)
    assert ev.summary["worst_group_coverage"] == 0.0
    assert "worst_group_recall" not in ev.summary  # recall names no worst group
    assert ev.summary["modes_captured"] == 7
    assert ev.summary["min_mass_ratio"] == 0.0
    # Reverse KL of 7 equal modes against 8: log(8/7).
    assert ev.summary["reverse_kl"] == pytest.approx(np.log(8 / 7), abs=0.01)
    assert ev.diagnosis.label == "mode_dropping"
    n = _rows(ev, "recall").set_index("group")["n"]
    assert n.sum() == len(held.X)


def test_one_mode_generator_captures_one_mode(held) -> None:
    src = load_dataset("ring", 2000, 3, {})
    ev = Evaluator(held)(src.X[src.groups["mode"].to_numpy() == 5])
    assert ev.summary["modes_captured"] == 1
    assert ev.summary["recall"] < 0.2


def test_non_finite_samples_raise(held) -> None:
    fake = load_dataset("ring", 200, 1, {}).X.copy()
    fake[3, 0] = np.nan
    with pytest.raises(FloatingPointError, match="1 of 200"):
        Evaluator(held)(fake)


def test_label_mode_metrics_by_hand() -> None:
    # True modes 0..3 at weights .4 .4 .1 .1; generated labels: 0 ×3, 1 ×1, and one 9 (off support).
    lm = label_mode_metrics(
        np.array([0, 0, 0, 1, 9]), np.array([0, 1, 2, 3]), np.array([0.4, 0.4, 0.1, 0.1])
    )
    assert lm.modes_captured == 2
    np.testing.assert_allclose(lm.mass_per_mode, [0.75, 0.25, 0, 0])
    assert lm.reverse_kl == pytest.approx(0.75 * np.log(0.75 / 0.4) + 0.25 * np.log(0.25 / 0.4))
    assert lm.min_mass_ratio == 0.0
    assert lm.off_support_rate == pytest.approx(0.2)


def test_digits_are_scored_in_classifier_space() -> None:
    real = load_dataset("digits", 600, 0, {})
    other = load_dataset("digits", None, 1, {}).X[:600]
    noise = np.random.default_rng(0).uniform(-1, 1, size=(600, 64)).astype(np.float32)
    good, bad = Evaluator(real)(other), Evaluator(real)(noise)
    assert good.summary["frechet_distance"] < bad.summary["frechet_distance"]
    assert good.summary["modes_captured"] == 10
    assert good.summary["recall"] > bad.summary["recall"]


def test_device_is_resolved_and_reaches_prdc(held, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedgan.simulator.evaluate as evaluate
    import torch
    devices: list[torch.device] = []
    real_prdc = evaluate.prdc

    def spy(*args, **kwargs):
        devices.append(kwargs["device"])
        return real_prdc(*args, **kwargs)

    monkeypatch.setattr(evaluate, "prdc", spy)
    fake = load_dataset("ring", 600, 4, {}).X
    want = Evaluator(held)(fake).summary
    got = Evaluator(held, device="auto")(fake).summary
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert devices == [torch.device("cpu"), auto]
    for metric in ("precision", "recall", "density", "coverage"):
        assert got[metric] == want[metric]  # the same numbers on either device
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' was asked for.*no CUDA device"):
            Evaluator(held, device="cuda")
