"""Text summaries of a run's metrics table (the tables `fedgan run` and `inspect` print), and the
per-group views — every grouping with its gaps and its minority and rare groups — that the
report shows too."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import RenderableType
from rich.markup import escape

from simulator.layout import Column, fit_tables
from simulator.metrics.diagnosis import KEEP_COVERAGE, kept

HEADLINE = [
    ("precision", "precision"),
    ("recall", "recall"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("expected_coverage", "coverage ceiling (same-distribution)"),
    ("modes_captured", "modes captured"),
    ("high_quality_rate", "high quality (3σ)"),
    ("reverse_kl", "reverse KL (modes)"),
    ("min_mass_ratio", "min mode mass ratio"),
    ("recall.group_min", "worst-group recall"),
    ("coverage.group_min", "worst-group coverage"),
    ("groups_kept", f"groups kept (coverage ≥ {KEEP_COVERAGE:g})"),
    ("recall.difference", "recall gap (max − min)"),
    ("frechet_distance", "Fréchet distance (classifier features)"),
]


PER_GROUP = ("recall", "coverage", "precision", "mode_mass")
"""The per-group columns the printed tables (run summary, report) show."""
GAP_METRICS = ("recall", "coverage", "precision")
"""Metrics whose gaps across groups (worst group, min, max − min, min / max) are shown."""
MINORITY_WEIGHT = 0.05
"""A group of at most this true weight, and below an even share, is a minority."""
SEPARATOR = "|"
"""Joins an intersectional grouping's labels ("F|north"), as `simulator.metrics.groups`."""


def group_order(values: Iterable[Any]) -> list[Any]:
    """Group labels in reading order: the tidy table holds them as strings, and '10' must
    follow '9', not '1' (numbers numerically, then the rest alphabetically); intersectional
    labels ("F|10") part by part."""

    def part(s: str) -> tuple[int, float, str]:
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)

    return sorted(values, key=lambda v: tuple(part(p) for p in str(v).split(SEPARATOR)))


def evaluated_rounds(metrics: pd.DataFrame, scope: str) -> list[int]:
    """Rounds (steps) at which `scope` was evaluated: those with its whole-population recall."""
    rows = metrics[(metrics["scope"] == scope) & (metrics["metric"] == "recall")]
    return sorted(int(r) for r in rows["round"].unique())


def groupings(metrics: pd.DataFrame, scope: str, round_: int | None = None) -> list[str]:
    """The groupings (`group_by` values: "mode", "sex|region") of `scope`'s per-group rows, in
    the order the evaluation wrote them (the scenario's `evaluation.group_by`)."""
    rows = metrics[(metrics["scope"] == scope) & (metrics["group"] != "")]
    if round_ is not None:
        rows = rows[rows["round"] == round_]
    rows = rows[rows["metric"].isin(["recall", "eval.recall"])]
    return [str(g) for g in dict.fromkeys(rows["group_by"]) if g]


def group_table(
    metrics: pd.DataFrame, scope: str, round_: int, group_by: str | None = None
) -> pd.DataFrame:
    """One evaluation's per-group table: a row per group of `group_by` (default: the
    evaluation's first grouping), a column per metric, and `n` (held-out points behind the
    group's recall); groups in `group_order`. Empty when the evaluation has no groups."""
    rows = metrics[
        (metrics["scope"] == scope) & (metrics["round"] == round_) & (metrics["group"] != "")
    ]
    if rows.empty:
        return pd.DataFrame()
    col = group_by if group_by is not None else str(rows["group_by"].iloc[0])
    rows = rows[rows["group_by"] == col]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(
        index="group", columns="metric", values="value", aggfunc="first", dropna=False
    )
    n = rows[rows["metric"] == "recall"].set_index("group")["n"]
    wide["n"] = n.reindex(wide.index).fillna(0).astype(int)
    wide.columns.name = None
    wide.index.name = col
    return wide.reindex(group_order(wide.index))


