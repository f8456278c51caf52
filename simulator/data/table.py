"""A user's CSV or Parquet table: feature columns → X (numbers and categories), label columns
→ groups.

Feature columns are encoded by `simulator.data.encoding`: numbers standardized (or raw, or
CTGAN's mode-specific normalization), categories one-hot × 1/√2. `info["encoding"]` describes
every span (JSON-ready), enough to decode generated rows back to the user's columns. A column
may be a feature *and* a group column (a sensitive attribute the generator produces and the
evaluation groups by).

The loader fits the encoding on every row it loads (pooled: it runs before any partition
exists). A federated run refits it from its clients' training rows (`refit`, Fed-TGAN's
merged per-client statistics) once the partition is known; `encoding: pooled` keeps a pooled
fit over the training rows, the oracle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import fedgan.simulator.data.encoding as enc
import numpy as np
import pandas as pd
from fedgan.simulator.data.base import DataError, Dataset, check_int, check_n_samples
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


def _continuous_mode(
    standardize: object, continuous: object, any_categorical: bool, where: str
) -> str:
    """How numbers are encoded: `continuous` if given; else `standardize` (true: standard,
    false: raw); else standard in a table with categories (the PRDC space of mixed tables:
    numbers in standard deviations beside 1/√2 one-hots), raw in an all-numeric one (the
    loader's behaviour before categories were generated)."""
    if standardize is not None and not isinstance(standardize, bool):
        raise DataError(f"{where}: standardize must be true or false, got {standardize!r}")
    if continuous is not None:
        if continuous not in enc.CONTINUOUS:
            raise DataError(
                f"{where}: continuous must be one of {', '.join(enc.CONTINUOUS)}, "
                f"got {continuous!r}",
                "continuous",
            )
        if standardize is not None:
            raise DataError(f"{where}: give continuous or standardize, not both", "standardize")
        return str(continuous)
    if standardize is not None:
        return "standard" if standardize else "none"
    return "standard" if any_categorical else "none"


def table(
    n_samples: int | None = None,
    seed: int = 0,
    *,
    path: str | os.PathLike[str],
    features: str | Sequence[str] | None = None,
    groups: str | Sequence[str] | None = None,
    standardize: bool | None = None,
    categorical: str | Sequence[str] | None = None,
    continuous: str | None = None,
    bounds: Mapping[str, Sequence[float | None]] | str | None = None,
    encoding: str = "federated",
    max_modes: int = enc.MAX_MODES,
) -> Dataset:
    """Load a CSV or Parquet file (by extension).

    Parameters
    ----------
    n_samples : int or None
        Seeded random subsample of the rows (kept in file order); None = every row.
    path : str
        The .csv or .parquet file.
    features : column name(s), optional
        The generated columns → X float32 [n, d_enc]; default every column that is not a
        group column. A group column listed here is generated too (a sensitive attribute).
    groups : column name(s)
        At least one label column; the first is the default group column.
    standardize : bool, optional
        Z-score numeric features (population std; a constant column is only centred).
        Default: yes in a table with categorical features, no in an all-numeric one.
    categorical : column name(s), optional
        Numeric features to treat as categories (integer codes); string, object, category and
        bool columns are categorical anyway.
    continuous : {"standard", "mode_specific", "none"}, optional
        How numbers are encoded, instead of `standardize`: `mode_specific` is CTGAN's
        variational-GMM normalizer (1 + K columns: a scalar in [−1, 1] and its mode's one-hot).
    bounds : {column: [lo, hi]} or "observed", optional
        Decoded numbers are clipped to these (None for an open side); "observed": every
        numeric feature within its fitted min/max. Integer columns decode to integers.
    encoding : {"federated", "pooled"}
        Where a federated run's encoding statistics come from (`refit`): merged per-client
        statistics (default), or the pooled training rows (the oracle).
    max_modes : int
        Most mixture components of a mode-specific column.
    """
    p = Path(path).expanduser()
    where = f"table {str(p)!r}"
    n_req = check_n_samples(n_samples, None)
    group_cols = _names(groups, "groups", where)
    if not group_cols:
        raise DataError(f"{where}: give at least one group column (groups=[...])")
    feat_cols = _names(features, "features", where)
    cat_cols = _names(categorical, "categorical", where) or []
    if encoding not in enc.FITS:
        raise DataError(
            f"{where}: encoding must be one of {', '.join(enc.FITS)}, got {encoding!r}", "encoding"
        )
    max_modes = check_int("max_modes", max_modes, minimum=1)
    if standardize is not None and not isinstance(standardize, bool):
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
    any_cat = any(
        c in cat_cols or not ptypes.is_numeric_dtype(df[c]) or ptypes.is_bool_dtype(df[c])
        for c in feat_cols
    )
    mode = _continuous_mode(standardize, continuous, any_cat, where)
    plans = enc.plan_columns(
        df, feat_cols, categorical=cat_cols, continuous=mode, bounds=bounds, where=where
    )
    grp = pd.DataFrame({c: _group_column(df[c], c, where) for c in group_cols})
    rows = df[feat_cols]
    if n_req is not None:
        if n_req > len(df):
            raise DataError(f"{where}: n_samples={n_req} but the table has {len(df)} rows")
        keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n_req, replace=False))
        rows, grp = rows.iloc[keep], grp.iloc[keep]
    # Statistics of the loaded rows (after subsampling), in float64 before the cast.
    fitted = enc.fit_pooled(rows, plans, seed, max_modes)
    info: dict[str, Any] = {
        "path": str(p),
        "features": feat_cols,
        "n_rows_in_file": len(df),
        "encoding": fitted,
        "encoding_fit": encoding,
        "encoding_seed": seed,
        "max_modes": max_modes,
    }
    if mode == "standard" and all(c["kind"] == "continuous" for c in fitted["columns"]):
        info["feature_mean"] = [c["mean"] for c in fitted["columns"]]
        info["feature_std"] = [c["std"] for c in fitted["columns"]]
    return Dataset(name="table", X=enc.encode(fitted, rows), groups=grp, info=info)


