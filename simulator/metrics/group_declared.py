"""Group metric `declared`: the generated rows grouped by their *generated* value.

When a grouping's columns are all generated (a table's categorical column, e.g. a sensitive
attribute that is also a group column), a generated row says which group it belongs to. This
metric counts those declarations — beside `mass`, which places each generated row by where it
lies (inside the k-NN ball of one of the group's held-out rows). The two answer different
questions and are named apart:

- `mass` / `mass_ratio` / `forgotten` — *is the group's real neighbourhood generated?* The one
  definition of "forgotten" every view reads (`simulator.metrics.rules`).
- `declared_share` / `declared_ratio` — *how often does the generator write this value?* A
  generator can write "region=islands" on rows that look like the mainland; then the
  declared share is fair while the mass is not, and the group is still forgotten.
- `declared_on_support` — of the rows declaring the group, the share inside one of its balls:
  how far the declaration is honoured.

Rows per group: `declared_share` (n = generated rows), `declared_ratio` (declared share / true
share; n = the group's held-out rows), `declared_on_support` (n = rows declaring it; NaN when
none does). No rows for a grouping whose labels the generated rows do not carry.
"""

from __future__ import annotations

from fedgan.simulator.metrics.context import GroupingContext, Row, group_row


def declared_rows(ctx: GroupingContext) -> list[Row]:
    """`declared_share`, `declared_ratio` and `declared_on_support` of every group of `ctx`;
    [] when `ctx.fake_labels` is None (the grouping is not generated)."""
    codes = ctx.declared_codes
    if codes is None:
        return []
    # A generated value no held-out row has (a category absent from the test split) counts in
    # the denominator of every share but belongs to no group here (code −1).
    m = len(codes)
    rows: list[Row] = []
    for i, (g, share, n) in enumerate(
        zip(ctx.groups, ctx.shares.tolist(), ctx.sizes.tolist(), strict=True)
    ):
        mine = codes == i
        k = int(mine.sum())
        declared = k / m if m else float("nan")
        rows.append(group_row("declared_share", declared, m, g))
        rows.append(group_row("declared_ratio", declared / share if share else float("nan"), n, g))
        on = float(ctx.hits[mine, i].mean()) if k else float("nan")
        rows.append(group_row("declared_on_support", on, k, g))
    return rows
