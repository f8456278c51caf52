"""Server-held generators (MD-GAN, UA-GAN) against FedAvg and the matched centralized twin.

    python benchmarks/protocols.py [--seeds 3] [--jobs 2] [--only dirichlet,minority] [--quick]

Runs `scenarios/protocols/<setting>-<run>.yaml` for every setting — `dirichlet` (the
quickstart's data, Dirichlet 0.3 over 10 clients), `minority` (modes 0 and 1 on client 0 of
10) and `2of20` (minority modes on 2 of 20 clients, Dirichlet 0.1 elsewhere), with the runs of
`SETTINGS` (fedavg, mdgan, uagan; `-coverage`: a `coverage_weighted` weighting; `mdgan-noswap`:
MD-GAN without critic swaps, an ablation) — and each one's centralized twin (same data and
GAN, rounds × local steps generator steps), one torch thread per process, and prints per
setting the mean ± std over seeds, at the last evaluation, of precision, modes captured, % high
quality, minimum mode mass ratio, the coverage of each minority mode, the seeds that keep both
minority modes (coverage ≥ 0.3 each), MB sent to and from the clients and seconds per run.
Every run's numbers are appended to `--out`'s results.jsonl as it finishes, and a rerun with
the same `--out` skips the runs already there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "protocols"
SETTINGS = {
    "dirichlet": ["fedavg", "mdgan", "mdgan-noswap", "uagan", "uagan-coverage", "centralized"],
    "minority": [
        "fedavg",
        "mdgan",
        "uagan",
        "uagan-coverage",
        "uagan-agnostic",  # added after the fairness benchmark: see the scenario's header
        "mdgan-coverage",
        "centralized",
    ],
    "2of20": ["fedavg", "mdgan", "uagan", "centralized"],
}
MINORITY = ("0", "1")
KEPT = 0.3  # simulator.metrics.diagnosis.kept: coverage of the group's held-out points ≥ 0.3


def _file(setting: str, run: str) -> Path:
    """The scenario of a run (the twin is the FedAvg scenario's, run centralized)."""
    return ROOT / f"{setting}-{'fedavg' if run == 'centralized' else run}.yaml"


def one(args: tuple[str, str, int, list[str], str]) -> dict[str, Any]:
    import torch
    from fedgan.simulator.api import run

    setting, name, seed, extra, out = args
    torch.set_num_threads(1)
    centralized = name == "centralized"
    t0 = time.perf_counter()
    res = run(_file(setting, name), [f"seed={seed}", *extra], out_dir=out, centralized=centralized)
    seconds = time.perf_counter() - t0
    m = res.metrics
    scope = "centralized" if centralized else "global"
    at = m[m["scope"] == scope]
    at = at[at["round"] == at["round"].max()]
    total = at[at["group_by"].fillna("") == ""].set_index("metric")["value"]
    per = at[(at["group_by"] == "mode") & (at["metric"] == "coverage")].set_index("group")["value"]
    fed = m[m["scope"] == "global"]
    row = {
        "setting": setting,
        "run": name,
        "seed": seed,
        "precision": float(total["precision"]),
        "modes_captured": float(total["modes_captured"]),
        "high_quality": 100.0 * float(total["high_quality_rate"]),
        "min_mass_ratio": float(total["min_mass_ratio"]),
        **{f"coverage[{g}]": float(per[g]) for g in MINORITY},
        "kept_both": float(all(per[g] >= KEPT for g in MINORITY)),
        "MB_down": float(fed.loc[fed["metric"] == "fed.bytes_down", "value"].sum()) / 1e6,
        "MB_up": float(fed.loc[fed["metric"] == "fed.bytes_up", "value"].sum()) / 1e6,
        "seconds": seconds,
        "load": os.getloadavg()[0],
        "path": str(res.path),
    }
    return row


COLUMNS = [
    "precision",
    "modes_captured",
    "high_quality",
    "min_mass_ratio",
    "coverage[0]",
    "coverage[1]",
    "kept_both",
    "MB_down",
    "MB_up",
    "seconds",
]


def table(rows: list[dict[str, Any]], setting: str, runs: list[str]) -> str:
    """One markdown table of a setting: mean ± std over seeds; `kept_both` as a count."""
    lines = [
        "| run | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name in runs:
        mine = [r for r in rows if r["setting"] == setting and r["run"] == name]
        if not mine:
            continue
        cells = []
        for c in COLUMNS:
            v = np.array([r[c] for r in mine], dtype=float)
            if c == "kept_both":
                cells.append(f"{int(v.sum())} of {len(v)}")
                continue
            fmt = {"high_quality": ".1f", "MB_down": ".1f", "MB_up": ".1f", "seconds": ".0f"}
            fmt = fmt.get(c, ".2f")
            cells.append(f"{np.nanmean(v):{fmt}} ± {np.nanstd(v):{fmt}}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="settings (comma-separated), default all")
    ap.add_argument("--runs", default="", help="runs (comma-separated), default all")
    ap.add_argument("--out", default="runs/benchmark-protocols", help="run folders, results")
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed: a smoke test")
    a = ap.parse_args()
    extra = ["federation.rounds=2", "evaluation.every=1"] if a.quick else []
    seeds = 1 if a.quick else a.seeds
    settings = {k: v for k, v in SETTINGS.items() if not a.only or k in a.only.split(",")}
    out = Path(a.out) / ("quick" if a.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    have = {(r["setting"], r["run"], r["seed"]) for r in done}
    jobs = [
        (setting, name, seed, extra, str(out))
        for setting, names in settings.items()
        for name in names
        if not a.runs or name in a.runs.split(",")
        for seed in range(seeds)
        if (setting, name, seed) not in have
    ]
    t0 = time.perf_counter()
    print(f"{len(jobs)} runs to do ({len(have)} done), {a.jobs} at a time, load {os.getloadavg()}")
    with ProcessPoolExecutor(a.jobs) as pool:
        for row in pool.map(one, jobs):
            done.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            text = ", ".join(f"{k} {row[k]:.2f}" for k in COLUMNS)
            print(f"  done: {row['setting']} {row['run']} seed {row['seed']}: {text}", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s for {len(jobs)} runs; load {os.getloadavg()}")
    for setting, names in settings.items():
        print(f"\n{setting}: {seeds} seed(s), mean ± std, at the last evaluation\n")
        print(table(done, setting, names))


if __name__ == "__main__":
    main()
