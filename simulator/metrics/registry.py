"""The metrics registry: what an evaluation computes per group, and the rules every view reads.

A **group metric** is one function (in its own module) plus an entry here: it receives a
`GroupingContext` — one grouping of the held-out set at one evaluation, with PRDC's per-sample
results and the generated samples' ball memberships — and returns tidy rows (metric, value, n,
group; `group` "" for a row about the whole grouping). `evaluation.metrics` in a scenario lists
the entries an evaluation runs (default `DEFAULT_METRICS`); a `module:fn` or `file.py:fn`
plug-in works the same way.

The **rules** answer the questions every view asks, each in one function: `forgotten` (which
groups a generator forgets, `simulator.metrics.forgetting.forgotten_groups`), `served` (the
share of a client's points in groups not forgotten) and `worst_client`. The evaluation calls
them and stores their answers as rows (`forgotten`, `eval.served_share`); the tables,
`inspect`, the headline, the diagnosis, `compare`, the report and the findings read those
rows, so swapping a rule here changes every view at once (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from simulator.metrics import forgetting
from simulator.metrics.prdc import PRDC
from simulator.registry import Registry

Row = dict[str, Any]


@dataclass(frozen=True, eq=False)
class GroupingContext:
    """One grouping of the held-out set at one evaluation, as a group metric sees it.

    Attributes
    ----------
    grouping : str
        Its name in the metrics table's `group_by` column ("mode", "sex|region").
    labels : Series, length N
        Each held-out point's group.
    groups : list
        The distinct groups, in the order of `codes`.
    codes : ndarray of intp, shape [N]
        Each held-out point's position in `groups`.
    real : ndarray, shape [N, d]
        Held-out points in the space PRDC runs in (features for images).
    fake : ndarray, shape [M, d]
        Generated points in the same space.
    result : PRDC
        PRDC of `fake` against `real` (per-sample terms, radii).
    hits : ndarray of bool, shape [M, G]
        `forgetting.ball_hits`: which groups' balls hold each sample.
    min_group_size : int
        Groups with fewer held-out points are rare.
    n_boot : int
        Bootstrap resamples for intervals (0: none).
    seed : int
        Seed of anything random (the bootstrap).
    """

    grouping: str
    labels: pd.Series
    groups: list[Any]
    codes: NDArray[np.intp]
    real: NDArray[np.floating]
    fake: NDArray[np.floating]
    result: PRDC
    hits: NDArray[np.bool_]
    min_group_size: int
    n_boot: int = 0
    seed: int = 0

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Held-out points per group [G]."""
        return np.bincount(self.codes, minlength=len(self.groups)).astype(np.int64)

    @property
    def shares(self) -> NDArray[np.float64]:
        """Each group's share of the held-out points [G] (its true share)."""
        n = len(self.codes)
        return self.sizes / n if n else np.zeros(len(self.groups))


GroupMetric = Callable[[GroupingContext], list[Row]]


def _check_metric(obj: object) -> str | None:
    return None if callable(obj) else f"expected a function of a GroupingContext, got {obj!r}"


METRICS: Registry[GroupMetric] = Registry("metric", check=_check_metric)
"""Group metrics by name (`evaluation.metrics`)."""

RULES: Registry[Callable[..., Any]] = Registry("rule")
"""The one function per question every view reads: `forgotten`, `served`, `worst_client`."""
RULES.add("forgotten", forgetting.forgotten_groups)
RULES.add("served", forgetting.served_share)
RULES.add("worst_client", forgetting.worst_client)

DEFAULT_METRICS = ("prdc", "mass")
"""What every evaluation computes unless `evaluation.metrics` says otherwise: per-group PRDC
(with fairlearn's gaps) and the generated mass with the forgotten groups."""


def group_row(metric: str, value: float, n: float, group: Any = "") -> Row:
    """One tidy row of a group metric (`group` "" for the grouping as a whole)."""
    return {"metric": metric, "value": float(value), "n": int(n), "group": group}


# The built-in metrics register themselves on import (one module each).
from simulator.metrics import group_frechet, group_mass, group_prdc_rows  # noqa: E402,F401
