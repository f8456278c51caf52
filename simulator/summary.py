"""Text summaries of a run's metrics table (the tables `fedgan run` and `inspect` print), and the
per-group views — every grouping with its gaps and its minority and rare groups — that the
report shows too."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fedgan.simulator.layout import Column, fit_tables
from fedgan.simulator.messages import LOCAL
from fedgan.simulator.metrics.forgetting import FORGOTTEN_MASS_RATIO, KEEP_COVERAGE, kept
from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text

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
    ("coverage.group_min", "worst-group coverage"),
    ("groups_kept", f"groups kept (coverage ≥ {KEEP_COVERAGE:g})"),
    ("groups_forgotten", f"groups forgotten (mass < {FORGOTTEN_MASS_RATIO:g} × share)"),
    ("coverage.difference", "coverage gap (max − min)"),
    ("frechet_distance", "Fréchet distance (classifier features)"),
]


PER_GROUP = ("coverage", "mass", "declared_share", "precision")
"""The per-group columns the printed tables (run summary, report) show. Not recall: its balls
come from the generated samples, so a few strays with large balls can make a forgotten group
read high (it stays in the metrics table and `inspect --by metric`)."""
GAP_METRICS = ("coverage", "precision")
"""Metrics whose gaps across groups (worst group, min, max − min, min / max) are shown. Not
recall, for the reason of `PER_GROUP`: item 11's UA-GAN read worst-group recall 0.94 with both
minority modes at mass 0.000 and coverage 0.00 (a "worst group" that was not the worst)."""
MINORITY_WEIGHT = 0.05
"""A group of at most this true weight, and below an even share, is a minority (the default of
`evaluation.minority_share`)."""
SEPARATOR = "|"
"""Joins an intersectional grouping's labels ("F|north"), as `simulator.metrics.groups`."""


def group_order(values: Iterable[Any]) -> list[Any]:
    """Group labels in reading order: the tidy table holds them as strings, and '10' must
    follow '9', not '1' (numbers numerically, then the rest alphabetically); intersectional
    labels ("F|10") part by part.

    >>> group_order(["10", "2", "1", "b", "a"])
    ['1', '2', '10', 'a', 'b']
    >>> group_order(["M|10", "F|2", "F|10"])
    ['F|2', 'F|10', 'M|10']
    """

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
    rows = rows[rows["metric"].isin(["recall", "eval.coverage"])]
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


def fidelity_table(metrics: pd.DataFrame, scope: str, round_: int, group_by: str) -> pd.DataFrame:
    """A table's per-column fidelity at one evaluation (`metrics.column_fidelity`): a row per
    column (and `all`, the mean over columns), a column for the whole table ("all rows") and one
    per group of `group_by`; empty when the evaluation has no fidelity rows (not a table)."""
    rows = metrics[
        (metrics["scope"] == scope)
        & (metrics["round"] == round_)
        & (metrics["group_by"] == group_by)
        & metrics["metric"].astype(str).str.startswith("fidelity")
    ]
    if rows.empty:
        return pd.DataFrame()
    column = rows["metric"].astype(str).str.removeprefix("fidelity").str.removeprefix(".")
    wide = rows.assign(column=column.replace("", "all")).pivot_table(
        index="column", columns="group", values="value", aggfunc="first", dropna=False, sort=False
    )
    groups = [g for g in group_order(wide.columns) if g != ""]
    wide = wide[["", *groups]].rename(columns={"": "all rows"})
    wide.columns.name = group_by
    return wide


def client_group_table(
    metrics: pd.DataFrame,
    round_: int | None = None,
    metric: str = "eval.coverage",
    group_by: str | None = None,
) -> pd.DataFrame:
    """Each client's `metric` (default: its coverage of each group it holds), per group
    (clients × groups), at one evaluation (default: the last); NaN where not measured. Empty
    when there are none."""
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


