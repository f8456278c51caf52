"""Mixed-type table encoding: columns ↔ the float rows a GAN trains on, fitted pooled or federated.

A table's generated columns are encoded side by side into X float32 [n, d_enc]:

* **continuous** (``kind: "continuous"``, one column): (x − mean) / std — standardized by
  default in a table with categorical columns, raw (mean 0, std 1) in an all-numeric table
  that does not ask for `standardize` (the loader's old behaviour);
* **mode-specific** (``kind: "mode_specific"``, 1 + K columns, CTGAN's normalizer): a
  variational Gaussian mixture (sklearn's `BayesianGaussianMixture`) over the column; a value
  becomes α = (x − μ_k) / (4σ_k) clipped to [−0.99, 0.99] plus the one-hot of its most
  probable mode k (argmax of the posterior, not CTGAN's posterior sample: the encoding is a
  deterministic function of the data, so a run re-encodes the same X);
* **categorical** (``kind: "categorical"``, one column per category): the one-hot × 1/√2.

The 1/√2 puts X in the space PRDC uses for mixed tables (standardized numbers plus scaled
one-hots): two rows that differ in one category are at distance exactly 1, one standard
deviation of a number. With standardized continuous columns (the default), X *is* that space;
under mode-specific normalization, `prdc_space` maps X to it.

The encoding is described by a JSON-ready dict (`Dataset.info["encoding"]`), enough to decode
without the data (`decode`). Its fit is either **pooled** — statistics of the rows in one place,
the oracle a federation cannot have — or **federated** (Fed-TGAN, Zhao et al. 2021): each
client computes `client_stats` over its own rows (category counts, the moments (n, mean, M2),
min/max where bounds are observed, and its own mixture for a mode-specific column), the server
merges them (`merge`): the union of the vocabularies with global frequencies, Chan et al.'s
parallel mean/variance, and the clients' mixtures pooled into one by weight and then reduced
to at most `max_modes` by moment-matching merges of the closest pair. `stats_bytes` counts
what the clients send. With disjoint client rows the federated moments and vocabularies equal
the pooled ones (up to float rounding); only the mixture differs.

No torch here: the preflight loads tables without it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fedgan.simulator.data.base import DataError
from pandas.api import types as ptypes

ONEHOT_SCALE = 1.0 / math.sqrt(2.0)
"""A categorical one-hot's value in X: rows differing in one category are at distance 1."""
CONTINUOUS = ("standard", "mode_specific", "none")
"""How continuous columns may be encoded (`none`: raw values, mean 0 and std 1)."""
FITS = ("federated", "pooled")
"""Where the encoding's statistics come from; `pooled` is the oracle."""
MAX_MODES = 10
"""CTGAN's cap on a mode-specific column's mixture components."""
MODE_MIN_WEIGHT = 0.005
"""Components lighter than this are dropped (CTGAN's `weight_threshold`)."""
ALPHA_CLIP = 0.99
FLOAT_BYTES = 8
"""Every number a client sends counts as a float64 or int64."""


# ---- the column plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnPlan:
    """What to do with one generated column: `kind` ("continuous", "mode_specific" or
    "categorical"), `dtype` ("float", "int", "bool" or "str": what decode gives back),
    `standardize` (continuous only), `bounds` (lo, hi; None = open; "observed" = the fitted
    min/max)."""

    name: str
    kind: str
    dtype: str
    standardize: bool = True
    bounds: tuple[float | None, float | None] | str | None = None


def _dtype(s: pd.Series) -> str:
    """What decode gives back: the column's own dtype (whole numbers a file wrote as floats
    stay floats)."""
    if ptypes.is_bool_dtype(s):
        return "bool"
    if ptypes.is_integer_dtype(s):
        return "int"
    if ptypes.is_float_dtype(s):
        return "float"
    return "str"


