"""Per-group precision, recall, density and coverage, with fairlearn's ``MetricFrame``.

Recall and coverage are properties of *real* points (is this real point reached by the
generator?), so they are split by the real points' groups. Precision and density are properties
of *fake* points, split by the fakes' groups: given, or by default the group of each fake's
nearest real point (``PRDC.nearest_real_index``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from fedgan.simulator.grouping import (
    SEPARATOR,
    Grouping,
    group_labels,
    group_sort_key,
    grouping_columns,
    grouping_name,
)
from fedgan.simulator.metrics.prdc import PRDC
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SEPARATOR",
    "GroupReport",
    "Grouping",
    "group_labels",
    "group_prdc",
    "group_sort_key",
    "grouping_columns",
    "grouping_name",
]

REAL_METRICS = ("recall", "coverage")
FAKE_METRICS = ("precision", "density")
METRICS = ("precision", "recall", "density", "coverage")


def _share(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean of the per-sample term: the metric restricted to the rows it is given.

    y_true is the ideal (every term 1) and unused: MetricFrame needs one.
    """
    return float(np.mean(np.asarray(y_pred, dtype=np.float64)))


@dataclass(frozen=True, eq=False)
class GroupReport:
    """Per-group PRDC with disparity summaries.

    Attributes
    ----------
    by_group : DataFrame
        Index: the groups (a MultiIndex for several group columns). Columns: precision, recall,
        density, coverage, n_real, n_fake, small. A group without fakes has NaN precision and
        density; one without reals has NaN recall and coverage.
    summary : DataFrame
        Index: the four metrics. Columns: group_min, group_max, difference (max − min),
        ratio (min / max; NaN when max is 0), worst_group (label of the minimum), each over the
        groups where the metric is defined — and, for precision and density, over the groups
        the generator never reaches (real points, no generated sample attributed): they count
        as 0, the worst a generator can do for them, while their row in `by_group` stays NaN.
    ci : DataFrame or None
        Bootstrap quantiles of `by_group`, columns (metric, quantile); None without bootstrap.
    summary_ci : DataFrame or None
        Bootstrap quantiles of the summary, index metric, columns (statistic, quantile) for
        statistic in group_min, group_max, difference, ratio.
    min_group_size : int
        Groups with fewer real points are flagged in `by_group.small`.
    small_groups : list
        Their labels: their per-group values rest on few points and swing widely.
    frames : dict of str to MetricFrame
        The underlying fairlearn frames, one per metric.
    """

    by_group: pd.DataFrame
    summary: pd.DataFrame
    ci: pd.DataFrame | None
    summary_ci: pd.DataFrame | None
    min_group_size: int
    small_groups: list[Any]
    frames: dict[str, MetricFrame] = field(repr=False)

    def tidy(self) -> pd.DataFrame:
        """Long format: one row per (group, metric) with value, n and, with CIs, quantiles.

        Returns
        -------
        DataFrame
            Columns: the group columns, metric, value, n (reals for recall/coverage, fakes for
            precision/density), small, and one column "q{quantile}" per bootstrap quantile.
        """
        rows = []
        for metric in METRICS:
            part = pd.DataFrame(
                {
                    "metric": metric,
                    "value": self.by_group[metric],
                    "n": self.by_group["n_real" if metric in REAL_METRICS else "n_fake"],
                    "small": self.by_group["small"],
                }
            )
            if self.ci is not None:
                for q in self.ci[metric].columns:
                    part[f"q{q:g}"] = self.ci[(metric, q)]
            rows.append(part)
        return pd.concat(rows).reset_index()


def _as_group_frame(groups: Any, n: int, name: str) -> pd.DataFrame:
    """Groups as a DataFrame with a RangeIndex (positional alignment with the metric arrays)."""
    if isinstance(groups, pd.DataFrame):
        frame = groups.reset_index(drop=True)
    elif isinstance(groups, pd.Series):
        frame = groups.reset_index(drop=True).to_frame(name=groups.name or "group")
    else:
        arr = np.asarray(groups)
        if arr.ndim == 2:
            frame = pd.DataFrame(arr, columns=[f"group_{i}" for i in range(arr.shape[1])])
        else:
            frame = pd.DataFrame({"group": arr})
    if len(frame) != n or frame.shape[1] == 0:
        raise ValueError(f"{name} must have one row per sample ({n}), got shape {frame.shape}")
    if frame.isna().to_numpy().any():
        raise ValueError(f"{name} contains missing group labels")
    return frame


def _frame(
    metric: str,
    values: NDArray[Any],
    groups: pd.DataFrame,
    n_boot: int | None,
    ci_quantiles: Sequence[float],
    random_state: int | None,
) -> MetricFrame:
    return MetricFrame(
        metrics={metric: _share},
        y_true=np.ones(values.shape[0], dtype=bool),
        y_pred=values,
        sensitive_features=groups,
        n_boot=n_boot,
        ci_quantiles=list(ci_quantiles) if n_boot else None,
        random_state=random_state,
    )


def _worst(values: pd.Series) -> Any:
    valid = values.dropna()
    return valid.idxmin() if len(valid) else None


def _unreached(by_group: pd.DataFrame, metric: str) -> pd.Series:
    """Groups whose `metric` is undefined because the generator never reaches them: for
    precision and density, real points but no generated sample attributed to the group."""
    if metric not in FAKE_METRICS:
        return pd.Series(False, index=by_group.index)
    return (by_group["n_fake"] == 0) & (by_group["n_real"] > 0)