def headline_rows(
    h: dict[str, float], forgotten: Iterable[str] | None = None
) -> list[tuple[str, str]]:
    """(label, value) lines of a headline (`headline`), in the order the tables print them;
    `forgotten`: the primary grouping's forgotten groups, named after their count."""
    names = list(forgotten or [])
    out = []
    for key, label in HEADLINE:
        if key in h:
            value = format_value(key, h[key])
            if key == "modes_captured" and "modes_total" in h:
                value += f" / {h['modes_total']:.0f}"
            if key in ("groups_kept", "groups_forgotten") and "groups_total" in h:
                value += f" / {h['groups_total']:.0f}"
            if key == "groups_forgotten" and names:
                value += ": " + ", ".join(names)
            out.append((label, value))
    if "worst_client" in h and "worst_client_served" in h:
        out.append(
            (
                "worst-served client (share of its points in groups not forgotten)",
                f"{h['worst_client']:.0f} ({h['worst_client_served']:.2f})",
            )
        )
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
    first_group = primary_grouping(metrics, scope, rnd)
    for r in rows.itertuples():
        if r.group == "" and (r.group_by in ("", first_group)):
            out.setdefault(str(r.metric), float(r.value))
    cov = rows[(rows["group_by"] == first_group) & (rows["group"] != "")]
    cov = cov[cov["metric"] == "coverage"]["value"]
    if first_group and len(cov):
        out["groups_kept"] = float(sum(kept(float(v)) for v in cov))
        out["groups_total"] = float(len(cov))
    lost = forgotten_sets(metrics, scope, rnd)
    if first_group in lost:
        out["groups_forgotten"] = float(len(lost[first_group]))
    worst = worst_client(metrics, rnd, first_group)
    if worst is not None:
        out["worst_client"] = float(worst[0])
        out["worst_client_served"] = worst[1]
    return out


# ---- who is forgotten: the readers every view uses ---------------------------------------------
def forgotten_sets(metrics: pd.DataFrame, scope: str, round_: int | None) -> dict[str, list[str]]:
    """{grouping: its forgotten groups (labels as stored, in `group_order`)} at one evaluation,
    read from the `forgotten` rows the evaluation wrote with the registry's rule
    (`simulator.metrics.registry.RULES["forgotten"]`). Every view — the tables, `inspect`,
    the headline, `compare`, the report, the findings — reads "who is forgotten" here."""
    if round_ is None:
        return {}
    rows = metrics[
        (metrics["scope"] == scope)
        & (metrics["round"] == round_)
        & (metrics["metric"] == "forgotten")
        & (metrics["group"] != "")
    ]
    out: dict[str, list[str]] = {}
    for grouping in dict.fromkeys(rows["group_by"]):
        part = rows[rows["group_by"] == grouping]
        out[str(grouping)] = group_order(str(g) for g in part.loc[part["value"] >= 0.5, "group"])
    return out


def served_shares(metrics: pd.DataFrame, round_: int, grouping: str) -> dict[int, float]:
    """{client: share of its held-out points in groups of `grouping` not forgotten} at one
    evaluation (the `eval.served_share` rows; the registry's `served` rule)."""
    rows = metrics[
        (metrics["scope"] == "client")
        & (metrics["round"] == round_)
        & (metrics["metric"] == "eval.served_share")
        & (metrics["group_by"] == grouping)
    ]
    return {int(r.client): float(r.value) for r in rows.itertuples()}


def worst_client(
    metrics: pd.DataFrame, round_: int | None, grouping: str
) -> tuple[int, float] | None:
    """(client, served share) of the worst-served client of `grouping` at one evaluation (the
    `worst_client` row the registry's rule wrote), None without one."""
    if round_ is None:
        return None
    rows = metrics[
        (metrics["scope"] == "clients")
        & (metrics["round"] == round_)
        & (metrics["metric"] == "worst_client")
        & (metrics["group_by"] == grouping)
    ]
    if rows.empty:
        return None
    client = int(rows["value"].iloc[0])
    return client, served_shares(metrics, round_, grouping).get(client, float("nan"))


def holders(metrics: pd.DataFrame, round_: int, grouping: str) -> dict[str, list[int]]:
    """{group: the clients that hold it} (those with a per-client coverage row of the group)."""
    rows = metrics[
        (metrics["scope"] == "client")
        & (metrics["round"] == round_)
        & (metrics["metric"] == "eval.coverage")
        & (metrics["group_by"] == grouping)
        & (metrics["group"] != "")
    ]
    out: dict[str, list[int]] = {}
    for r in rows.itertuples():
        out.setdefault(str(r.group), []).append(int(r.client))
    return {g: sorted(set(c)) for g, c in out.items()}


