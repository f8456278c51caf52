"""Group metric `group_frechet`: the Fréchet distance of each group's generated samples to its
held-out points (opt-in: `evaluation.metrics: [prdc, mass, group_frechet]`).

A group's generated samples here are those whose nearest held-out point is in the group — not
the ball attribution of `mass`, because a distance should see samples that miss the group's
support (a mode generated 5σ off its centre has almost no sample inside its balls, yet it is
the group's sample and its Fréchet distance must say how far off it is). It is a distance,
not a verdict: "forgotten" stays the `mass` rule's. A group with fewer than 2 samples or
points has no Gaussian to fit: NaN. Rows per group: `frechet_distance` (squared feature
units; n = the group's generated samples).
"""

from __future__ import annotations

from fedgan.simulator.metrics.context import GroupingContext, Row, group_row
from fedgan.simulator.metrics.frechet import frechet_distance


def group_frechet_rows(ctx: GroupingContext) -> list[Row]:
    """Fréchet distance between each group's held-out points and its generated samples."""
    nearest = ctx.codes[ctx.result.nearest_real_index]
    rows: list[Row] = []
    for g_idx, g in enumerate(ctx.groups):
        real = ctx.real[ctx.codes == g_idx]
        fake = ctx.fake[nearest == g_idx]
        value = frechet_distance(real, fake) if len(real) >= 2 and len(fake) >= 2 else float("nan")
        rows.append(group_row("frechet_distance", value, len(fake), g))
    return rows
