"""`compare`: runs grouped by configuration, mean ± std over seeds, sweeps expanded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fedgan.simulator.cli import app
from fedgan.simulator.compare import (
    CompareError,
    compare,
    compare_figure,
    compare_plot,
    error_bars,
    run_dirs,
)
from fedgan.simulator.scenario import Scenario, resolved_yaml
from fedgan.simulator.store import RunStore, load_run
from fedgan.simulator.sweep import sweep
from typer.testing import CliRunner

from tests.conftest import tiny, tiny_raw

runner = CliRunner()


def _fake_run(out: Path, federate: str, seed: int, recall: float, clients: list[float]) -> Path:
    """A run folder with a hand-written metrics table (no training: exact, instant)."""
    s = tiny(federation={"federate": federate}, seed=seed, name=f"n{seed}")
    store = RunStore.create(out, s.name, resolved_yaml(s), {})
    rows = [
        {"round": 1, "metric": "recall", "value": 0.0},  # an earlier round: must be ignored
        {"round": 2, "metric": "recall", "value": recall},
        {"round": 2, "metric": "coverage", "value": recall / 2},
        {"round": 2, "metric": "recall.group_min", "value": recall / 4},
        {"round": 2, "group_by": "mode", "group": "0", "metric": "recall", "value": 0.9},
    ]
    rows += [
        {
            "round": 2,
            "scope": "client",
            "client": i,
            "group_by": "mode",
            "metric": "eval.served_share",
            "value": v,
        }
        for i, v in enumerate(clients)
    ]
    worst = min(range(len(clients)), key=lambda i: (clients[i], i))
    rows.append(
        {
            "round": 2,
            "scope": "clients",
            "group_by": "mode",
            "metric": "worst_client",
            "value": worst,
        }
    )
    # mode 0 forgotten where recall is low (< 0.6): one run of the three "both" ones
    rows.append(
        {"round": 2, "group_by": "mode", "group": "0", "metric": "forgotten", "value": recall < 0.6}
    )
    store.add_metrics(rows)
    return store.path


def _by_hand(run: Path, metric: str) -> float:
    m = load_run(run).metrics
    g = m[(m["scope"] == "global") & (m["group"] == "") & (m["metric"] == metric)]
    return float(g[g["round"] == g["round"].max()]["value"].iloc[0])


def test_groups_by_configuration_with_mean_and_std(tmp_path: Path) -> None:
    both = [_fake_run(tmp_path, "both", s, r, [r, 0.2]) for s, r in [(0, 0.5), (1, 0.7), (2, 0.9)]]
    gen = [_fake_run(tmp_path, "generator", s, r, [0.1, 0.6]) for s, r in [(0, 0.3), (1, 0.4)]]
    df = compare([*both, *gen], metrics=["recall", "coverage", "recall.group_min"])
    assert list(df["config"]) == ["federate=both", "federate=generator"]
    assert list(df["federation.federate"]) == ["both", "generator"]  # seed, name: not keys
    assert list(df["n_runs"]) == [3, 2] and list(df["seeds"]) == ["0,1,2", "0,1"]
    for i, runs in enumerate((both, gen)):
        for metric in ("recall", "coverage", "recall.group_min"):
            values = [_by_hand(r, metric) for r in runs]
            assert df.loc[i, f"{metric}.mean"] == pytest.approx(np.mean(values))
            assert df.loc[i, f"{metric}.std"] == pytest.approx(np.std(values, ddof=1))
    assert df.loc[0, "recall.mean"] == pytest.approx(0.7)

    clients = compare(both, metrics=["worst_client_served", "groups_forgotten"])
    assert clients.loc[0, "worst_client_served.mean"] == pytest.approx(0.2)
    assert clients.loc[0, "groups_forgotten.mean"] == pytest.approx(1 / 3)
    assert clients.loc[0, "forgotten"] == "mode 0 (1 of 3)"
    assert clients.loc[0, "config"] == "n0", "one configuration: labelled by the scenario name"

    pooled = compare([*both, *gen], metrics=["recall"], by=["partition.n_clients"])
    assert len(pooled) == 1 and pooled.loc[0, "n_runs"] == 5
    with pytest.raises(CompareError, match="available"):
        compare(both, metrics=["nope"])
    # A plain folder is searched for run folders.
    assert set(run_dirs([tmp_path])) == set(both + gen)


def test_compare_on_a_sweep_equals_compare_on_its_runs(tmp_path: Path) -> None:
    base = tmp_path / "s.yaml"
    base.write_text(yaml.safe_dump(tiny_raw(federation={"rounds": 1})))
    res = sweep(base, {"federation.federate": ["both", "generator"]}, [0, 1], tmp_path, name="sw")
    on_sweep = compare([res.path])
    on_runs = compare(res.run_dirs())
    pd.testing.assert_frame_equal(on_sweep, on_runs)
    assert list(on_sweep["n_runs"]) == [2, 2]
    assert list(on_sweep["config"]) == ["federate=both", "federate=generator"]

    csv, png = tmp_path / "cmp.csv", tmp_path / "cmp.png"
    out = runner.invoke(
        app,
        [
            "compare",
            str(res.path),
            "--metrics",
            "recall,coverage",
            "--csv",
            str(csv),
            "--figure",
            str(png),
        ],
    )
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 configuration(s)" in out.output
    saved = pd.read_csv(csv)
    assert list(saved["config"]) == list(on_sweep["config"])
    pd.testing.assert_series_equal(saved["recall.mean"], on_sweep["recall.mean"])
    bad = runner.invoke(app, ["compare", str(tmp_path / "missing")])
    assert bad.exit_code == 2


def _scored(out: Path, s: Scenario, recall: float) -> Path:
    """A run folder of scenario `s` whose last evaluation has this recall (no training)."""
    store = RunStore.create(out, s.name, resolved_yaml(s), {})
    scope = "centralized" if s.federation is None else "global"
    store.add_metrics([{"round": 2, "scope": scope, "metric": "recall", "value": recall}])
    return store.path


def test_labels_name_only_the_keys_that_differ_in_short_form(tmp_path: Path) -> None:
    fedavg = [_scored(tmp_path, tiny(seed=s), r) for s, r in ((0, 0.5), (1, 0.7))]
    aware = tiny(seed=0, strategy={"name": "group_aware", "params": {"beta": 2.0}})
    runs = [*fedavg, _scored(tmp_path, aware, 0.6)]
    # strategy.name and strategy.params.beta differ; the seed does not make a configuration.
    assert list(compare(runs, metrics=["recall"])["config"]) == [
        "strategy=fedavg",
        "strategy=group_aware β=2",
    ]
    # Beside its centralized twin, a federated run reads as such, not as 40 differing keys.
    twin = _scored(tmp_path, tiny(seed=0).centralized_twin(), 0.9)
    other = tiny(seed=0, data={"n_samples": 900}).centralized_twin()  # not anyone's twin
    df = compare([*runs, twin, _scored(tmp_path, other, 0.2)], metrics=["recall"])
    assert list(df["config"]) == [
        "federated (fedavg)",
        "federated (group_aware) β=2",
        "centralized twin n_samples=800",
        "centralized n_samples=900",
    ]
    assert list(df["n_runs"]) == [2, 1, 1, 1]


def test_error_bars_are_clipped_to_the_metric_range() -> None:
    # recall 0.95 ± 0.1 reaches 1 (above: 0.05), not 1.05; 0.02 ± 0.1 stops at 0 (below 0.02).
    bars = error_bars([0.95, 0.02, 0.5], [0.1, 0.1, float("nan")], "recall")
    np.testing.assert_allclose(bars, [[0.1, 0.02, 0.0], [0.05, 0.1, 0.0]])
    # A gap's ratio is a share too; a density is ≥ 0 only; a loss is not clipped.
    np.testing.assert_allclose(error_bars([0.9], [0.3], "recall.ratio"), [[0.3], [0.1]])
    np.testing.assert_allclose(error_bars([1.5], [2.0], "density"), [[1.5], [2.0]])
    np.testing.assert_allclose(error_bars([-1.0], [2.0], "train.g_loss"), [[2.0], [2.0]])


def test_figure_draws_clipped_bars_and_one_dot_per_seed(tmp_path: Path) -> None:
    runs = [_scored(tmp_path, tiny(seed=s), r) for s, r in ((0, 0.9), (1, 1.0), (2, 0.98))]
    runs.append(_scored(tmp_path, tiny(seed=0, federation={"federate": "generator"}), 0.3))
    table = compare(runs, metrics=["recall"])
    fig = compare_plot(table)
    ax = fig.axes[0]
    # Per-seed dots: the three seeds of the first configuration, the one of the second.
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert sorted(np.concatenate([d.get_xdata() for d in dots])) == pytest.approx(
        sorted([0.9, 1.0, 0.98, 0.3])
    )
    # The error bar of 0.96 ± std(0.9, 1.0, 0.98) ends at 1 (the std, ~0.053, would pass it).
    std = float(np.std([0.9, 1.0, 0.98], ddof=1))
    assert 0.96 + std > 1.0
    ends = [
        x
        for coll in ax.collections
        for seg in coll.get_segments()  # type: ignore[attr-defined]
        for x, _ in seg
    ]
    # ... and the single seed's bar has none (a zero-length bar at its mean).
    assert sorted(set(np.round(ends, 9))) == pytest.approx([0.3, 0.96 - std, 1.0])
    assert ax.get_xlim()[1] <= 1.02 + 1e-9
    png = compare_figure(table, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
