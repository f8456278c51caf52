"""The dataset registry: names, parameter checking, error wrapping and plug-ins."""

from __future__ import annotations

import inspect
from pathlib import Path

import fedgan.simulator.data as data
import numpy as np
import pytest
from fedgan.simulator.data import DATASETS, DataError, Dataset, dataset_params, load_dataset
from fedgan.simulator.registry import RegistryError


def test_registered_names_and_exports() -> None:
    assert DATASETS.names() == [
        "digits",
        "grid",
        "images",
        "ring",
        "stacked",
        "stacked_digits",
        "table",
        "two_gaussians",
    ]
    for name in ("Dataset", "Modes", "DATASETS", "load_dataset", "DataError"):
        assert name in data.__all__ and hasattr(data, name)
    assert issubclass(DataError, ValueError)


def test_unknown_dataset_lists_allowed_names() -> None:
    with pytest.raises(RegistryError) as exc:
        load_dataset("rings", 100, 0)
    msg = str(exc.value)
    assert "'rings'" in msg
    for name in DATASETS.names():
        assert name in msg


def test_unknown_parameter_lists_allowed_parameters() -> None:
    with pytest.raises(DataError) as exc:
        load_dataset("ring", 100, 0, {"radious": 3.0})
    msg = str(exc.value)
    assert "'radious'" in msg and "dataset 'ring'" in msg
    assert "allowed: n_modes, radius, sigma, weights, minority_modes, minority_weight" in msg


def test_reserved_parameters_are_arguments_not_params() -> None:
    with pytest.raises(DataError, match="'seed'"):
        load_dataset("ring", 100, 0, {"seed": 3})
    with pytest.raises(DataError, match="seed"):
        load_dataset("ring", 100, -1)


def test_negative_sigma_names_sigma_and_dataset() -> None:
    with pytest.raises(DataError, match=r"dataset 'ring': sigma must be > 0, got -0\.5"):
        load_dataset("ring", 100, 0, {"sigma": -0.5})


def test_params_are_passed_through() -> None:
    ds = load_dataset("ring", 123, 4, {"n_modes": 3, "radius": 5.0})
    assert ds.n == 123 and ds.modes is not None and ds.modes.n_modes == 3
    np.testing.assert_allclose(np.linalg.norm(ds.modes.means, axis=1), 5.0)


def test_dataset_params_reports_defaults() -> None:
    p = dataset_params("grid")
    assert p["n_per_side"] == 5 and p["spacing"] == 2.0 and "seed" not in p
    assert dataset_params("table")["path"] is inspect.Parameter.empty


PLUGIN = """
import numpy as np
import pandas as pd
from fedgan.simulator.data import Dataset

def line(n_samples, seed, slope=1.0):
    n = n_samples or 10
    x = np.arange(n, dtype=np.float32)
    return Dataset("line", np.stack([x, slope * x], 1), pd.DataFrame({"g": np.arange(n) % 2}))

def broken(n_samples, seed):
    raise ValueError("bad thing")

def not_a_dataset(n_samples, seed):
    return 42
"""


def test_file_plugin(tmp_path: Path) -> None:
    f = tmp_path / "myds.py"
    f.write_text(PLUGIN)
    ds = load_dataset(f"{f}:line", 4, 0, {"slope": 2.0})
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.X[:, 1], [0, 2, 4, 6])
    with pytest.raises(DataError, match="unknown parameter.*'offset'.*allowed: slope"):
        load_dataset(f"{f}:line", 4, 0, {"offset": 1})
    with pytest.raises(DataError, match=r"myds\.py:broken'.*ValueError: bad thing"):
        load_dataset(f"{f}:broken", 4, 0)
    with pytest.raises(DataError, match="returned int, not Dataset"):
        load_dataset(f"{f}:not_a_dataset", 4, 0)
    with pytest.raises(RegistryError, match="no attribute 'missing'"):
        load_dataset(f"{f}:missing", 4, 0)
