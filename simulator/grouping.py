"""Groupings of a dataset's group columns — a column, or several for intersectional groups —
and their labels, as every part of the simulator names them (light: pandas only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

SEPARATOR = "|"
"""Joins the columns of an intersectional grouping ("sex|region") and its labels ("F|north")."""

Grouping = str | Sequence[str]
"""One entry of `evaluation.group_by`: a group column, or several for intersectional groups."""


def group_sort_key(v: Any) -> tuple[str, Any]:
    """Sort key of group values of mixed types (ints, strings): by type name, then value. The
    fixed group order of the per-group count lists and of the metric modules."""
    return (str(type(v)), v)


def grouping_columns(grouping: Grouping) -> list[str]:
    """The group columns of a grouping: ["sex"] for "sex", ["sex", "region"] for both."""
    return [grouping] if isinstance(grouping, str) else list(grouping)


def grouping_name(grouping: Grouping) -> str:
    """How a grouping is named in the metrics table's `group_by` column: "sex|region"."""
    return SEPARATOR.join(grouping_columns(grouping))


def group_labels(groups: pd.DataFrame, grouping: Grouping) -> pd.Series:
    """Each row's group under `grouping`, named by `grouping_name`: a column's own values for one
    column; for several, the values joined by "|" (fairlearn's intersectional groups, flattened
    to one label per row, so that every view treats them as one more grouping)."""
    cols = grouping_columns(grouping)
    if len(cols) == 1:
        return groups[cols[0]].rename(cols[0])
    parts = [groups[c].astype(str) for c in cols]
    joined = parts[0].str.cat(parts[1:], sep=SEPARATOR)
    return joined.rename(grouping_name(grouping))
