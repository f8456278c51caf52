"""`compare`: runs grouped by configuration, mean ± std over seeds, sweeps expanded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from simulator.cli import app
from simulator.compare import CompareError, compare, run_dirs
from simulator.scenario import resolved_yaml
from simulator.store import RunStore, load_run
from simulator.sweep import sweep
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
        {"round": 2, "scope": "client", "client": i, "metric": "eval.recall", "value": v}
        for i, v in enumerate(clients)
    ]
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

    clients = compare(both, metrics=["worst_client_recall", "client_recall_spread"])
    assert clients.loc[0, "worst_client_recall.mean"] == pytest.approx(0.2)
    assert clients.loc[0, "client_recall_spread.mean"] == pytest.approx(np.mean([0.3, 0.5, 0.7]))
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
