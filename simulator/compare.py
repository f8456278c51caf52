"""Compare runs: headline metrics as mean ± std over seeds, one row per configuration.

Runs that differ only in `seed` (and `name` / `description`, which change no result) are one
configuration; each row is labelled by the resolved keys that differ between configurations,
in short form (`strategy=group_aware β=2`), and a centralized run beside federated ones by
what it is ("centralized twin" when it is the matched twin of one of them).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fedgan.simulator.store import Run, load_run
from fedgan.simulator.summary import forgotten_sets, group_order, headline, last_round, main_scope

DEFAULT_METRICS = [
    "recall",
    "coverage",
    "coverage.group_min",
    "groups_kept",
    "groups_forgotten",
    "min_mass_ratio",
    "worst_client_served",
    "modes_captured",
    "coverage.difference",
]
LABELS = {
    "coverage.group_min": "worst-group coverage",
    "groups_kept": "groups kept",
    "min_mass_ratio": "min mode mass ratio",
    "groups_forgotten": "groups forgotten",
    "worst_client_served": "worst-served client's share",
    "modes_captured": "modes captured",
    "coverage.difference": "coverage gap",
}
IGNORED = ("seed", "name", "description")
"""Scenario keys that never change a result's distribution: not part of a configuration."""
SHORT_KEYS = {
    "strategy.name": "strategy",
    "strategy.critic.name": "critic_strategy",
    "federation.federate": "federate",
    "federation.protocol": "protocol",
    "federation.clients_per_round": "per_round",
    "partition.name": "partition",
    "partition.n_clients": "clients",
    "gan.lipschitz.name": "lipschitz",
    "gan.g_opt.lr": "g_lr",
    "gan.d_opt.lr": "d_lr",
    "gan.g_opt.name": "g_opt",
    "gan.d_opt.name": "d_opt",
    "gan.generator.widths": "g_widths",
    "gan.critic.widths": "d_widths",
    "engine.name": "engine",
    "data.dataset": "dataset",
}
"""Short names of common scenario keys in row labels; any other key is named by its last
part (its parent for `.name`), in Greek where the papers write it so (`GREEK`)."""
GREEK = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "lam": "λ",
    "mu": "μ",
    "proximal_mu": "μ",
    "eta": "η",
    "tau": "τ",
    "sigma": "σ",
}
CENTRALIZED_TWIN = "centralized twin"


class CompareError(ValueError):
    """Nothing to compare, or a metric that no run has."""


