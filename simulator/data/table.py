"""A user's CSV or Parquet table: numeric feature columns → X, label columns → groups."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from fedgan.simulator.data.base import DataError, Dataset, check_n_samples
from fedgan.simulator.data.registry import DATASETS
from pandas.api import types as ptypes

SUFFIXES = (".csv", ".parquet")


def _names(arg: str | Sequence[str] | None, what: str, where: str) -> list[str] | None:
    """A column list from one name or a list of names (None stays None)."""
    if arg is None:
        return None
    names = [arg] if isinstance(arg, str) else list(arg)
    if not all(isinstance(c, str) for c in names):
        raise DataError(f"{where}: {what} must be column names (strings), got {arg!r}")
    if len(set(names)) != len(names):
        raise DataError(f"{where}: {what} lists a column twice: {names}")
    return names


def _read(path: Path, where: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{where}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the table is empty") from None
    except Exception as exc:  # parser/arrow errors have many types; report the file
        raise DataError(f"{where}: cannot read: {type(exc).__name__}: {exc}") from exc


def _group_column(s: pd.Series, col: str, where: str) -> pd.Series:
    """Integer or categorical labels; DataError on missing values or fractional numbers."""
    missing = int(s.isna().sum())
    if missing:
        raise DataError(f"{where}: group column {col!r} has missing values in {missing} rows")
    if ptypes.is_bool_dtype(s):
        return s.astype(np.int64)
    if ptypes.is_integer_dtype(s):
        return s.astype(np.int64)
    if ptypes.is_float_dtype(s):
        v = s.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
            raise DataError(
                f"{where}: group column {col!r} holds non-integer numbers; group labels must be "
                "integers or categories (strings)"
            )
        # CSV readers give floats for integer columns in some files; labels are integers.
        return s.astype(np.int64)
    return s.astype("category")


def table(
    n_samples: int | None = None,
    seed: int = 0,
    *,
    path: str | os.PathLike[str],
    features: str | Sequence[str] | None = None,
    groups: str | Sequence[str] | None = None,
    standardize: bool = False,
) -> Dataset:
    """Load a CSV or Parquet file (by extension).

    Parameters
    ----------
    n_samples : int or None
        Seeded random subsample of the rows (kept in file order); None = every row.
    path : str
        The .csv or .parquet file.
    features : column name(s), optional
        Numeric feature columns → X float32 [n, len(features)]; default every column that is
        not a group column.
    groups : column name(s)
        At least one label column; the first is the default group column.
    standardize : bool
        Z-score each feature (population std; a constant column is only centred). The means
        and stds go to `info` so samples can be mapped back to data units.
    """
    p = Path(path).expanduser()
    where = f"table {str(p)!r}"
    n_req = check_n_samples(n_samples, None)
    group_cols = _names(groups, "groups", where)
    if not group_cols:
        raise DataError(f"{where}: give at least one group column (groups=[...])")
    feat_cols = _names(features, "features", where)
    if not isinstance(standardize, bool):
        raise DataError(f"{where}: standardize must be true or false, got {standardize!r}")
    df = _read(p, where)
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{where}: the table is empty ({len(df)} rows, {df.shape[1]} columns)")
    columns = [str(c) for c in df.columns]
    df.columns = pd.Index(columns)
    if feat_cols is None:
        feat_cols = [c for c in columns if c not in group_cols]
        if not feat_cols:
            raise DataError(f"{where}: no feature columns left besides the group columns")
    elif not feat_cols:
        raise DataError(f"{where}: features is empty; give at least one column")
    for what, cols in (("feature", feat_cols), ("group", group_cols)):
        absent = [c for c in cols if c not in columns]
        if absent:
            raise DataError(
                f"{where}: no {what} column(s) {', '.join(map(repr, absent))}; "
                f"available columns: {columns}"
            )
    for c in feat_cols:
        s = df[c]
        if not ptypes.is_numeric_dtype(s):
            raise DataError(
                f"{where}: feature column {c!r} is not numeric (dtype {s.dtype}); "
                "encode it or pass it as a group column"
            )
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        n_nan, n_inf = int(np.isnan(v).sum()), int(np.isinf(v).sum())
        if n_nan or n_inf:
            raise DataError(
                f"{where}: feature column {c!r} has {n_nan} rows with missing values and "
                f"{n_inf} rows with ±inf; clean or drop them first"
            )
    X = df[feat_cols].to_numpy(dtype=np.float64)
    too_big = np.abs(X) > np.finfo(np.float32).max
    if np.any(too_big):
        c = feat_cols[int(np.flatnonzero(too_big.any(axis=0))[0])]
        raise DataError(f"{where}: feature column {c!r} has values beyond float32's range")
    grp = pd.DataFrame({c: _group_column(df[c], c, where) for c in group_cols})
    if n_req is not None:
        if n_req > len(df):
            raise DataError(f"{where}: n_samples={n_req} but the table has {len(df)} rows")
        keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n_req, replace=False))
        X, grp = X[keep], grp.iloc[keep]
    info: dict[str, object] = {"path": str(p), "features": feat_cols, "n_rows_in_file": len(df)}
    if standardize:
        # Statistics of the loaded rows (after subsampling), in float64 before the cast.
        mu, sd = X.mean(axis=0), X.std(axis=0)
        sd_safe = np.where(sd > 0, sd, 1.0)
        X = (X - mu) / sd_safe
        info["feature_mean"], info["feature_std"] = mu.tolist(), sd_safe.tolist()
    return Dataset(name="table", X=X.astype(np.float32), groups=grp, info=info)


DATASETS.add("table", table)
