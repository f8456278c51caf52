"""Compare runs: headline metrics as mean ± std over seeds, one row per configuration.

Runs that differ only in `seed` (and `name` / `description`, which change no result) are one
configuration; each row is labelled by the resolved keys that differ between configurations.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.store import Run, load_run
from simulator.summary import headline

DEFAULT_METRICS = [
    "recall",
    "coverage",
    "recall.group_min",
    "coverage.group_min",
    "groups_kept",
    "min_mass_ratio",
    "worst_client_recall",
    "client_recall_spread",
    "modes_captured",
    "recall.difference",
]
LABELS = {
    "recall.group_min": "worst-group recall",
    "coverage.group_min": "worst-group coverage",
    "groups_kept": "groups kept",
    "min_mass_ratio": "min mode mass ratio",
    "worst_client_recall": "worst-client recall",
    "client_recall_spread": "client recall spread",
    "modes_captured": "modes captured",
    "recall.difference": "recall gap",
}
IGNORED = ("seed", "name", "description")
"""Scenario keys that never change a result's distribution: not part of a configuration."""
MAX_LABEL_KEYS = 4
"""Differing keys named in a row's label; the table has a column for every one of them."""


class CompareError(ValueError):
    """Nothing to compare, or a metric that no run has."""


def run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders behind `paths`: a run folder is itself; a sweep folder gives its finished
    runs (from sweep.json); any other folder is searched for both. Duplicates are dropped."""
    from simulator.sweep import MANIFEST, read_manifest

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

    rows = []
    for members in groups.values():
        c = configs[members[0]]
        row: dict[str, Any] = {k: _show(c.get(k, "—")) for k in differ}
        label = ", ".join(f"{k}={row[k]}" for k in differ[:MAX_LABEL_KEYS])
        if len(differ) > MAX_LABEL_KEYS:  # e.g. federated vs centralized: every federation key
            label += f" (+{len(differ) - MAX_LABEL_KEYS} more keys)"
        row["config"] = label or str(runs[members[0]].scenario.get("name", "all"))
        row["n_runs"] = len(members)
        row["seeds"] = ",".join(str(runs[i].scenario.get("seed", "?")) for i in members)
        for m in metrics:
            values = pd.Series([heads[i].get(m, float("nan")) for i in members], dtype=float)
            row[f"{m}.mean"] = values.mean()
            row[f"{m}.std"] = values.std()  # ddof=1: the spread a new seed would show
        row["runs"] = ";".join(str(dirs[i]) for i in members)
        rows.append(row)
    labels = [r["config"] for r in rows]
    for r in rows:  # a shortened label must still tell its row apart: then name every key
        if labels.count(r["config"]) > 1 and differ:
            r["config"] = ", ".join(f"{k}={r[k]}" for k in differ)
    return pd.DataFrame(rows)


def compare_figure(table: pd.DataFrame, path: str | Path) -> Path:
    """One bar panel per metric (mean ± std over seeds, one bar per configuration) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    metrics = [c.removesuffix(".mean") for c in table.columns if c.endswith(".mean")]
    if not metrics:
        raise CompareError("the table has no metric columns to draw")
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 0.45 * len(table) * rows + 2.2), squeeze=False
    )
    labels = [str(v) for v in table["config"]]
    y = list(range(len(table)))
    for ax, m in zip(axes.flat, metrics, strict=False):
        ax.barh(
            y,
            table[f"{m}.mean"],
            xerr=table[f"{m}.std"].fillna(0.0),
            color="#4c72b0",
            ecolor="#333333",
            capsize=3,
        )
        ax.set_title(m, fontsize=10)
        ax.set_yticks(y, labels if ax in axes[:, 0] else [""] * len(y), fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