def plan_columns(
    df: pd.DataFrame,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] = (),
    continuous: str = "standard",
    bounds: Mapping[str, Sequence[float | None]] | str | None = None,
    where: str = "table",
) -> list[ColumnPlan]:
    """The plan for `columns` of `df`: object, string, category and bool columns (and those in
    `categorical`, e.g. integer codes) are categorical; the other numeric ones continuous.

    `bounds`: {column: [lo, hi]} (either may be None) or "observed" (every numeric column kept
    within its fitted min/max). Integer columns decode to integers."""
    if continuous not in CONTINUOUS:
        raise DataError(f"{where}: continuous must be one of {CONTINUOUS}, got {continuous!r}")
    absent = [c for c in categorical if c not in columns]
    if absent:
        raise DataError(
            f"{where}: categorical names column(s) {absent} that are not generated features; "
            f"features: {list(columns)}"
        )
    if isinstance(bounds, str) and bounds != "observed":
        raise DataError(f"{where}: bounds must be a mapping or 'observed', got {bounds!r}")
    per_col: dict[str, tuple[float | None, float | None]] = {}
    if isinstance(bounds, Mapping):
        for c, pair in bounds.items():
            if c not in columns:
                raise DataError(f"{where}: bounds names {c!r}, not a generated feature column")
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise DataError(f"{where}: bounds of {c!r} must be [lo, hi], got {pair!r}")
            lo, hi = (None if v is None else float(v) for v in pair)
            if lo is not None and hi is not None and lo > hi:
                raise DataError(f"{where}: bounds of {c!r} have lo > hi: {list(pair)}")
            per_col[str(c)] = (lo, hi)
    elif bounds is not None and not isinstance(bounds, str):
        raise DataError(f"{where}: bounds must be a mapping or 'observed', got {bounds!r}")
    plans = []
    for c in columns:
        s = df[c]
        missing = int(s.isna().sum())
        is_cat = c in categorical or not ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s)
        if is_cat:
            if missing:
                raise DataError(
                    f"{where}: feature column {c!r} has {missing} rows with missing values; "
                    "clean or drop them first"
                )
            if c in per_col:
                raise DataError(f"{where}: bounds given for categorical column {c!r}")
            plans.append(ColumnPlan(c, "categorical", _dtype(s)))
            continue
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        n_inf = int(np.isinf(v).sum())
        if missing or n_inf:
            raise DataError(
                f"{where}: feature column {c!r} has {missing} rows with missing values and "
                f"{n_inf} rows with ±inf; clean or drop them first"
            )
        if np.any(np.abs(v) > np.finfo(np.float32).max):
            raise DataError(f"{where}: feature column {c!r} has values beyond float32's range")
        kind = "mode_specific" if continuous == "mode_specific" else "continuous"
        b: tuple[float | None, float | None] | str | None = per_col.get(c)
        if b is None and bounds == "observed":
            b = "observed"
        plans.append(ColumnPlan(c, kind, _dtype(s), continuous != "none", b))
    return plans


# ---- per-client statistics and their merge ---------------------------------------------------


def _key(v: Any) -> Any:
    """A category as a JSON-ready Python value (numpy scalars → int/float/bool)."""
    if isinstance(v, np.generic):
        return v.item()
    return v


def _sort_key(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)


@dataclass
class ColumnStats:
    """One client's statistics of one column: `counts` (categorical: category → rows);
    `n`, `mean`, `m2` (continuous: rows, mean, Σ(x − mean)²), `lo`/`hi` (observed bounds);
    `modes` (mode-specific: the client's own mixture, [(weight·n, mean, std), ...])."""

    counts: dict[Any, int] = field(default_factory=dict)
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    modes: list[tuple[float, float, float]] = field(default_factory=list)


