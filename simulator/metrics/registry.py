"""The metrics registry: what an evaluation computes per group, and the rules every view reads.

A **group metric** is one function in its own module plus an entry here: it receives a
`GroupingContext` (`simulator.metrics.context`) — one grouping of the held-out set at one
evaluation, with PRDC's per-sample results and the generated samples' ball memberships — and
returns tidy rows (metric, value, n, group; `group` "" for a row about the whole grouping).
`evaluation.metrics` in a scenario lists the entries an evaluation runs besides the defaults
(`DEFAULT_METRICS`); a `module:fn` or `file.py:fn` plug-in works the same way.

The **rules** (`simulator.metrics.rules.RULES`) answer the questions every view asks, each in
one function: `forgotten`, `served`, `worst_client`. The evaluation calls them and stores their
answers as rows (`forgotten`, `eval.served_share`, `worst_client`); the tables, `inspect`, the
headline, the diagnosis, `compare`, the report and the findings read those rows, so swapping a
rule changes every view at once (tested).
"""

from __future__ import annotations

from fedgan.simulator.metrics import (
    column_fidelity,
    group_declared,
    group_frechet,
    group_mass,
    group_prdc_rows,
)
from fedgan.simulator.metrics.context import GroupingContext, GroupMetric, Row, group_row
from fedgan.simulator.metrics.rules import RULES
from fedgan.simulator.registry import Registry

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "RULES",
    "GroupMetric",
    "GroupingContext",
    "Row",
    "group_row",
]


def _check_metric(obj: object) -> str | None:
    return None if callable(obj) else f"expected a function of a GroupingContext, got {obj!r}"


METRICS: Registry[GroupMetric] = Registry("metric", check=_check_metric)
"""Group metrics by name (`evaluation.metrics`)."""
METRICS.add("prdc", group_prdc_rows.prdc_rows)
METRICS.add("mass", group_mass.mass_rows)
METRICS.add("group_frechet", group_frechet.group_frechet_rows)
METRICS.add("declared", group_declared.declared_rows)
METRICS.add("fidelity", column_fidelity.fidelity_rows)

DEFAULT_METRICS = ("prdc", "mass", "declared", "fidelity")
"""What every evaluation computes unless `evaluation.metrics` adds more: per-group PRDC (with
fairlearn's gaps), the generated mass with the forgotten groups, and — for a grouping the
generated rows carry (a table's generated categorical column) — the share that declares each
group by its generated value — and, for tables, each column's marginal fidelity overall and per
group (no rows otherwise)."""
