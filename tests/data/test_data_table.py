"""The CSV/Parquet table loader: round trips, subsampling, standardizing, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.data import DataError, load_dataset
from fedgan.simulator.data.table import table


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [0.5, 1.5, -2.0, 3.25, 4.0, 5.5],
            "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "z": [10, 20, 30, 40, 50, 60],
            "sex": ["f", "m", "f", "m", "f", "x"],
            "site": [1, 1, 2, 2, 3, 3],
        }
    )


def _write(df: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    df = _frame()
    path = _write(df, tmp_path / f"t{suffix}")
    ds = load_dataset(
        "table", None, 0, {"path": path, "features": ["x", "z"], "groups": ["sex", "site"]}
    )
    assert ds.X.dtype == np.float32 and ds.X.shape == (6, 2)
    np.testing.assert_array_equal(ds.X, df[["x", "z"]].to_numpy(np.float32))
    assert list(ds.groups.columns) == ["sex", "site"] and ds.group_column == "sex"
    assert isinstance(ds.groups["sex"].dtype, pd.CategoricalDtype)
    assert ds.groups["sex"].tolist() == ["f", "m", "f", "m", "f", "x"]
    assert ds.groups["site"].dtype == np.int64 and ds.groups["site"].tolist() == [1, 1, 2, 2, 3, 3]
    assert ds.info["features"] == ["x", "z"]


def test_default_features_are_the_other_columns(tmp_path: Path) -> None:
    df = _frame().drop(columns=["sex"])
    ds = table(path=_write(df, tmp_path / "t.csv"), groups="site")
    assert ds.info["features"] == ["x", "y", "z"]
    np.testing.assert_array_equal(ds.X, df[["x", "y", "z"]].to_numpy(np.float32))


def test_float_group_column_with_integers_becomes_int(tmp_path: Path) -> None:
    df = _frame().assign(site=[1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    ds = table(path=_write(df, tmp_path / "t.parquet"), features=["x"], groups=["site"])
    assert ds.groups["site"].dtype == np.int64


def test_subsample_is_seeded_and_keeps_row_alignment(tmp_path: Path) -> None:
    n = 200
    df = pd.DataFrame({"a": np.arange(n, dtype=float), "g": np.arange(n) % 7})
    path = _write(df, tmp_path / "big.csv")
    a = table(n_samples=50, seed=1, path=path, features=["a"], groups=["g"])
    b = table(n_samples=50, seed=1, path=path, features=["a"], groups=["g"])
    c = table(n_samples=50, seed=2, path=path, features=["a"], groups=["g"])
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    rows = a.X[:, 0].astype(int)
    assert len(set(rows.tolist())) == 50 and np.all(np.diff(rows) > 0)  # distinct, file order
    np.testing.assert_array_equal(a.labels(), rows % 7)
    with pytest.raises(DataError, match="table has 200 rows"):
        table(n_samples=201, path=path, features=["a"], groups=["g"])


def test_standardize(tmp_path: Path) -> None:
    df = _frame().assign(const=7.0)
    ds = table(
        path=_write(df, tmp_path / "t.csv"),
        features=["x", "const"],
        groups=["sex"],
        standardize=True,
    )
    np.testing.assert_allclose(ds.X[:, 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(ds.X[:, 0].std(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ds.X[:, 1], 0.0)  # a constant column is only centred
    assert ds.info["feature_mean"] == pytest.approx([df["x"].mean(), 7.0])
    assert ds.info["feature_std"][0] == pytest.approx(df["x"].std(ddof=0))


# -- bad inputs: each message names the file and the column --------------------------------


def _expect(match: str, **kwargs: object) -> str:
    with pytest.raises(DataError) as exc:
        table(**kwargs)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert match in msg, msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    msg = _expect("not found", path=str(tmp_path / "nope.csv"), groups=["g"])
    assert "nope.csv" in msg


def test_bad_extension(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a,b\n1,2\n")
    msg = _expect(".txt", path=str(path), groups=["b"])
    assert ".csv" in msg and ".parquet" in msg and "t.txt" in msg


def test_missing_feature_column_lists_available(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "t.csv")
    msg = _expect("'w'", path=path, features=["x", "w"], groups=["sex"])
    assert "t.csv" in msg and "available columns" in msg and "'site'" in msg


def test_missing_group_column_lists_available(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "t.parquet")
    msg = _expect("'race'", path=path, features=["x"], groups=["race"])
    assert "group column" in msg and "'sex'" in msg and "t.parquet" in msg


@pytest.mark.parametrize("groups", [None, []])
def test_no_group_column(tmp_path: Path, groups: list[str] | None) -> None:
    path = _write(_frame(), tmp_path / "t.csv")
    msg = _expect("at least one group column", path=path, features=["x"], groups=groups)
    assert "t.csv" in msg


def test_non_numeric_feature_is_generated_as_a_category(tmp_path: Path) -> None:
    # A string column was refused before mixed-type tables; now it is one-hot × 1/√2.
    path = _write(_frame(), tmp_path / "t.csv")
    ds = table(path=path, features=["x", "sex"], groups=["site"])
    assert ds.X.shape == (6, 1 + 3)
    h = 1 / np.sqrt(2)
    np.testing.assert_allclose(ds.X[:, 1:], [[h, 0, 0], [0, h, 0]] * 2 + [[h, 0, 0], [0, 0, h]])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_values_in_feature(tmp_path: Path, suffix: str) -> None:
    df = _frame().assign(y=[1.0, np.nan, 3.0, np.nan, 5.0, 6.0])
    path = _write(df, tmp_path / f"t{suffix}")
    _expect("'y' has 2 rows with missing values", path=path, features=["x", "y"], groups=["sex"])


def test_inf_in_feature(tmp_path: Path) -> None:
    df = _frame().assign(x=[0.0, np.inf, -np.inf, 1.0, 2.0, 3.0])
    path = _write(df, tmp_path / "t.parquet")
    _expect(
        "'x' has 0 rows with missing values and 2 rows with ±inf",
        path=path,
        features=["x"],
        groups=["sex"],
    )


def test_missing_values_in_group(tmp_path: Path) -> None:
    df = _frame().assign(sex=["f", None, "f", "m", "f", "x"])
    path = _write(df, tmp_path / "t.csv")
    _expect(
        "group column 'sex' has missing values in 1 rows", path=path, features=["x"], groups=["sex"]
    )


def test_fractional_group_labels(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "t.csv")
    _expect("group column 'x' holds non-integer", path=path, features=["y"], groups=["x"])


@pytest.mark.parametrize("content", ["", "x,y,g\n"])
def test_empty_table(tmp_path: Path, content: str) -> None:
    path = tmp_path / "e.csv"
    path.write_text(content)
    msg = _expect("empty", path=str(path), features=["x"], groups=["g"])
    assert "e.csv" in msg


def test_empty_parquet(tmp_path: Path) -> None:
    path = _write(_frame().iloc[:0], tmp_path / "e.parquet")
    _expect("empty", path=path, features=["x"], groups=["sex"])


def test_path_is_required_via_registry() -> None:
    with pytest.raises(DataError, match="missing required parameter.*'path'"):
        load_dataset("table", None, 0, {"groups": ["g"]})


def test_registry_error_names_dataset_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset 'table'.*gone\.csv.*not found"):
        load_dataset("table", None, 0, {"path": str(tmp_path / "gone.csv"), "groups": ["g"]})
