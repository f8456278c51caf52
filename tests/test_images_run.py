"""A federated run on the user's own MNIST-format files, written here: the scenario finds them
relative to itself (also through `stacked`'s `base_params`), a file of fewer images than the
dry run's 64 validates, and the run writes per-label rows in a trained feature space."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fedgan.simulator.api import run
from fedgan.simulator.scenario import load

from tests.data.test_image_formats import idx_bytes

LABELS = (0, 3, 5, 7)


def _write_idx(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """n 28×28 images of 4 labels, each label a bright bar in its own place (learnable), as
    a gzipped IDX pair."""
    rng = np.random.default_rng(seed)
    y = np.array([LABELS[i % len(LABELS)] for i in range(n)], dtype=np.uint8)
    x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(y):
        k = LABELS.index(int(label))
        x[i, 4 + 5 * k : 8 + 5 * k, 4:24] = 250
    folder.mkdir(parents=True, exist_ok=True)
    xi, yi = folder / "t-images-idx3-ubyte.gz", folder / "t-labels-idx1-ubyte.gz"
    xi.write_bytes(gzip.compress(idx_bytes(x)))
    yi.write_bytes(gzip.compress(idx_bytes(y)))
    return xi, yi


def _scenario(folder: Path, data: dict[str, object]) -> Path:
    raw = {
        "name": "idx",
        "seed": 1,
        "data": data,
        "gan": {
            "latent_dim": 8,
            "generator": {"kind": "dcgan", "widths": [4, 8]},
            "critic": {"kind": "dcgan", "widths": [4, 8]},
            "batch_size": 16,
        },
        "partition": {"name": "dirichlet", "params": {"alpha": 1.0}, "n_clients": 2},
        "federation": {"rounds": 2, "local_steps": 2},
        "evaluation": {"every": 1, "n_samples": 100, "min_group_size": 5},
    }
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_small_file_validates_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_idx(tmp_path / "scen" / "files", 40)  # fewer than the 64-point dry run
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    plain = _scenario(tmp_path / "scen", {"dataset": "images", "params": params})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load(plain)
    assert s.data.params["path"] == str(tmp_path / "scen" / "files" / "t-images-idx3-ubyte.gz")
    stacked = _scenario(
        tmp_path / "scen",
        {
            "dataset": "stacked",
            "n_samples": 200,
            "params": {"base": "images", "base_params": params},
        },
    )
    s = load(stacked)
    assert s.data.params["base_params"]["labels"] == str(
        tmp_path / "scen" / "files" / "t-labels-idx1-ubyte.gz"
    )


def test_two_federated_rounds_on_idx_files_write_per_label_rows(tmp_path: Path) -> None:
    _write_idx(tmp_path / "files", 240)
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    res = run(
        _scenario(tmp_path, {"dataset": "images", "params": params}),
        out_dir=tmp_path / "runs",
    )
    m = res.metrics
    rows = m[(m["scope"] == "global") & (m["group_by"] == "label") & (m["metric"] == "coverage")]
    assert sorted(rows["round"].unique()) == [1, 2]
    assert sorted(rows["group"].astype(int).unique()) == list(LABELS)
    env = json.loads((res.path / "env.json").read_text())
    # The bars are trivially separable: a classifier that learned anything scores high.
    assert env["feature_space"]["accuracy"] > 0.9
    part = pd.read_csv(res.path / "partition.csv")
    assert set(part["group_by"]) == {"label"} and part["n"].sum() > 0


def test_the_cli_says_which_feature_space_the_numbers_are_in(tmp_path: Path) -> None:
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    _write_idx(tmp_path / "files", 120)
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    path = _scenario(tmp_path, {"dataset": "images", "params": params})
    res = CliRunner().invoke(
        app, ["run", str(path), "federation.rounds=1", "--out", str(tmp_path / "runs")]
    )
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("feature space:"))
    assert "classifier trained on the training split" in line
    acc = json.loads(next((tmp_path / "runs").rglob("env.json")).read_text())
    assert f"accuracy {acc['feature_space']['accuracy']:.3f}" in line


def test_evaluation_features_resolves_against_the_scenario_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    folder = tmp_path / "scen"
    _write_idx(folder / "files", 80)
    torch.jit.save(torch.jit.script(torch.nn.Flatten()), str(folder / "trunk.pt"))
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    path = _scenario(folder, {"dataset": "images", "params": params})
    raw = yaml.safe_load(path.read_text())
    raw["evaluation"]["features"] = "trunk.pt"
    path.write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load(path).evaluation.features == str(folder / "trunk.pt")