def client_group_table(
    metrics: pd.DataFrame,
    round_: int | None = None,
    metric: str = "eval.recall",
    group_by: str | None = None,
) -> pd.DataFrame:
    """Each client's `metric` on its own held-out data, per group (clients × groups), at one
    evaluation (default: the last); NaN where not measured. Empty when there are none."""
    rows = metrics[
        (metrics["scope"] == "client") & (metrics["metric"] == metric) & (metrics["group"] != "")
    ]
    if group_by is not None:
        rows = rows[rows["group_by"] == group_by]
    if rows.empty:
        return pd.DataFrame()
    rows = rows[rows["group_by"] == rows["group_by"].iloc[0]]
    rows = rows[rows["round"] == (round_ if round_ is not None else rows["round"].max())]
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index="client", columns="group", values="value", aggfunc="first")
    table.columns.name = str(rows["group_by"].iloc[0])
    return table.reindex(index=sorted(table.index), columns=group_order(table.columns))


def headline_rows(h: dict[str, float]) -> list[tuple[str, str]]:
    """(label, value) lines of a headline (`headline`), in the order the tables print them."""
    out = []
    for key, label in HEADLINE:
        if key in h:
            value = format_value(key, h[key])
            if key == "modes_captured" and "modes_total" in h:
                value += f" / {h['modes_total']:.0f}"
            if key == "groups_kept" and "groups_total" in h:
                value += f" / {h['groups_total']:.0f}"
            out.append((label, value))
    for key, label in (
        ("worst_client_recall", "worst-client recall (own data)"),
        ("client_recall_spread", "client recall spread (max − min)"),
    ):
        if key in h:
            out.append((label, format_value(key, h[key])))
    return out


def main_scope(metrics: pd.DataFrame) -> str:
    """'global' for federated runs, 'centralized' for centralized ones."""
    scopes = set(metrics["scope"])
    return (
        "global"
        if "global" in scopes
        and "recall" in set(metrics.loc[metrics["scope"] == "global", "metric"])
        else "centralized"
    )


def last_round(metrics: pd.DataFrame, scope: str, metric: str) -> int | None:
    rows = metrics[(metrics["scope"] == scope) & (metrics["metric"] == metric)]
    return int(rows["round"].max()) if len(rows) else None


def headline(metrics: pd.DataFrame, round_: int | None = None) -> dict[str, float]:
    """Whole-population metrics of one evaluation (default: the last), plus client spread."""
    scope = main_scope(metrics)
    rnd = round_ if round_ is not None else last_round(metrics, scope, "recall")
    out: dict[str, float] = {}
    if rnd is None:
        return out
    rows = metrics[(metrics["scope"] == scope) & (metrics["round"] == rnd)]
    first_group = next((g for g in rows["group_by"] if g), "")
    for r in rows.itertuples():
        if r.group == "" and (r.group_by in ("", first_group)):
            out.setdefault(str(r.metric), float(r.value))
    cov = rows[(rows["group_by"] == first_group) & (rows["group"] != "")]
    cov = cov[cov["metric"] == "coverage"]["value"]
    if first_group and len(cov):
        out["groups_kept"] = float(sum(kept(float(v)) for v in cov))
        out["groups_total"] = float(len(cov))
    clients = metrics[
        (metrics["scope"] == "client")
        & (metrics["metric"] == "eval.recall")
        & (metrics["group"] == "")
    ]
    if len(clients):
        last = clients[clients["round"] == clients["round"].max()]["value"].dropna()
        if len(last):
            out["worst_client_recall"] = float(last.min())
            out["client_recall_spread"] = float(last.max() - last.min())
    return out


def format_value(key: str, v: float) -> str:
    if math.isnan(v):
        return "n/a"
    counts = ("modes_captured", "modes_total", "groups_kept", "groups_total")
    return f"{v:.0f}" if key in counts else f"{v:.3f}"


def format_numbers(values: Iterable[Any]) -> list[str]:
    """A row of one metric's values, alike: whole numbers as such when all are (points,
    bytes), else 3 decimals (one above 1000); NaN as n/a."""
    xs = [float(v) for v in values]
    finite = [x for x in xs if math.isfinite(x)]
    whole = all(x.is_integer() and abs(x) < 1e15 for x in finite)
    big = any(abs(x) >= 1000 for x in finite)
    spec = ".0f" if whole else (".1f" if big else ".3f")
    return [format(x, spec) if math.isfinite(x) else "n/a" for x in xs]