def _fit_vgm(v: np.ndarray, max_modes: int, seed: int) -> list[tuple[float, float, float]]:
    """CTGAN's normalizer on values v [n]: [(weight, mean, std)] of the kept components."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    n = len(v)
    sd_all = float(v.std()) if n > 1 else 0.0
    if n < 2 or sd_all == 0.0:
        return [(1.0, float(v.mean()) if n else 0.0, max(sd_all, 1e-6))]
    k = min(max_modes, n)
    gm = BayesianGaussianMixture(
        n_components=k,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.001,
        max_iter=100,
        n_init=1,
        random_state=seed % 2**32,  # run seeds are 64-bit; sklearn takes 32
    )
    with warnings.catch_warnings():
        # A DP-prior VGM often stops at max_iter with spare components (CTGAN's settings too);
        # the unused ones are dropped below, so the warning says nothing to the user.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(v.reshape(-1, 1))
    w = gm.weights_
    keep = w > MODE_MIN_WEIGHT
    w = w[keep] / w[keep].sum()
    mu = gm.means_.reshape(-1)[keep]
    sd = np.sqrt(gm.covariances_.reshape(-1)[keep])
    sd = np.maximum(sd, 1e-6 * max(sd_all, 1.0))
    order = np.argsort(mu)
    return [(float(w[i]), float(mu[i]), float(sd[i])) for i in order]


def client_stats(
    df: pd.DataFrame, plans: Sequence[ColumnPlan], seed: int = 0, max_modes: int = MAX_MODES
) -> dict[str, ColumnStats]:
    """What one client computes over its own rows `df` (and sends: `stats_bytes`)."""
    out: dict[str, ColumnStats] = {}
    for p in plans:
        s = df[p.name]
        st = ColumnStats()
        if p.kind == "categorical":
            vc = s.value_counts(sort=False)
            st.counts = {_key(k): int(c) for k, c in vc.items() if int(c) > 0}
        else:
            v = s.to_numpy(dtype=np.float64)
            st.n = len(v)
            if st.n:
                st.mean = float(v.mean())
                st.m2 = float(((v - st.mean) ** 2).sum())
                st.lo, st.hi = float(v.min()), float(v.max())
                if p.kind == "mode_specific":
                    st.modes = [(w * st.n, m, sd) for w, m, sd in _fit_vgm(v, max_modes, seed)]
        out[p.name] = st
    return out


def stats_bytes(stats: Sequence[Mapping[str, ColumnStats]], plans: Sequence[ColumnPlan]) -> int:
    """Bytes the clients send for a federated fit, all clients together.

    Per client and column: categorical — each category it holds, as its UTF-8 text (`str` of
    the value) plus an 8-byte count; continuous — n, mean, M2 (24 bytes), plus min and max
    (16) where the bounds are observed; mode-specific — the moments (24) plus 24 bytes per
    mixture component (weight, mean, std)."""
    total = 0
    for st in stats:
        for p in plans:
            c = st[p.name]
            if p.kind == "categorical":
                total += sum(len(str(k).encode()) + FLOAT_BYTES for k in c.counts)
                continue
            total += 3 * FLOAT_BYTES
            if p.bounds == "observed":
                total += 2 * FLOAT_BYTES
            if p.kind == "mode_specific":
                total += 3 * FLOAT_BYTES * len(c.modes)
    return total


def _merge_modes(
    comps: list[tuple[float, float, float]], max_modes: int
) -> list[tuple[float, float, float]]:
    """Clients' components [(rows, mean, std)] → one mixture [(weight, mean, std)] of at most
    `max_modes`: pool by rows, then merge the closest pair (|Δμ| / (σ_i + σ_j)) by moment
    matching until few enough, and drop components under `MODE_MIN_WEIGHT`."""
    total = sum(c[0] for c in comps)
    cs = sorted(((w / total, m, s) for w, m, s in comps if w > 0), key=lambda c: c[1])
    while len(cs) > max_modes:
        gaps = [abs(b[1] - a[1]) / (a[2] + b[2]) for a, b in zip(cs, cs[1:], strict=False)]
        i = int(np.argmin(gaps))
        (wa, ma, sa), (wb, mb, sb) = cs[i], cs[i + 1]
        w = wa + wb
        m = (wa * ma + wb * mb) / w
        var = (wa * (sa**2 + ma**2) + wb * (sb**2 + mb**2)) / w - m**2
        cs[i : i + 2] = [(w, m, math.sqrt(max(var, 1e-12)))]
    kept = [c for c in cs if c[0] > MODE_MIN_WEIGHT] or cs
    z = sum(c[0] for c in kept)
    return [(w / z, m, s) for w, m, s in kept]


def merge(
    stats: Sequence[Mapping[str, ColumnStats]],
    plans: Sequence[ColumnPlan],
    fit: str,
    max_modes: int = MAX_MODES,
) -> dict[str, Any]:
    """The server's side: clients' statistics → the encoding description (`Dataset.info`)."""
    cols: list[dict[str, Any]] = []
    start = 0
    for p in plans:
        parts = [st[p.name] for st in stats]
        d: dict[str, Any] = {"name": p.name, "kind": p.kind, "dtype": p.dtype, "start": start}
        if p.kind == "categorical":
            counts: dict[Any, int] = {}
            for c in parts:
                for k, v in c.counts.items():
                    counts[k] = counts.get(k, 0) + v
            cats = sorted(counts, key=_sort_key)
            n = sum(counts.values())
            d["categories"] = cats
            d["frequencies"] = [counts[k] / n for k in cats]
            d["end"] = start + len(cats)
        else:
            # Chan et al.'s pairwise update: stable where Σx² − n·mean² would cancel.
            n, mean, m2 = 0, 0.0, 0.0
            for c in parts:
                if c.n == 0:
                    continue
                tot = n + c.n
                delta = c.mean - mean
                mean += delta * c.n / tot
                m2 += c.m2 + delta**2 * n * c.n / tot
                n = tot
            if n == 0:
                raise DataError(f"encoding: column {p.name!r} has no rows at any client")
            sd = math.sqrt(m2 / n)
            d["mean"], d["std"] = (mean, sd if sd > 0 else 1.0) if p.standardize else (0.0, 1.0)
            d["data_mean"], d["data_std"] = mean, sd if sd > 0 else 1.0
            # The plan, so the encoding can be refitted on other rows (`plans_of`).
            d["standardize"] = p.standardize
            d["bounds_plan"] = list(p.bounds) if isinstance(p.bounds, tuple) else p.bounds
            lo_hi: tuple[float | None, float | None] | None = None
            if p.bounds == "observed":
                lo_hi = (min(c.lo for c in parts), max(c.hi for c in parts))
            elif isinstance(p.bounds, tuple):
                lo_hi = p.bounds
            d["bounds"] = None if lo_hi is None else list(lo_hi)
            if p.kind == "mode_specific":
                modes = _merge_modes([m for c in parts for m in c.modes], max_modes)
                d["weights"] = [m[0] for m in modes]
                d["means"] = [m[1] for m in modes]
                d["stds"] = [m[2] for m in modes]
                d["end"] = start + 1 + len(modes)
            else:
                d["end"] = start + 1
        start = d["end"]
        cols.append(d)
    return {"fit": fit, "onehot_scale": ONEHOT_SCALE, "dim": start, "columns": cols}


def fit_pooled(
    df: pd.DataFrame, plans: Sequence[ColumnPlan], seed: int = 0, max_modes: int = MAX_MODES
) -> dict[str, Any]:
    """The oracle: the encoding fitted on all of `df` in one place."""
    return merge([client_stats(df, plans, seed, max_modes)], plans, "pooled", max_modes)


def fit_federated(
    df: pd.DataFrame,
    client_rows: Sequence[np.ndarray],
    plans: Sequence[ColumnPlan],
    seed: int = 0,
    max_modes: int = MAX_MODES,
) -> tuple[dict[str, Any], int]:
    """Fed-TGAN's fit: client c's statistics over rows `client_rows[c]` (int positions into
    `df`), merged at the server. Returns (encoding, bytes the clients sent)."""
    stats = [
        client_stats(df.iloc[np.asarray(r, dtype=np.int64)], plans, seed + i, max_modes)
        for i, r in enumerate(client_rows)
    ]
    return merge(stats, plans, "federated", max_modes), stats_bytes(stats, plans)


def plans_of(encoding: Mapping[str, Any]) -> list[ColumnPlan]:
    """The column plans an encoding was fitted with (to refit it on other rows)."""
    out = []
    for c in encoding["columns"]:
        if c["kind"] == "categorical":
            out.append(ColumnPlan(c["name"], "categorical", c["dtype"]))
            continue
        b = c["bounds_plan"]
        bounds = (b[0], b[1]) if isinstance(b, list) else b
        out.append(ColumnPlan(c["name"], c["kind"], c["dtype"], c["standardize"], bounds))
    return out


# ---- encode / decode -------------------------------------------------------------------------


def encode(encoding: Mapping[str, Any], df: pd.DataFrame) -> np.ndarray:
    """Rows of `df` (its generated columns, in any order) → X float32 [n, dim].

    A category the encoding does not know (held out only, under a federated vocabulary) is
    encoded as an all-zero span: no known category, at distance 1/√2 from each."""
    n = len(df)
    X = np.zeros((n, int(encoding["dim"])), dtype=np.float64)
    scale = float(encoding["onehot_scale"])
    for c in encoding["columns"]:
        a = int(c["start"])
        s = df[c["name"]]
        if c["kind"] == "categorical":
            lookup = {k: i for i, k in enumerate(c["categories"])}
            idx = np.array([lookup.get(_key(v), -1) for v in s.to_numpy()], dtype=np.int64)
            ok = idx >= 0
            X[np.flatnonzero(ok), a + idx[ok]] = scale
            continue
        v = s.to_numpy(dtype=np.float64)
        if c["kind"] == "continuous":
            X[:, a] = (v - c["mean"]) / c["std"]
            continue
        mu, sd, w = (np.asarray(c[k], dtype=np.float64) for k in ("means", "stds", "weights"))
        # Most probable mode under the mixture (log-posterior up to a constant).
        logp = np.log(w)[None, :] - np.log(sd)[None, :] - 0.5 * ((v[:, None] - mu) / sd) ** 2
        k = np.argmax(logp, axis=1)
        X[:, a] = np.clip((v - mu[k]) / (4.0 * sd[k]), -ALPHA_CLIP, ALPHA_CLIP)
        X[np.arange(n), a + 1 + k] = 1.0
    return X.astype(np.float32)


def category_of(encoding: Mapping[str, Any], X: np.ndarray, column: str) -> np.ndarray:
    """The category of each row of X [n, dim] (real or generated) in categorical `column`:
    the argmax of its span, as an object array [n] of the category values."""
    c = _column(encoding, column)
    if c["kind"] != "categorical":
        raise DataError(f"encoding: column {column!r} is {c['kind']}, not categorical")
    span = np.asarray(X)[:, int(c["start"]) : int(c["end"])]
    cats = np.empty(len(c["categories"]), dtype=object)
    cats[:] = c["categories"]
    return cats[np.argmax(span, axis=1)]


def categorical_columns(encoding: Mapping[str, Any]) -> list[str]:
    """The names of the generated categorical columns (one-hot spans), in column order."""
    return [str(c["name"]) for c in encoding["columns"] if c["kind"] == "categorical"]


def generated_groups(
    encoding: Mapping[str, Any], X: np.ndarray, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows of X [n, dim] grouped by their *generated* value: a DataFrame [n] with one column
    per categorical column (default: every one), each row's argmax category, labelled as the
    table's group columns label it (a bool column as 0/1, `table._group_column`). Feed it to
    `grouping.group_labels(frame, grouping)` for a grouping whose columns are all generated
    (e.g. a sensitive attribute that is also a group column, or an intersection of two)."""
    cols = categorical_columns(encoding) if columns is None else list(columns)
    out: dict[str, Any] = {}
    for name in cols:
        v = category_of(encoding, X, name)
        if _column(encoding, name)["dtype"] == "bool":
            v = v.astype(np.int64)
        out[name] = v
    return pd.DataFrame(out)


