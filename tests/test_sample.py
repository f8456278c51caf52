"""Synthetic data out (`fedgan sample`): the run's own generator, in the user's units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.api import run
from fedgan.simulator.sample import SampleError, draw, write
from typer.testing import CliRunner

from tests.conftest import table_raw, tiny_raw, write_table


def _saved(run_dir: Path, r: int) -> np.ndarray:
    return np.load(run_dir / "samples" / f"round-{r:06d}.npy")


@pytest.fixture(scope="module")
def fed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    # EMA on: the evaluated generator is the server's average, not the last aggregate.
    raw = tiny_raw(gan={**tiny_raw()["gan"], "ema": 0.9})
    return run(raw, out_dir=out).path


def test_the_evaluations_samples_are_redrawn_exactly(fed_run: Path) -> None:
    for r in (1, 2):
        saved = _saved(fed_run, r)
        again = draw(fed_run, len(saved), r)
        np.testing.assert_array_equal(again.x, saved)
        assert again.kind == "arrays" and again.round == r
    assert draw(fed_run, 5).round == 2, "the last evaluated round by default"


def test_another_seed_draws_other_points(fed_run: Path) -> None:
    a, b = draw(fed_run, 50, seed=11).x, draw(fed_run, 50).x
    assert a.shape == b.shape == (50, 2) and not np.allclose(a, b)


def test_bad_requests_name_what_is_allowed(fed_run: Path, tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="evaluated rounds: 1, 2"):
        draw(fed_run, 10, round_=7)
    with pytest.raises(SampleError, match="at least 1"):
        draw(fed_run, 0)
    with pytest.raises(SampleError, match=r"written as \.npz"):
        write(draw(fed_run, 10), tmp_path / "x.csv")


def test_cli_writes_an_npz_and_refuses_a_group(fed_run: Path, tmp_path: Path) -> None:
    from fedgan.simulator.cli import app

    out = tmp_path / "s.npz"
    res = CliRunner().invoke(app, ["sample", str(fed_run), "--n", "30", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["x"].shape == (30, 2) and z["x"].dtype == np.float32
    res = CliRunner().invoke(app, ["sample", str(fed_run), "--group", "0", "--out", str(out)])
    assert res.exit_code == 2 and "not conditional" in res.output
    res = CliRunner().invoke(app, ["sample", str(fed_run), "--round", "9"])
    assert res.exit_code == 2 and "evaluated rounds" in res.output


def test_a_table_comes_back_in_its_columns_and_units(tmp_path: Path) -> None:
    csv = write_table(tmp_path / "t.csv")
    raw = table_raw(csv)
    raw["data"]["params"]["standardize"] = True
    res = run(raw, out_dir=tmp_path / "runs")
    r = int(res.metrics["round"].max())
    s = draw(res.path, len(_saved(res.path, r)), r)
    (path,) = write(s, tmp_path / "syn.csv")
    got = pd.read_csv(path)
    assert list(got.columns) == ["x1", "x2"]
    # Data units: the model's standardized points times the clients' training rows' std plus
    # their mean (the encoding is fitted on what the clients train on — from their moments,
    # which merge to the pooled ones). Those rows in raw units: the same split and partition
    # of the same file, unstandardized; numpy's population statistics of them.
    from fedgan.simulator.prepare import federated_data
    from fedgan.simulator.scenario import validate

    plain = table_raw(csv)
    plain["data"]["params"]["standardize"] = False
    fd = federated_data(validate(plain))
    rows = fd.train.X[np.concatenate(fd.client_train)].astype(np.float64)
    expect = _saved(res.path, r) * rows.std(axis=0) + rows.mean(axis=0)
    np.testing.assert_allclose(got.to_numpy(), expect, rtol=1e-4, atol=1e-4)


def test_images_come_back_as_uint8_with_a_grid(tmp_path: Path) -> None:
    from PIL import Image

    raw = tiny_raw(
        data={"dataset": "digits", "n_samples": 300, "params": {}},
        gan={
            "generator": {"widths": [16, 16], "output": "tanh"},
            "critic": {"widths": [16]},
            "batch_size": 16,
        },
        partition={"name": "iid", "params": {}, "n_clients": 2},
        federation={"rounds": 1, "local_steps": 2},
        evaluation={"every": 1, "n_samples": 100, "min_group_size": 5},
    )
    res = run(raw, out_dir=tmp_path / "runs")
    s = draw(res.path, 100, 1)
    (npz, png) = write(s, tmp_path / "digits.npz")
    with np.load(npz) as z:
        x = z["x"]
    assert x.shape == (100, 8, 8) and x.dtype == np.uint8
    # [-1, 1] → 0..255 by hand: round((v + 1) · 127.5).
    v = _saved(res.path, 1).reshape(100, 8, 8).astype(np.float64)
    np.testing.assert_array_equal(x, np.clip(np.rint((v + 1) * 127.5), 0, 255))
    grid = np.asarray(Image.open(png))
    assert grid.shape == (8 * 9, 8 * 9), "8 × 8 tiles of 8 × 8 pixels, a pixel between"
    np.testing.assert_array_equal(grid[:8, :8], x[0])
    np.testing.assert_array_equal(grid[9:17, 9:17], x[9])


MIXED = Path(__file__).resolve().parents[1] / "scenarios" / "tables" / "mixed.yaml"
TINY = [
    "data.n_samples=1500",
    "federation.rounds=2",
    "federation.local_steps=2",
    "gan.generator.widths=[16, 16]",
    "gan.critic.widths=[16, 16]",
    "gan.batch_size=32",
    "evaluation.every=1",
    "evaluation.n_samples=300",
    "evaluation.min_group_size=5",
]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled mixed-type scenario, 2 tiny rounds."""
    return run(str(MIXED), TINY, out_dir=tmp_path_factory.mktemp("mixed")).path