# ---- per-group views -------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _mixture_weights(dataset: str, params_json: str) -> tuple[str, tuple[float, ...]] | None:
    """(group column, weights) of a mixture dataset (its modes' weights), from a 64-point build:
    the weights do not depend on the size. None for data without known weights."""
    from simulator.data import load_dataset

    try:
        ds = load_dataset(dataset, 64, 0, json.loads(params_json))
    except Exception:  # noqa: BLE001 - a plug-in or a file that is gone: fall back to shares
        return None
    if ds.modes is None:
        return None
    return ds.group_column, tuple(float(w) for w in ds.modes.weights)


def true_weights(scenario: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """{group column: {group label: weight}} where the data's true weights are known — the
    mixture weights of `ring`, `grid`, `two_gaussians` (and plug-in mixtures) — else {}."""
    data = (scenario or {}).get("data") or {}
    if not data.get("dataset"):
        return {}
    params = json.dumps(data.get("params") or {}, sort_keys=True, default=str)
    found = _mixture_weights(str(data["dataset"]), params)
    if found is None:
        return {}
    col, weights = found
    return {col: {str(i): w for i, w in enumerate(weights)}}


@dataclass(frozen=True)
class GroupView:
    """One grouping's groups at one evaluation, as every view lists them.

    `table`: index the groups in `group_order`; columns the per-group metrics present
    (`PER_GROUP`), `clients` (client recall pooled over every client's own held-out points;
    NaN without clients), `n` (held-out points), `weight` (true weight, or the share of the
    held-out set), `minority` (weight ≤ 5 % and below an even share 1/G) and `rare` (fewer
    held-out points than `min_group_size`: values that swing widely). `gaps`: index
    `GAP_METRICS`, columns worst (group), group_min, difference, ratio.
    """

    grouping: str
    table: pd.DataFrame
    gaps: pd.DataFrame
    min_group_size: int
    weight_source: str

    @property
    def marked(self) -> list[Any]:
        """Minority or rare groups: the ones every view highlights."""
        t = self.table
        return [g for g in t.index if t.loc[g, "minority"] or t.loc[g, "rare"]]


def _gap_rows(metrics: pd.DataFrame, scope: str, round_: int, grouping: str) -> dict[str, float]:
    rows = metrics[
        (metrics["scope"] == scope)
        & (metrics["round"] == round_)
        & (metrics["group_by"] == grouping)
        & (metrics["group"] == "")
    ]
    return {str(r.metric): float(r.value) for r in rows.itertuples()}


def _worst(table: pd.DataFrame, metric: str) -> Any:
    """The group with the lowest `metric`; a group the generator never reaches (precision n/a
    with held-out points) counts as 0, as in the stored gaps."""
    if metric not in table.columns:
        return None
    values = table[metric]
    if metric == "precision":
        values = values.mask(values.isna() & (table["n"] > 0), 0.0)
    values = values.dropna()
    return values.idxmin() if len(values) else None


def group_views(
    metrics: pd.DataFrame,
    scope: str,
    round_: int,
    scenario: Mapping[str, Any] | None = None,
) -> list[GroupView]:
    """A `GroupView` of every grouping `scope` evaluated at `round_` (mixture weights and
    `evaluation.min_group_size` from the resolved `scenario`, when given)."""
    evaluation = (scenario or {}).get("evaluation") or {}
    min_size = int(evaluation.get("min_group_size", 20))
    weights = true_weights(scenario)
    pooled = metrics[
        (metrics["scope"] == "clients")
        & (metrics["metric"] == "eval.recall")
        & (metrics["round"] == round_)
    ]
    views = []
    for grouping in groupings(metrics, scope, round_):
        wide = group_table(metrics, scope, round_, grouping)
        if wide.empty:
            continue
        clients = pooled[pooled["group_by"] == grouping].set_index("group")["value"]
        wide["clients"] = clients.reindex(wide.index).astype(float)
        known = weights.get(grouping)
        if known is not None:
            wide["weight"] = [known.get(str(g), float("nan")) for g in wide.index]
            source = "the mixture's weights"
        else:
            total = wide["n"].sum()
            wide["weight"] = wide["n"] / total if total > 0 else float("nan")
            source = "shares of the held-out set"
        even = 1.0 / len(wide)
        w = wide["weight"]
        wide["minority"] = (w <= MINORITY_WEIGHT + 1e-12) & (w < even - 1e-12)
        wide["rare"] = wide["n"] < min_size
        stored = _gap_rows(metrics, scope, round_, grouping)
        gaps = pd.DataFrame(
            {
                "worst": [_worst(wide, m) for m in GAP_METRICS],
                **{
                    stat: [stored.get(f"{m}.{stat}", float("nan")) for m in GAP_METRICS]
                    for stat in ("group_min", "difference", "ratio")
                },
            },
            index=pd.Index(GAP_METRICS, name="metric"),
        )
        views.append(GroupView(grouping, wide, gaps, min_size, source))
    return views


def group_note(view: GroupView, group: Any) -> str:
    """'minority', 'rare' or both, for a group of `view` ('' for neither)."""
    t = view.table
    marks = (["minority"] if t.loc[group, "minority"] else []) + (
        ["rare"] if t.loc[group, "rare"] else []
    )
    return ", ".join(marks)


def legend_text(view: GroupView) -> str:
    """What the marks mean, and which groups carry them (the warnings of small groups)."""
    t = view.table
    minority = [str(g) for g in t.index if t.loc[g, "minority"]]
    rare = [str(g) for g in t.index if t.loc[g, "rare"]]
    lines = [
        f"minority (*): true weight ≤ {MINORITY_WEIGHT:.0%} and below an even share "
        f"(1/{len(t)}; weights: {view.weight_source})"
        + (f": {', '.join(minority)}" if minority else ": none")
    ]
    if rare:
        many = len(rare) > 1
        lines.append(
            f"warning: {len(rare)} group{'s' if many else ''} of {view.grouping!r} "
            f"{'have' if many else 'has'} fewer than {view.min_group_size} held-out points "
            f"(rare, †): {', '.join(rare)}; {'their' if many else 'its'} values swing widely"
        )
    return "\n".join(lines)


def _cell(key: str, v: float) -> str:
    return format_value(key, float(v))


HEADERS = {"mode_mass": "mass", "clients": "clients' recall"}
"""Short headers of the per-group columns."""


def group_view_rows(view: GroupView) -> tuple[list[str], list[list[str]], list[bool]]:
    """(header, rows of plain text, marked?) of a view's per-group table: what the CLI and the
    report both show (the CLI adds colour, the report a CSS class)."""
    t = view.table
    cols = [c for c in PER_GROUP if c in t.columns]
    has_clients = bool(t["clients"].notna().any())
    header = [view.grouping, *(HEADERS.get(c, c) for c in cols)]
    header += ["clients' recall"] if has_clients else []
    header += ["kept"] if "coverage" in t.columns else []
    header += ["n real", "weight", "note"]
    rows, marked = [], []
    for g in t.index:
        cells = [str(g), *(_cell(c, t.loc[g, c]) for c in cols)]
        cells += [_cell("", t.loc[g, "clients"])] if has_clients else []
        if "coverage" in t.columns:
            cells.append("yes" if kept(float(t.loc[g, "coverage"])) else "no")
        w = float(t.loc[g, "weight"])
        cells += [str(int(t.loc[g, "n"])), "n/a" if math.isnan(w) else f"{w:.1%}"]
        cells.append(group_note(view, g))
        rows.append(cells)
        marked.append(bool(t.loc[g, "minority"] or t.loc[g, "rare"]))
    return header, rows, marked


def gap_rows(view: GroupView) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a view's gaps: per metric the worst group, min, max − min, min / max."""
    header = ["metric", "worst group", "min", "max − min", "min / max"]
    rows = []
    for metric, g in view.gaps.iterrows():
        worst = "n/a" if g["worst"] is None else str(g["worst"])
        rows.append(
            [
                str(metric),
                worst,
                *(_cell("", g[s]) for s in ("group_min", "difference", "ratio")),
            ]
        )
    return header, rows


def _marks(view: GroupView, group: Any) -> str:
    """'*' for a minority group, '†' for a rare one: the terminal's short form of the note."""
    t = view.table
    return ("*" if t.loc[group, "minority"] else "") + ("†" if t.loc[group, "rare"] else "")


def view_tables(view: GroupView, width: int) -> list[RenderableType]:
    """A view as rich tables within `width`: the per-group table, then its gaps."""
    header, rows, marked = group_view_rows(view)
    header = header[:-1]  # the note becomes marks on the label: a column fewer to fit
    styled = []
    for g, r, mark in zip(view.table.index, rows, marked, strict=True):
        cells = [escape(c) for c in r[:-1]]
        for i, h in enumerate(header):
            if h == "coverage" and r[i] != "n/a" and not kept(float(r[i])):
                cells[i] = f"[red]{cells[i]}[/red]"
            if h == "kept" and r[i] == "no":
                cells[i] = "[red]no[/red]"
        if mark:
            cells[0] = f"[bold yellow]{escape(r[0] + _marks(view, g))}[/bold yellow]"
        styled.append(cells)
    columns = [Column(header[0], "left"), *(Column(h) for h in header[1:])]
    title = (
        f"per-group ({view.grouping}): kept = coverage ≥ {KEEP_COVERAGE:g}; recall alone can "
        "read high for a forgotten group (a few stray samples with large k-NN balls)"
    )
    legend = escape(legend_text(view)).replace("warning:", "[yellow]warning:[/yellow]")
    tables = fit_tables(title, columns, styled, width, caption=legend)
    g_header, g_rows = gap_rows(view)
    tables += fit_tables(
        f"gaps across {view.grouping} (a group never reached counts as precision 0)",
        [Column(g_header[0], "left"), Column(g_header[1], "left"), *map(Column, g_header[2:])],
        [[escape(c) for c in r] for r in g_rows],
        width,
    )
    return tables


def client_tables(
    metrics: pd.DataFrame, round_: int, views: list[GroupView], width: int
) -> list[RenderableType]:
    """Client × group recall on each client's own held-out data, for every grouping the
    clients report (minority and rare groups starred)."""
    out = []
    for view in views:
        table = client_group_table(metrics, round_, group_by=view.grouping)
        if table.empty:
            continue
        marked = set(view.marked)
        columns = [Column("client", "left")] + [
            Column(f"{g}*" if g in marked else str(g)) for g in table.columns
        ]
        rows = [[str(c), *(_cell("", table.loc[c, g]) for g in table.columns)] for c in table.index]
        out += fit_tables(
            f"client × {view.grouping} recall (round {round_}, each client's own held-out data)",
            columns,
            rows,
            width,
            caption="*: a minority or rare group; n/a: the client holds none of it"
            if marked
            else "n/a: the client holds none of the group",
        )
    return out


def summary_tables(
    metrics: pd.DataFrame,
    round_: int | None = None,
    scenario: Mapping[str, Any] | None = None,
    width: int = 100,
) -> list[RenderableType]:
    """Rich tables within `width`: headline numbers, then every grouping's per-group table
    (recall, coverage, precision, mode mass, clients' recall, kept, weight, marks) and gaps."""
    if metrics.empty:
        return []
    scope = main_scope(metrics)
    rnd = round_ if round_ is not None else last_round(metrics, scope, "recall")
    h = headline(metrics, rnd)
    word = "step" if scope == "centralized" else "round"
    tables = fit_tables(
        f"{scope} evaluation at {word} {rnd} (held-out real data)",
        [Column("metric", "left"), Column("value")],
        [[escape(label), value] for label, value in headline_rows(h)],
        width,
    )
    if rnd is not None:
        for view in group_views(metrics, scope, rnd, scenario):
            tables += view_tables(view, width)
    return tables