def run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders behind `paths`: a run folder is itself; a sweep folder gives its finished
    runs (from sweep.json); any other folder is searched for both. Duplicates are dropped."""
    from fedgan.simulator.sweep import MANIFEST, read_manifest

    out: list[Path] = []

    def walk(p: Path) -> None:
        if (p / MANIFEST).is_file():
            for e in read_manifest(p)["combinations"]:
                if e.get("status") == "done":
                    out.append(p / e["folder"] / e["run"])
        elif (p / "scenario.yaml").is_file():
            out.append(p)
        elif p.is_dir():
            for child in sorted(c for c in p.iterdir() if c.is_dir()):
                walk(child)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CompareError(f"{p} does not exist")
        before = len(out)
        walk(p)
        if len(out) == before:
            raise CompareError(f"{p} holds no run folder (no scenario.yaml or sweep.json)")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested scenario → {'dotted.key': JSON text}; JSON text makes lists and None comparable."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def _config(run: Run, by: Sequence[str] | None) -> dict[str, str]:
    flat = flatten(run.scenario)
    if by:
        return {k: flat.get(k, "—") for k in by}
    return {k: v for k, v in flat.items() if k not in IGNORED}


def _show(text: str) -> str:
    """JSON text back to what one would type on the command line ('both', 0.1, true)."""
    v = json.loads(text) if text != "—" else text
    return v if isinstance(v, str) else json.dumps(v)


def _short_value(text: str) -> str:
    """A value as a label shows it: 2.0 → 2, [128, 128] → [128,128], None → none."""

    def short(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, list):
            return "[" + ",".join(short(x) for x in v) + "]"
        if v is None:
            return "none"
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True)

    return short(json.loads(text))


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """{dotted key: its short name} for the keys of one table; keys whose short names would
    coincide keep their full dotted path."""

    def short(key: str) -> str:
        if key in SHORT_KEYS:
            return SHORT_KEYS[key]
        parts = key.split(".")
        last = parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]
        return GREEK.get(last, last)

    names = {k: short(k) for k in keys}
    counts = Counter(names.values())
    return {k: (n if counts[n] == 1 else k) for k, n in names.items()}


def _label(config: dict[str, str], keys: Sequence[str], names: dict[str, str]) -> str:
    """`name=value` of each of `keys` that this configuration sets (absent keys and empty
    parameter dicts — another strategy's parameters — say nothing about it)."""
    return " ".join(
        f"{names[k]}={_short_value(config[k])}"
        for k in keys
        if config.get(k, "—") not in ("—", "{}")
    )


def _is_centralized(config: dict[str, str]) -> bool:
    return config.get("federation") == "null"


def _twin(scenario: dict[str, Any]) -> dict[str, str] | None:
    """The configuration of a federated scenario's matched centralized twin (None when the
    scenario no longer validates here, e.g. a plug-in that does not import)."""
    from fedgan.simulator.scenario import ScenarioError, validate

    try:
        twin = validate(scenario).centralized_twin()
    except (ScenarioError, ValueError):
        return None
    flat = flatten(twin.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if k not in IGNORED}


def labels(configs: Sequence[dict[str, str]], scenarios: Sequence[dict[str, Any]]) -> list[str]:
    """A short label per configuration: the keys that differ, short (`strategy=group_aware
    β=2`). Federated and centralized configurations are told apart by kind first —
    "federated (fedavg)", "centralized twin" (the matched twin of one of the federated ones),
    "centralized" — then by the keys that differ within their kind."""
    cen = [_is_centralized(c) for c in configs]
    out = []
    for kind in (False, True):
        members = [i for i, c in enumerate(cen) if c == kind]
        keys = list(dict.fromkeys(k for i in members for k in configs[i]))
        differ = [k for k in keys if len({configs[i].get(k, "—") for i in members}) > 1]
        names = short_keys(differ)
        for i in members:
            out.append((i, _label(configs[i], differ, names)))
    by_index = dict(out)
    if not any(cen) or all(cen):
        return [by_index[i] for i in range(len(configs))]
    twins = [_twin(scenarios[i]) for i, c in enumerate(cen) if not c]
    result = []
    for i, c in enumerate(configs):
        rest = by_index[i]
        if cen[i]:
            head = CENTRALIZED_TWIN if c in twins else "centralized"
        else:
            strategy = _short_value(c.get("strategy.name", '"?"'))
            head = f"federated ({strategy})"
            rest = " ".join(p for p in rest.split(" ") if not p.startswith("strategy="))
        result.append(f"{head} {rest}".strip())
    return result


def compare(
    paths: Iterable[str | Path],
    metrics: Sequence[str] | None = None,
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per configuration: the differing keys, `config` (a label), `n_runs`, `seeds`,
    and `<metric>.mean` / `<metric>.std` (sample std, ddof=1; NaN for a single run) of each
    metric of `simulator.summary.headline` at each run's last evaluation. Default metrics
    that no run has (e.g. client metrics of centralized runs) are left out; a requested one
    that no run has raises CompareError.

    `by` groups by these dotted scenario keys only (pooling runs that differ elsewhere).
    """
    explicit = bool(metrics)
    metrics = list(metrics or DEFAULT_METRICS)
    dirs = run_dirs(paths)
    if not dirs:
        raise CompareError("no finished runs to compare")
    runs = [load_run(d) for d in dirs]
    configs = [_config(r, by) for r in runs]
    heads = [headline(r.metrics) for r in runs]
    unknown = [m for m in metrics if not any(m in h for h in heads)]
    if not explicit:  # the defaults fit every kind of run: centralized ones have no clients
        metrics = [m for m in metrics if m not in unknown]
    elif unknown:
        known = sorted({k for h in heads for k in h})
        raise CompareError(f"no run has metric(s) {unknown}; available: {', '.join(known)}")

    keys = list(dict.fromkeys(k for c in configs for k in c))
    differ = list(by) if by else [k for k in keys if len({c.get(k, "—") for c in configs}) > 1]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(json.dumps(c, sort_keys=True), []).append(i)
    firsts = [members[0] for members in groups.values()]
    if by:
        names = short_keys(differ)
        texts = [_label(configs[i], differ, names) for i in firsts]
    else:
        texts = labels([configs[i] for i in firsts], [runs[i].scenario for i in firsts])

    rows = []
    for members, text in zip(groups.values(), texts, strict=True):
        c = configs[members[0]]
        row: dict[str, Any] = {k: _show(c.get(k, "—")) for k in differ}
        row["config"] = text or str(runs[members[0]].scenario.get("name", "all"))
        row["n_runs"] = len(members)
        row["seeds"] = ",".join(str(runs[i].scenario.get("seed", "?")) for i in members)
        for m in metrics:
            values = pd.Series([heads[i].get(m, float("nan")) for i in members], dtype=float)
            row[f"{m}.mean"] = values.mean()
            row[f"{m}.std"] = values.std()  # ddof=1: the spread a new seed would show
            row[f"{m}.values"] = values.tolist()  # per seed, in `seeds` order: the figure's dots
        row["forgotten"] = forgotten_text([runs[i].metrics for i in members])
        row["runs"] = ";".join(str(dirs[i]) for i in members)
        rows.append(row)
    seen = Counter(r["config"] for r in rows)
    for r in rows:  # a short label must still tell its row apart: then name every key in full
        if seen[r["config"]] > 1 and differ:
            r["config"] = " ".join(f"{k}={r[k]}" for k in differ)
    return pd.DataFrame(rows)


def forgotten_text(metrics: Sequence[pd.DataFrame]) -> str:
    """Who the runs of one configuration forget at their last evaluation, from the one
    definition (`simulator.summary.forgotten_sets`): "mode 0 (3 of 3), 1 (2 of 3)" — each
    forgotten group with the number of runs that forget it; "none" when no run does."""
    counts: Counter[tuple[str, str]] = Counter()
    for m in metrics:
        scope = main_scope(m)
        lost = forgotten_sets(m, scope, last_round(m, scope, "recall"))
        if not lost:  # a run folder written before the forgotten rows existed: no verdict
            return "n/a (no forgotten rows: a run from before fedgan recorded them)"
        counts.update((grouping, g) for grouping, groups in lost.items() for g in groups)
    if not counts:
        return "none"
    n = len(metrics)
    parts = []
    for grouping in dict.fromkeys(k[0] for k in counts):
        groups = group_order(g for (gb, g) in counts if gb == grouping)
        shown = ", ".join(
            g + (f" ({counts[(grouping, g)]} of {n})" if n > 1 else "") for g in groups
        )
        parts.append(f"{grouping} {shown}")
    return "; ".join(parts)


RATES = (
    "precision",
    "recall",
    "coverage",
    "expected_coverage",
    "high_quality_rate",
    "off_support_rate",
    "worst_client_served",
)
"""Headline metrics that are shares: they live in [0, 1] (so do per-group minima, gaps and
ratios of rates)."""
NON_NEGATIVE = (
    "density",
    "modes_captured",
    "modes_total",
    "groups_kept",
    "groups_total",
    "groups_forgotten",
    "min_mass_ratio",
    "reverse_kl",
    "frechet_distance",
)
"""Counts and other metrics with no upper bound: ≥ 0."""


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: [0, 1] for rates and their group minima, differences and
    ratios; [0, ∞) for counts, density and divergences; unbounded for anything else."""
    base, _, stat = metric.rpartition(".")
    if metric in RATES or (stat in ("group_min", "difference", "ratio") and base in RATES):
        return 0.0, 1.0
    if metric in NON_NEGATIVE or stat in ("group_min", "difference", "ratio"):
        return 0.0, math.inf
    return -math.inf, math.inf


def error_bars(mean: Sequence[float], std: Sequence[float], metric: str) -> np.ndarray:
    """Asymmetric ± std error bars [2, n] (below, above) clipped to `metric_range`: a recall
    of 0.95 ± 0.1 reaches 1, not 1.05; a missing std draws no bar."""
    lo, hi = metric_range(metric)
    m = np.asarray(mean, dtype=float)
    sd = np.nan_to_num(np.asarray(std, dtype=float), nan=0.0)
    below = np.clip(np.minimum(sd, m - lo), 0.0, None)
    above = np.clip(np.minimum(sd, hi - m), 0.0, None)
    return np.nan_to_num(np.stack([below, above]), nan=0.0)


def compare_plot(table: pd.DataFrame) -> Any:
    """The `compare --figure` plot as a matplotlib Figure (no pyplot, no global state): one
    bar panel per metric — mean per configuration, ± std clipped to the metric's range
    (`error_bars`), one dot per seed (`<metric>.values`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [c.removesuffix(".mean") for c in table.columns if c.endswith(".mean")]
    if not metrics:
        raise CompareError("the table has no metric columns to draw")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4.2 * cols, 0.45 * len(table) * rows + 2.2), layout="tight")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    labels = [str(v) for v in table["config"]]
    y = np.arange(len(table))
    for ax, m in zip(axes.flat, metrics, strict=False):
        means = table[f"{m}.mean"].to_numpy(dtype=float)
        ax.barh(
            y,
            means,
            xerr=error_bars(means, table[f"{m}.std"], m),
            color="#a6bddb",
            ecolor="#333333",
            capsize=3,
        )
        if f"{m}.values" in table.columns:
            for yi, vals in zip(y, table[f"{m}.values"], strict=True):
                v = np.asarray(vals, dtype=float)
                v = v[np.isfinite(v)]
                # Seeds spread a little around the bar's centre line so equal values stay visible.
                jitter = np.linspace(-0.2, 0.2, len(v)) if len(v) > 1 else np.zeros(len(v))
                ax.plot(v, yi + jitter, "o", ms=4, color="#08306b", zorder=3, label="seed")
        lo, hi = metric_range(m)
        if math.isfinite(hi):
            ax.set_xlim(lo, hi * 1.02)
        elif math.isfinite(lo):
            ax.set_xlim(left=lo)
        ax.set_title(LABELS.get(m, m), fontsize=10)
        ax.set_yticks(y, labels if ax in axes[:, 0] else [""] * len(y), fontsize=9)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    return fig


def compare_figure(table: pd.DataFrame, path: str | Path) -> Path:
    """`compare_plot` written as a PNG to `path`."""
    out = Path(path)
    compare_plot(table).savefig(out, dpi=110)
    return out