def story(metrics: pd.DataFrame, round_: int | None = None) -> str:
    """What happened at one evaluation, in words written from the numbers: the forgotten
    groups of every grouping and the clients that hold them, the worst-served client and
    the precision. The opening sentence of the report and the line under the run's tables."""
    scope = main_scope(metrics)
    rnd = round_ if round_ is not None else last_round(metrics, scope, "recall")
    if rnd is None:
        return "No evaluation yet."
    h = headline(metrics, rnd)
    word = "step" if scope == "centralized" else "round"
    lost = forgotten_sets(metrics, scope, rnd)
    parts = []
    for grouping, groups in lost.items():
        if not groups:
            parts.append(f"no {grouping} is forgotten")
            continue
        held = holders(metrics, rnd, grouping)
        by_holders: dict[tuple[int, ...], list[str]] = {}
        for g in groups:  # groups held by the same clients are named together
            by_holders.setdefault(tuple(held.get(g, [])), []).append(g)
        named = []
        for who, gs in by_holders.items():
            where = f" (held by {clients_words(who)})" if who else ""
            named.append(f"{', '.join(gs)}{where}")
        parts.append(f"{grouping} {'; '.join(named)} forgotten")
    text = (
        f"At {word} {rnd}: "
        + (
            "; ".join(parts)
            if parts
            else "no verdict on forgotten groups (no `forgotten` rows: a run folder from "
            "before fedgan recorded them)"
        )
        + "."
    )
    if "worst_client" in h:
        text += (
            f" Worst-served client: {h['worst_client']:.0f} "
            f"({h['worst_client_served']:.0%} of its held-out points in groups not forgotten)."
        )
    if "precision" in h:
        text += f" Precision {h['precision']:.3f}, coverage {h.get('coverage', float('nan')):.3f}."
    private = privacy_sentence(metrics, rnd)
    return text + (" " + private if private else "")


def clients_words(who: Sequence[int]) -> str:
    """Clients named for a sentence: 'client 3', 'clients 0, 4, 7'; many as runs of ids
    ('clients 0–18, 20–99'), or only their number when the runs are many too."""
    who = sorted(who)
    if len(who) == 1:
        return f"client {who[0]}"
    if len(who) <= 6:
        return "clients " + ", ".join(map(str, who))
    runs: list[tuple[int, int]] = []
    for c in who:
        if runs and c == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], c)
        else:
            runs.append((c, c))
    if len(runs) > 4:
        return f"{len(who)} clients"
    return "clients " + ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in runs)


def privacy_sentence(metrics: pd.DataFrame, round_: int | None = None) -> str:
    """The run's privacy spent by `round_` (default: the last with a row), in words — ε at δ
    from the `privacy.*` rows, beside what Flower's no-amplification accountant would report;
    "" for a run without privacy."""
    rows = metrics[metrics["metric"].astype(str).str.startswith("privacy.")]
    rows = rows[rows["scope"].isin(["global", "centralized"])]
    if rows.empty:
        return ""
    rnd = int(rows["round"].max()) if round_ is None else min(round_, int(rows["round"].max()))
    at = {str(r.metric): float(r.value) for r in rows[rows["round"] == rnd].itertuples()}
    if "privacy.epsilon" not in at:
        return ""
    text = f"Privacy spent: ε = {at['privacy.epsilon']:.3g}"
    if "privacy.delta" in at:
        text += f" at δ = {at['privacy.delta']:.2g}"
    if "privacy.epsilon_flower" in at:
        text += (
            f" (Flower's accountant, without amplification by sampling, would report "
            f"{at['privacy.epsilon_flower']:.3g})"
        )
    return text + "."


def primary_grouping(metrics: pd.DataFrame, scope: str, round_: int | None) -> str:
    """The grouping the headline speaks of: the first one the evaluation wrote ("" if none)."""
    rows = metrics[(metrics["scope"] == scope) & (metrics["round"] == round_)]
    return str(next((g for g in rows["group_by"] if g), ""))