def test_the_bundled_mixed_scenario_validates_and_runs(mixed_run: Path) -> None:
    from fedgan.simulator.cli import app

    res = CliRunner().invoke(app, ["validate", str(MIXED)])
    assert res.exit_code == 0, res.output
    metrics = pd.read_csv(mixed_run / "metrics.csv")
    assert sorted(set(metrics["round"])) == [0, 1, 2]
    # Round 0: the federated encoding fit, the clients' statistics sent once before training.
    (enc,) = metrics.loc[metrics["metric"] == "fed.bytes_encoding", "value"]
    from fedgan.simulator.prepare import federated_data
    from fedgan.simulator.scenario import load

    assert enc == federated_data(load(mixed_run / "scenario.yaml")).train.info["encoding_bytes"]
    assert enc > 0 and set(metrics.loc[metrics["round"] == 0, "metric"]) == {"fed.bytes_encoding"}
    # 7 columns encoded: 5 regions + 2 sexes + 4 educations + 2 smoker + age, hours, income.
    assert _saved(mixed_run, 2).shape == (300, 5 + 2 + 4 + 2 + 3)


def test_fedgan_sample_writes_the_mixed_tables_columns(mixed_run: Path, tmp_path: Path) -> None:
    from fedgan.simulator.cli import app

    out = tmp_path / "syn.csv"
    res = CliRunner().invoke(app, ["sample", str(mixed_run), "--n", "200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(out)
    real = pd.read_csv(MIXED.parent / "mixed.csv")
    assert list(got.columns) == list(real.columns) and len(got) == 200
    for c in ("region", "sex", "education"):
        assert got[c].map(type).eq(str).all() and set(got[c]) <= set(real[c])
    assert got["smoker"].dtype == bool
    assert got["age"].dtype == np.int64 and got["age"].between(18, 90).all()
    assert got["hours"].between(0, 80).all() and (got["income"] >= 0).all()
    # The same points as the evaluation's, decoded: each row's region is its span's argmax.
    from fedgan.simulator.data.encoding import category_of

    s = draw(mixed_run, 300, 2)
    assert s.encoding is not None
    regions = category_of(s.encoding, _saved(mixed_run, 2), "region")
    assert s.table()["region"].tolist() == regions.tolist()
