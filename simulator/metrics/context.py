"""What a group metric sees: one grouping of the held-out set at one evaluation
(`GroupingContext`), and the tidy row it returns (`group_row`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from fedgan.simulator.metrics.prdc import PRDC
from numpy.typing import NDArray

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
    fake_labels : Series, length M, or None
        Each generated point's group by its *generated* value, when every column of the
        grouping is generated (a table's categorical column); None otherwise
        (`simulator.metrics.group_declared`).
    decoded : DecodedRows or None
        A table's rows in the user's columns (`simulator.metrics.column_fidelity`); None for
        data that is not a table.
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
    fake_labels: pd.Series | None = None
    decoded: DecodedRows | None = None

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Held-out points per group [G]."""
        return np.bincount(self.codes, minlength=len(self.groups)).astype(np.int64)

    @property
    def declared_codes(self) -> NDArray[np.intp] | None:
        """Each generated point's position in `groups` by its generated value [M] (−1: a value
        no held-out point has); None when the grouping is not generated (`fake_labels`)."""
        if self.fake_labels is None:
            return None
        lookup = {str(g): i for i, g in enumerate(self.groups)}
        labels = self.fake_labels
        return np.fromiter((lookup.get(str(v), -1) for v in labels), np.intp, count=len(labels))

    @property
    def shares(self) -> NDArray[np.float64]:
        """Each group's share of the held-out points [G] (its true share)."""
        n = len(self.codes)
        return self.sizes / n if n else np.zeros(len(self.groups))


@dataclass(frozen=True, eq=False)
class DecodedRows:
    """A table's held-out and generated rows in the user's columns and units (decoded once
    per evaluation, shared by every grouping).

    Attributes
    ----------
    real : DataFrame, shape [N, C]
        Held-out rows, in the order of the held-out set.
    fake : DataFrame, shape [M, C]
        Generated rows (argmax categories, numbers in data units).
    discrete : frozenset of str
        The columns compared as categories (the rest as numbers).
    """

    real: pd.DataFrame
    fake: pd.DataFrame
    discrete: frozenset[str]


GroupMetric = Callable[[GroupingContext], list[Row]]
"""A group metric: a function of one grouping at one evaluation, returning tidy rows."""


def group_row(metric: str, value: float, n: float, group: Any = "") -> Row:
    """One tidy row of a group metric (`group` "" for the grouping as a whole)."""
    return {"metric": metric, "value": float(value), "n": int(n), "group": group}