def _column(encoding: Mapping[str, Any], column: str) -> Mapping[str, Any]:
    for c in encoding["columns"]:
        if c["name"] == column:
            return c
    names = [c["name"] for c in encoding["columns"]]
    raise DataError(f"encoding: no generated column {column!r}; generated: {names}")


def harden(encoding: Mapping[str, Any], X: np.ndarray) -> np.ndarray:
    """X [n, dim] with every one-hot span (categories, modes) replaced by the one-hot of its
    argmax (× its scale): generated rows on the data's own lattice, as `decode` reads them."""
    out = np.array(X, dtype=np.float32, copy=True)
    scale = float(encoding["onehot_scale"])
    for c in encoding["columns"]:
        if c["kind"] == "continuous":
            continue
        a, b = int(c["start"]), int(c["end"])
        if c["kind"] == "mode_specific":
            a, s = a + 1, 1.0
        else:
            s = scale
        k = np.argmax(out[:, a:b], axis=1)
        out[:, a:b] = 0.0
        out[np.arange(len(out)), a + k] = s
    return out


def decode(encoding: Mapping[str, Any], X: np.ndarray) -> pd.DataFrame:
    """X [n, dim] (real or generated) → the user's columns: categories as their values
    (strings, integers, bools), numbers in data units, integer columns rounded to integers,
    bounded columns clipped to their bounds."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != int(encoding["dim"]):
        raise DataError(f"encoding: rows must have shape [n, {encoding['dim']}], got {X.shape}")
    cols: dict[str, Any] = {}
    for c in encoding["columns"]:
        a, b = int(c["start"]), int(c["end"])
        if c["kind"] == "categorical":
            vals = category_of(encoding, X, c["name"])
            dt = {"bool": bool, "int": np.int64, "float": np.float64}.get(c["dtype"])
            cols[c["name"]] = vals.astype(dt) if dt is not None else vals.astype(str)
            continue
        if c["kind"] == "continuous":
            v = X[:, a] * c["std"] + c["mean"]
        else:
            mu, sd = np.asarray(c["means"]), np.asarray(c["stds"])
            k = np.argmax(X[:, a + 1 : b], axis=1)
            v = np.clip(X[:, a], -1.0, 1.0) * 4.0 * sd[k] + mu[k]
        if c.get("bounds") is not None:
            lo, hi = c["bounds"]
            v = np.clip(v, -np.inf if lo is None else lo, np.inf if hi is None else hi)
        if c["dtype"] == "int":
            v = np.rint(v).astype(np.int64)
        cols[c["name"]] = v
    return pd.DataFrame(cols)


GROUP_SEPARATION = 100.0
"""Distance between two rows that differ in a generated *group* column, in the PRDC space of a
table (`prdc_space`'s `separate`): far beyond any k-NN radius within a group (numbers are in
standard deviations, a differing category elsewhere costs 1), so a row of one group never lies
in another group's ball — small enough for float32 distances to stay exact to ~1e-3."""


