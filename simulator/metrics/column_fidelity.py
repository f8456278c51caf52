"""Group metric `fidelity`: per column, how close the generated marginal is to the real one —
over the whole table and within each group (tables only: rows only when the evaluation has the
decoded rows, `GroupingContext.decoded`).

The scores are SDMetrics' single-column ones, so they read as a synthetic-data user expects:
numeric columns (continuous, integer) `KSComplement` = 1 − the two-sample Kolmogorov–Smirnov
statistic (scipy's `ks_2samp`, as SDMetrics computes it); discrete columns (categories, bools)
`TVComplement` = 1 − ½ Σ_c |p_real(c) − p_gen(c)|. 1 = the marginals agree, 0 = disjoint.
(sdmetrics itself is not a dependency: it pins pandas < 3 and this project runs pandas 3; a
test holds these to SDMetrics' definitions on hand-computed cases.)

A group's generated rows are those that *declare* it by their generated value when the
generator writes the grouping's columns, else those whose nearest held-out row is in it (as
`group_frechet`): a marginal distance must see rows that miss the group's support. Like every
metric besides `mass`, it is a description, not a verdict on who is forgotten.

Rows per column c and group: `fidelity.<c>` (n = the group's generated rows; NaN when it has
none); per group `fidelity` = the mean over columns. Group "" = the whole table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from fedgan.simulator.metrics.context import GroupingContext, Row, group_row
from numpy.typing import NDArray
from scipy.stats import ks_2samp


def ks_complement(real: pd.Series, fake: pd.Series) -> float:
    """SDMetrics' KSComplement of two numeric columns: 1 − sup_x |F_real(x) − F_gen(x)|;
    NaN when either is empty."""
    r = pd.to_numeric(real.dropna()).to_numpy(dtype=np.float64)
    f = pd.to_numeric(fake.dropna()).to_numpy(dtype=np.float64)
    if len(r) == 0 or len(f) == 0:
        return float("nan")
    return float(1.0 - ks_2samp(r, f).statistic)


def tv_complement(real: pd.Series, fake: pd.Series) -> float:
    """SDMetrics' TVComplement of two discrete columns: 1 − ½ Σ_c |p_real(c) − p_gen(c)| over
    the union of their categories; NaN when either is empty."""
    r, f = real.dropna(), fake.dropna()
    if len(r) == 0 or len(f) == 0:
        return float("nan")
    p = r.astype(str).value_counts(normalize=True)
    q = f.astype(str).value_counts(normalize=True)
    p, q = p.align(q, fill_value=0.0)
    return float(1.0 - 0.5 * np.abs(p.to_numpy() - q.to_numpy()).sum())


def _scores(real: pd.DataFrame, fake: pd.DataFrame, discrete: frozenset[str]) -> dict[str, float]:
    return {
        c: (tv_complement if c in discrete else ks_complement)(real[c], fake[c])
        for c in real.columns
    }


def fidelity_rows(ctx: GroupingContext) -> list[Row]:
    """`fidelity.<column>` and `fidelity` for the whole table and for every group of `ctx`."""
    d = ctx.decoded
    if d is None:
        return []
    declared = ctx.declared_codes
    owner = declared if declared is not None else ctx.codes[ctx.result.nearest_real_index]
    rows: list[Row] = []
    parts: list[tuple[object, NDArray[np.bool_], NDArray[np.bool_]]] = [
        ("", np.ones(len(d.real), dtype=bool), np.ones(len(d.fake), dtype=bool))
    ]
    parts += [(g, ctx.codes == i, owner == i) for i, g in enumerate(ctx.groups)]
    for g, in_real, in_fake in parts:
        n = int(in_fake.sum())
        scores = _scores(d.real[in_real], d.fake[in_fake], d.discrete)
        for c, v in scores.items():
            rows.append(group_row(f"fidelity.{c}", v, n, g))
        vals = [v for v in scores.values() if not np.isnan(v)]
        rows.append(group_row("fidelity", float(np.mean(vals)) if vals else float("nan"), n, g))
    return rows