def _stats(frame: MetricFrame, by_group: pd.DataFrame, metric: str) -> dict[str, Any]:
    """group_min, group_max, difference, ratio and worst group of one metric.

    A group the generator never reaches has no precision or density of its own (its row stays
    NaN), but it is the group the generator fails worst: skipping it, as fairlearn skips NaN,
    would read a never-reached minority as fair. It counts as 0 here — by hand, with
    fairlearn's definitions (max − min; min / max, NaN when max is 0); fairlearn's own numbers
    whenever every group is reached.
    """
    unreached = _unreached(by_group, metric)
    values = by_group[metric].mask(unreached, 0.0)
    if unreached.any():
        lo, hi = float(values.min()), float(values.max())
        return {
            "group_min": lo,
            "group_max": hi,
            "difference": hi - lo,
            "ratio": lo / hi if hi > 0 else float("nan"),
            "worst_group": _worst(values),
        }
    return {
        "group_min": float(frame.group_min()[metric]),
        "group_max": float(frame.group_max()[metric]),
        "difference": float(frame.difference(method="between_groups")[metric]),
        "ratio": float(frame.ratio(method="between_groups")[metric]),
        "worst_group": _worst(values),
    }


def group_prdc(
    result: PRDC,
    real_groups: Any,
    fake_groups: Any = None,
    *,
    min_group_size: int = 30,
    n_boot: int | None = None,
    ci_quantiles: Sequence[float] = (0.025, 0.975),
    random_state: int | None = None,
) -> GroupReport:
    """Split a PRDC result by group and summarize the disparities.

    Parameters
    ----------
    result : PRDC
        Output of :func:`simulator.metrics.prdc` for N real and M fake points.
    real_groups : DataFrame, Series or array_like, length N
        Group labels of the real points; one or more columns (several columns give
        intersectional groups).
    fake_groups : same, length M, optional
        Group labels of the fakes. Default: the labels of each fake's nearest real point.
    min_group_size : int, default 30
        Groups with fewer real points are flagged as small.
    n_boot : int, optional
        Bootstrap resamples for confidence intervals (fairlearn's MetricFrame); none by default.
    ci_quantiles : sequence of float, default (0.025, 0.975)
        Quantiles reported for each bootstrapped value.
    random_state : int, optional
        Seed of the bootstrap.

    Returns
    -------
    GroupReport
    """
    n_real = result.recall_per_real.shape[0]
    n_fake = result.precision_per_fake.shape[0]
    real_g = _as_group_frame(real_groups, n_real, "real_groups")
    if fake_groups is None:
        fake_g = real_g.iloc[result.nearest_real_index].reset_index(drop=True)
    else:
        fake_g = _as_group_frame(fake_groups, n_fake, "fake_groups")
        if list(fake_g.columns) != list(real_g.columns):
            raise ValueError(
                f"fake_groups columns {list(fake_g.columns)} differ from real_groups "
                f"columns {list(real_g.columns)}"
            )
    if n_boot is not None and n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")

    values: dict[str, tuple[NDArray[Any], pd.DataFrame]] = {
        "precision": (result.precision_per_fake, fake_g),
        "recall": (result.recall_per_real, real_g),
        "density": (result.density_per_fake, fake_g),
        "coverage": (result.coverage_per_real, real_g),
    }
    frames = {
        m: _frame(m, v, g, n_boot, ci_quantiles, random_state) for m, (v, g) in values.items()
    }

    keys = list(real_g.columns)
    n_real_by = real_g.groupby(keys).size().rename("n_real")
    n_fake_by = fake_g.groupby(keys).size().rename("n_fake")
    by_group = pd.concat([frames[m].by_group[m] for m in METRICS], axis=1)
    by_group = by_group.join([n_real_by, n_fake_by], how="outer")
    by_group[["n_real", "n_fake"]] = by_group[["n_real", "n_fake"]].fillna(0).astype(np.int64)
    by_group["small"] = by_group["n_real"] < min_group_size
    small = [g for g, flag in by_group["small"].items() if flag]

    summary = pd.DataFrame(
        [_stats(frames[m], by_group, m) for m in METRICS],
        index=pd.Index(METRICS, name="metric"),
    )

    ci = summary_ci = None
    if n_boot:
        qs = list(ci_quantiles)
        ci = pd.concat(
            {
                (m, q): frame_q[m]
                for m in METRICS
                for q, frame_q in zip(qs, frames[m].by_group_ci, strict=True)
            },
            axis=1,
        ).reindex(by_group.index)
        ci.columns.names = ["metric", "quantile"]
        stats = {
            "group_min": lambda f: f.group_min_ci(),
            "group_max": lambda f: f.group_max_ci(),
            "difference": lambda f: f.difference_ci(method="between_groups"),
            "ratio": lambda f: f.ratio_ci(method="between_groups"),
        }
        summary_ci = pd.DataFrame(
            {
                (stat, q): [float(get(frames[m])[i][m]) for m in METRICS]
                for stat, get in stats.items()
                for i, q in enumerate(qs)
            },
            index=pd.Index(METRICS, name="metric"),
        )
        summary_ci.columns.names = ["statistic", "quantile"]

    return GroupReport(
        by_group=by_group,
        summary=summary,
        ci=ci,
        summary_ci=summary_ci,
        min_group_size=min_group_size,
        small_groups=small,
        frames=frames,
    )
