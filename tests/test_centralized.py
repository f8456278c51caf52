"""The centralized baseline: split, run folder, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fedgan.simulator.centralized import run_centralized
from fedgan.simulator.data import load_dataset
from fedgan.simulator.prepare import stratified_split
from fedgan.simulator.scenario import validate

RAW = {
    "name": "c",
    "seed": 1,
    "data": {
        "dataset": "ring",
        "n_samples": 600,
        "params": {"minority_modes": [0], "minority_weight": 0.01},
    },
    "gan": {"generator": {"widths": [16]}, "critic": {"widths": [16]}, "batch_size": 32},
    "train": {"steps": 20},
    "evaluation": {"every": 10, "n_samples": 200, "min_group_size": 5},
}


def test_stratified_split_keeps_tiny_groups_on_both_sides() -> None:
    ds = load_dataset("ring", 600, 0, {"minority_modes": [0], "minority_weight": 0.01})
    tr, ho = stratified_split(ds, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(tr, ho)) == 0 and len(tr) + len(ho) == 600
    g = ds.groups["mode"].to_numpy()
    assert (g[tr] == 0).sum() >= 1 and (g[ho] == 0).sum() >= 1  # 6 points of mode 0
    assert abs(len(ho) - 120) <= 8


def test_run_writes_folder_and_is_deterministic(tmp_path: Path) -> None:
    s = validate(RAW)
    a = run_centralized(s, tmp_path / "a")
    b = run_centralized(s, tmp_path / "b")
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert sorted(a.metrics["round"].unique()) == [10, 20]
    assert set(a.metrics["scope"]) == {"centralized"}
    for name in (
        "scenario.yaml",
        "env.json",
        "metrics.parquet",
        "metrics.csv",
        "timings.csv",
        "diagnosis.csv",
        "partition.csv",
        "samples/round-000020.npy",
        "checkpoints/round-000020.npz",
    ):
        assert (a.path / name).exists(), name
    assert {"train.g_loss", "train.lipschitz.real", "train.lipschitz.layer_product"} <= set(
        a.metrics["metric"]
    )
    c = run_centralized(validate({**RAW, "seed": 2}), tmp_path / "c")
    assert not np.array_equal(a.metrics["value"].to_numpy(), c.metrics["value"].to_numpy())
