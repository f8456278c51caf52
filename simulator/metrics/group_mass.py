"""Group metric `mass`: each group's generated mass and whether it is forgotten.

Rows per group: `mass` (share of the generated samples inside the k-NN ball of one of the
group's held-out points; n = samples), `mass_ratio` (mass / (true share · on-support share),
`simulator.metrics.forgetting.mass_ratios`) and `forgotten` (1 or 0, by the registry's
`forgotten` rule; n = the group's held-out points). Per grouping: `forgotten.count`.
"""

from __future__ import annotations

from fedgan.simulator.metrics import forgetting
from fedgan.simulator.metrics.context import GroupingContext, Row, group_row
from fedgan.simulator.metrics.rules import RULES


def mass_rows(ctx: GroupingContext) -> list[Row]:
    """`mass`, `mass_ratio` and `forgotten` of every group of `ctx`, and the count forgotten."""
    mass, on_support = forgetting.group_mass(ctx.hits)
    ratios = forgetting.mass_ratios(mass, ctx.shares, on_support)
    sizes = ctx.sizes
    lost = RULES.get("forgotten")(
        dict(zip(ctx.groups, ratios.tolist(), strict=True)),
        dict(zip(ctx.groups, sizes.tolist(), strict=True)),
        ctx.min_group_size,
    )
    lost_keys = {str(g) for g in lost}
    rows: list[Row] = []
    m = len(ctx.hits)
    for g, ms, r, n in zip(ctx.groups, mass.tolist(), ratios.tolist(), sizes.tolist(), strict=True):
        rows.append(group_row("mass", ms, m, g))
        rows.append(group_row("mass_ratio", r, n, g))
        rows.append(group_row("forgotten", float(str(g) in lost_keys), n, g))
    rows.append(group_row("forgotten.count", len(lost_keys), len(ctx.codes)))
    return rows