def refit(
    train: Dataset,
    held: Dataset,
    client_rows: Sequence[np.ndarray] | None,
    fit: str | None = None,
) -> tuple[Dataset, Dataset, int]:
    """A table's training and held-out sets re-encoded with an encoding fitted on the training
    rows only: federated (Fed-TGAN: `client_rows[c]`, client c's row positions in `train`,
    each client's statistics merged at the server) or pooled over `train` (the oracle).

    `fit` defaults to the dataset's `encoding` parameter; `client_rows` None means pooled.
    Returns (train, held, bytes the clients sent for the fit; 0 when pooled), the bytes also
    in both sets' `info["encoding_bytes"]`. A dataset
    without an encoding (not a table) comes back unchanged, 0 bytes.

    The rows are read back from X by `encoding.decode` (exact for categories and integers,
    float32 rounding for other numbers): the loader keeps no second copy of the table.
    """
    old = train.info.get("encoding")
    if not old:
        return train, held, 0
    fit = str(train.info.get("encoding_fit", "federated")) if fit is None else fit
    if fit not in enc.FITS:
        raise DataError(f"encoding must be one of {', '.join(enc.FITS)}, got {fit!r}")
    plans = enc.plans_of(old)
    seed = int(train.info.get("encoding_seed", 0))
    max_modes = int(train.info.get("max_modes", enc.MAX_MODES))
    rows = enc.decode(old, train.X)
    n_bytes = 0
    if fit == "pooled" or client_rows is None:
        new = enc.fit_pooled(rows, plans, seed, max_modes)
    else:
        new, n_bytes = enc.fit_federated(rows, client_rows, plans, seed, max_modes)
    held_rows = enc.decode(old, held.X)

    def put(ds: Dataset, df: pd.DataFrame) -> Dataset:
        # The bytes ride along, so whoever reports the run's traffic reads them here.
        info = {**ds.info, "encoding": new, "encoding_bytes": n_bytes}
        if "feature_mean" in info:
            info["feature_mean"] = [c["mean"] for c in new["columns"]]
            info["feature_std"] = [c["std"] for c in new["columns"]]
        return replace(ds, X=enc.encode(new, df), info=info)

    return put(train, rows), put(held, held_rows), n_bytes


DATASETS.add("table", table)
