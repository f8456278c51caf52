"""Text summaries of a run's metrics table (the tables `fedgan run` and `inspect` print)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
from rich.table import Table

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


def group_order(values: Iterable[Any]) -> list[Any]:
    """Group labels in reading order: the tidy table holds them as strings, and '10' must
    follow '9', not '1' (numbers numerically, then the rest alphabetically)."""

    def key(v: Any) -> tuple[int, float, str]:
        s = str(v)
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)

    return sorted(values, key=key)


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
    wide = rows.pivot_table(index="group", columns="metric", values="value", aggfunc="first")
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
    if group_by is not None and group_by in set(rows["group_by"]):
        rows = rows[rows["group_by"] == group_by]
    if rows.empty:
        return pd.DataFrame()
    rows = rows[rows["group_by"] == rows["group_by"].iloc[0]]
    rows = rows[rows["round"] == (round_ if round_ is not None else rows["round"].max())]
    table = rows.pivot_table(index="client", columns="group", values="value", aggfunc="first")
    table.columns.name = str(rows["group_by"].iloc[0]) if len(rows) else None
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


def summary_tables(metrics: pd.DataFrame, round_: int | None = None) -> list[Table]:
    """Rich tables: headline numbers, then per-group recall/coverage (and mode mass)."""
    if metrics.empty:
        return []
    scope = main_scope(metrics)
    rnd = round_ if round_ is not None else last_round(metrics, scope, "recall")
    h = headline(metrics, rnd)
    t = Table(
        title=f"{scope} evaluation at {'step' if scope == 'centralized' else 'round'} {rnd}"
        " (held-out real data)"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, value in headline_rows(h):
        t.add_row(label, value)
    tables = [t]
    wide = group_table(metrics, scope, rnd) if rnd is not None else pd.DataFrame()
    if len(wide):
        col = str(wide.index.name)
        pooled = metrics[(metrics["scope"] == "clients") & (metrics["metric"] == "eval.recall")]
        pooled = (
            pooled[pooled["round"] == pooled["round"].max()].set_index("group")["value"]
            if len(pooled)
            else pd.Series(dtype=float)
        )
        g = Table(
            title=f"per-group ({col}): kept = coverage ≥ {KEEP_COVERAGE:g}; recall alone can "
            "read high for a forgotten group (a few stray samples with large k-NN balls)"
        )
        cols = [c for c in PER_GROUP if c in wide.columns]
        g.add_column(col)
        for c in cols:
            g.add_column(c, justify="right")
        if len(pooled):
            g.add_column("clients' recall", justify="right")
        if "coverage" in wide.columns:
            g.add_column("kept")
        g.add_column("n real", justify="right")
        for grp in wide.index:
            cells = []
            for c in cols:
                v = float(wide.loc[grp, c])
                text = format_value(c, v)
                cells.append(f"[red]{text}[/red]" if c == "coverage" and not kept(v) else text)
            if len(pooled):
                cells.append(format_value("", float(pooled.get(grp, float("nan")))))
            if "coverage" in wide.columns:
                cells.append("yes" if kept(float(wide.loc[grp, "coverage"])) else "[red]no[/red]")
            g.add_row(str(grp), *cells, str(int(wide.loc[grp, "n"])))
        tables.append(g)
    return tables
