"""Group metric `prdc`: precision, recall, density and coverage per group (fairlearn's
`MetricFrame`, `simulator.metrics.groups.group_prdc`), with their gaps across the groups and,
with `evaluation.n_boot`, bootstrap quantiles.

Rows per group: the four metrics (n = reals for recall and coverage, fakes for precision and
density: a fake belongs to the group of its nearest real point here, as fairlearn splits
per-sample terms) and `<metric>.q<quantile>`; per grouping: `<metric>.group_min`,
`<metric>.difference`, `<metric>.ratio`.
"""

from __future__ import annotations

from fedgan.simulator.metrics.context import GroupingContext, Row, group_row
from fedgan.simulator.metrics.groups import group_prdc


def prdc_rows(ctx: GroupingContext) -> list[Row]:
    """Per-group PRDC of `ctx` and its gaps, as tidy rows."""
    fake_labels = ctx.labels.iloc[ctx.result.nearest_real_index].reset_index(drop=True)
    report = group_prdc(
        ctx.result,
        ctx.labels,
        fake_labels,
        min_group_size=ctx.min_group_size,
        n_boot=ctx.n_boot or None,
        random_state=ctx.seed,
    )
    tidy = report.tidy()
    col = str(ctx.labels.name)
    quantiles = [c for c in tidy.columns if c.startswith("q")]
    rows: list[Row] = []
    for row in tidy.to_dict("records"):  # not itertuples: 'class' is no identifier
        rows.append(group_row(row["metric"], row["value"], row["n"], row[col]))
        for q in quantiles:  # bootstrap quantiles as their own metrics
            rows.append(group_row(f"{row['metric']}.{q}", row[q], row["n"], row[col]))
    n_real = len(ctx.codes)
    for metric, stats in report.summary.iterrows():
        for stat in ("group_min", "difference", "ratio"):
            rows.append(group_row(f"{metric}.{stat}", stats[stat], n_real))
    return rows
