"""Group metric `group_frechet`: the Fréchet distance of each group's generated samples to its
held-out points (opt-in: `evaluation.metrics: [prdc, mass, group_frechet]`).

A group's generated samples are those inside the k-NN ball of one of its held-out points (the
attribution of `mass`), so a forgotten group has too few to fit a Gaussian: its row is NaN
with n = the samples it has. Rows per group: `frechet_distance` (squared feature units; n = the
group's generated samples).
"""

from __future__ import annotations

from simulator.metrics.frechet import frechet_distance
from simulator.metrics.registry import METRICS, GroupingContext, Row, group_row


@METRICS.register("group_frechet")
def group_frechet_rows(ctx: GroupingContext) -> list[Row]:
    """Fréchet distance between each group's held-out points and its generated samples."""
    rows: list[Row] = []
    for g_idx, g in enumerate(ctx.groups):
        real = ctx.real[ctx.codes == g_idx]
        fake = ctx.fake[ctx.hits[:, g_idx]]
        value = frechet_distance(real, fake) if len(real) >= 2 and len(fake) >= 2 else float("nan")
        rows.append(group_row("frechet_distance", value, len(fake), g))
    return rows