def prdc_space(
    encoding: Mapping[str, Any], X: np.ndarray, separate: Collection[str] = ()
) -> np.ndarray:
    """X [n, dim] → the space PRDC runs in on mixed tables, float32 [n, n_cont + n_cat]:
    each continuous column standardized by its data mean and std, each categorical one-hot ×
    1/√2 (hardened to the argmax): two rows differing in one category are at distance 1. The
    categorical columns in `separate` (generated group columns) are one-hot ×
    GROUP_SEPARATION/√2 instead: rows differing there are `GROUP_SEPARATION` apart, so every
    k-NN ball stays inside one group and a generated row counts for the group it *says* it is
    in as well as where it lies — mass, coverage and the declared share then cannot
    disagree about who is forgotten. With standard encoding and nothing separated this is X
    itself, hardened; under mode-specific normalization the numbers are decoded and
    standardized."""
    df = decode(encoding, X)
    hard = harden(encoding, X)
    scale = float(encoding["onehot_scale"])
    parts = []
    for c in encoding["columns"]:
        if c["kind"] == "categorical":
            span = hard[:, int(c["start"]) : int(c["end"])]
            if c["name"] in separate:
                span = span * np.float32(GROUP_SEPARATION / math.sqrt(2.0) / scale)
            parts.append(span)
        else:
            v = df[c["name"]].to_numpy(dtype=np.float64)
            parts.append(((v - c["data_mean"]) / c["data_std"])[:, None].astype(np.float32))
    return np.concatenate(parts, axis=1).astype(np.float32)


def output_spans(info: Mapping[str, Any]) -> tuple[tuple[int, int, str, float], ...]:
    """The generator's output heads for a dataset (`gan.heads.Span` tuples, hashable): a
    softmax × 1/√2 over each categorical span; under mode-specific normalization tanh on the
    scalar and a softmax over the mode one-hot. Empty when there is no encoding (not a table)
    or nothing to shape (all columns standardized numbers)."""
    enc = info.get("encoding")
    if not enc:
        return ()
    spans: list[tuple[int, int, str, float]] = []
    for c in enc["columns"]:
        a, b = int(c["start"]), int(c["end"])
        if c["kind"] == "categorical":
            spans.append((a, b, "softmax", float(enc["onehot_scale"])))
        elif c["kind"] == "mode_specific":
            spans.append((a, a + 1, "tanh", 1.0))
            spans.append((a + 1, b, "softmax", 1.0))
    return tuple(spans)