def format_value(key: str, v: float) -> str:
    if math.isnan(v):
        return "n/a"
    counts = (
        "modes_captured",
        "modes_total",
        "groups_kept",
        "groups_total",
        "groups_forgotten",
        "worst_client",
    )
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
    from fedgan.simulator.data import load_dataset

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
    (`PER_GROUP`; `mass`: the share of generated samples inside the group's k-NN balls),
    `forgotten` (the evaluation's `forgotten` rows: the registry's rule), `n` (held-out
    points), `weight` (true weight, or the share of the held-out set), `minority` (weight ≤
    `evaluation.minority_share` and below an even share 1/G) and `rare` (fewer held-out points
    than `min_group_size`: values that swing widely). `gaps`: index `GAP_METRICS`, columns
    worst (group), group_min, difference, ratio.
    """

    grouping: str
    table: pd.DataFrame
    gaps: pd.DataFrame
    min_group_size: int
    weight_source: str
    minority_share: float = MINORITY_WEIGHT

    @property
    def forgotten(self) -> list[Any]:
        """The forgotten groups, in table order."""
        t = self.table
        return [g for g in t.index if bool(t.loc[g, "forgotten"])]

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
    minority_share = float(evaluation.get("minority_share", MINORITY_WEIGHT))
    weights = true_weights(scenario)
    lost = forgotten_sets(metrics, scope, round_)
    views = []
    for grouping in groupings(metrics, scope, round_):
        wide = group_table(metrics, scope, round_, grouping)
        if wide.empty:
            continue
        gone = set(lost.get(grouping, []))
        wide["forgotten"] = [str(g) in gone for g in wide.index]
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
        wide["minority"] = (w <= minority_share + 1e-12) & (w < even - 1e-12)
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
        views.append(GroupView(grouping, wide, gaps, min_size, source, minority_share))
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
        f"minority (*): true weight ≤ {view.minority_share:.0%} and below an even share "
        f"(1/{len(t)}; weights: {view.weight_source})"
        + (f": {', '.join(minority)}" if minority else ": none")
    ]
    if "declared_share" in t.columns:
        # Two groupings of the same samples, named apart: one must not read as the other.
        lines.append(
            "declared: share of the samples whose generated value is the group — what the "
            "rows say, not where they lie; forgotten reads mass (where they lie) only"
        )
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


HEADERS = {"mass": "mass", "declared_share": "declared"}
"""Short headers of the per-group columns."""


def group_view_rows(view: GroupView) -> tuple[list[str], list[list[str]], list[bool]]:
    """(header, rows of plain text, marked?) of a view's per-group table: what the CLI and the
    report both show (the CLI adds colour, the report a CSS class)."""
    t = view.table
    cols = [c for c in PER_GROUP if c in t.columns]
    header = [view.grouping, *(HEADERS.get(c, c) for c in cols)]
    header += ["kept"] if "coverage" in t.columns else []
    header += ["forgotten", "n real", "weight", "note"]
    rows, marked = [], []
    for g in t.index:
        cells = [str(g), *(_cell(c, t.loc[g, c]) for c in cols)]
        if "coverage" in t.columns:
            cells.append("yes" if kept(float(t.loc[g, "coverage"])) else "no")
        cells.append("yes" if t.loc[g, "forgotten"] else "no")
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
            if h == "forgotten" and r[i] == "yes":
                cells[i] = "[bold red]yes[/bold red]"
        if mark:
            cells[0] = f"[bold yellow]{escape(r[0] + _marks(view, g))}[/bold yellow]"
        styled.append(cells)
    columns = [Column(header[0], "left"), *(Column(h) for h in header[1:])]
    title = (
        f"per-group ({view.grouping}): mass = share of the samples inside the group's k-NN "
        f"balls; forgotten = mass < {FORGOTTEN_MASS_RATIO:g} × its share of the on-support "
        f"samples; kept = coverage ≥ {KEEP_COVERAGE:g}"
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
    """Client × group coverage of every grouping the clients report — each client's coverage
    of the groups it holds (radii from the pooled held-out set, the global evaluation's
    samples) — with each client's served share, the worst-served client marked."""
    out = []
    for view in views:
        table = client_group_table(metrics, round_, "eval.coverage", view.grouping)
        if table.empty:
            continue
        shares = served_shares(metrics, round_, view.grouping)
        worst = worst_client(metrics, round_, view.grouping)
        marked = set(map(str, view.marked))
        lost = set(map(str, view.forgotten))
        columns = [Column("client", "left")] + [
            Column(f"{g}{'*' if str(g) in marked else ''}{'!' if str(g) in lost else ''}")
            for g in table.columns
        ]
        columns.append(Column("served"))
        rows = []
        for c in table.index:
            label = f"{c} (worst)" if worst is not None and worst[0] == c else str(c)
            cells = [_cell("", table.loc[c, g]) for g in table.columns]
            rows.append([label, *cells, _cell("", shares.get(int(c), float("nan")))])
        out += fit_tables(
            f"client × {view.grouping} coverage (round {round_}; radii from the pooled held-out "
            "set, the global evaluation's samples; served = share of the client's held-out "
            "points in groups not forgotten)",
            columns,
            rows,
            width,
            caption="*: a minority or rare group; !: forgotten; n/a: the client holds none of it",
        )
    return out


HIDDEN_CLIENT_PREFIXES = (LOCAL,)
"""Per-client statistics `inspect --by client` does not list: `local.*`, each client's score of
the generator it received on its own few held-out points with radii and samples of that
size — the fairness weightings' input, not a view of who is served (recall from a few
points' k-NN balls reads high for a forgotten group). They stay in metrics.csv."""


def client_view_tables(
    metrics: pd.DataFrame,
    round_: int,
    scenario: Mapping[str, Any] | None,
    width: int,
) -> list[RenderableType]:
    """`inspect --by client`: who is served at one round — per client its held-out points,
    served share (of every grouping), the forgotten groups it holds, the worst-served client
    marked — then the client × group coverage, then every client's other statistics
    (training means, bytes, its coverage; not `HIDDEN_CLIENT_PREFIXES`)."""
    scope = main_scope(metrics)
    word = "step" if scope == "centralized" else "round"
    out: list[RenderableType] = []
    lost = forgotten_sets(metrics, scope, round_)
    sub = metrics[(metrics["scope"] == "client") & (metrics["round"] == round_)]
    for grouping, groups in lost.items():
        shares = served_shares(metrics, round_, grouping)
        if not shares:
            continue
        worst = worst_client(metrics, round_, grouping)
        held = holders(metrics, round_, grouping)
        totals = sub[(sub["metric"] == "eval.coverage") & (sub["group_by"] == "")]
        n_held = dict(zip(totals["client"], totals["n"], strict=True))
        rows = []
        for c in sorted(shares):
            mine = [g for g in groups if c in held.get(g, [])]
            label = f"{c} (worst)" if worst is not None and worst[0] == c else str(c)
            rows.append(
                [
                    label,
                    str(int(n_held.get(c, 0))),
                    _cell("", shares[c]),
                    ", ".join(mine) or "none",
                ]
            )
        out += fit_tables(
            f"who is served by {grouping} at {word} {round_}: served = share of the client's "
            "held-out points in groups not forgotten; worst = the smallest share",
            [
                Column("client", "left"),
                Column("held-out"),
                Column("served"),
                Column("holds forgotten", "left"),
            ],
            rows,
            width,
        )
    out += client_tables(metrics, round_, group_views(metrics, scope, round_, scenario), width)
    stats = sub[(sub["group"] == "") & (sub["group_by"] == "")]
    stats = stats[~stats["metric"].str.startswith(HIDDEN_CLIENT_PREFIXES)]
    if not stats.empty:
        table = stats.pivot_table(index="metric", columns="client", values="value", aggfunc="first")
        out += fit_tables(
            f"every client's statistics at {word} {round_} (train.*: means over its local "
            "steps; eval.coverage: its held-out points covered, radii from the pooled held-out "
            "set; local.* scores, the weightings' input, are in metrics.csv)",
            [Column("metric", "left"), *(Column(f"client {int(c)}") for c in table.columns)],
            [
                [escape(str(m)), *format_numbers(table.loc[m, c] for c in table.columns)]
                for m in table.index
            ],
            width,
        )
    return out


def summary_tables(
    metrics: pd.DataFrame,
    round_: int | None = None,
    scenario: Mapping[str, Any] | None = None,
    width: int = 100,
) -> list[RenderableType]:
    """Rich tables within `width`: what happened (`story`), the headline numbers, then every
    grouping's per-group table (recall, coverage, precision, mass, kept, forgotten, weight,
    marks) and gaps, and the client × group coverage with each client's served share."""
    if metrics.empty:
        return []
    scope = main_scope(metrics)
    rnd = round_ if round_ is not None else last_round(metrics, scope, "recall")
    h = headline(metrics, rnd)
    word = "step" if scope == "centralized" else "round"
    tables = fit_tables(
        f"{scope} evaluation at {word} {rnd} (held-out real data)",
        [Column("metric", "left"), Column("value")],
        [
            [escape(label), escape(value)]
            for label, value in headline_rows(
                h, forgotten_sets(metrics, scope, rnd).get(primary_grouping(metrics, scope, rnd))
            )
        ],
        width,
    )
    if rnd is not None:
        views = group_views(metrics, scope, rnd, scenario)
        for view in views:
            tables += view_tables(view, width)
        tables += client_tables(metrics, rnd, views, width)
        tables.append(Text(story(metrics, rnd), style="bold"))
    return tables
