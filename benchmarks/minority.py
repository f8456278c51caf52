"""Minority modes on one client: FedAvg (both networks) vs generator-only vs the IID twin.

    python benchmarks/minority.py [--seeds 3] [--jobs 2] [--quick]

Runs `scenarios/minority/{fedavg,generator-only,iid}.yaml` (modes 0 and 1, 2 % each, live on
client 0 of 10) and the matched centralized twin, and prints, at the last evaluation, the global
recall and coverage of each minority mode, the mean over the majority modes, the minimum mode mass
ratio, modes captured and % high quality, as mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "minority"
RUNS = {
    "FedAvg, both networks": ("fedavg.yaml", False),
    "generator-only (private critics)": ("generator-only.yaml", False),
    "IID twin (FedAvg)": ("iid.yaml", False),
    "centralized twin": ("fedavg.yaml", True),
}


def one(args: tuple[str, str, bool, int, list[str], str]) -> tuple[str, dict[str, float]]:
    import torch
    from fedgan.simulator.api import run
    from fedgan.simulator.summary import headline

    name, file, centralized, seed, extra, out = args
    torch.set_num_threads(1)
    res = run(ROOT / file, [f"seed={seed}", *extra], out_dir=out, centralized=centralized)
    m = res.metrics
    scope = "centralized" if centralized else "global"
    last = m[(m["scope"] == scope)]
    last = last[last["round"] == last["round"].max()]
    per = last[(last["group_by"] == "mode")].pivot_table(
        index="group", columns="metric", values="value", aggfunc="first")
    h = headline(m)
    row = {
        "recall[0]": per.loc["0", "recall"], "recall[1]": per.loc["1", "recall"],
        "coverage[0]": per.loc["0", "coverage"], "coverage[1]": per.loc["1", "coverage"],
        "recall[2-7]": float(per.loc[[str(g) for g in range(2, 8)], "recall"].mean()),
        "min_mass_ratio": h.get("min_mass_ratio", float("nan")),
        "modes_captured": h.get("modes_captured", float("nan")),
        "high_quality_rate": h.get("high_quality_rate", float("nan")),
    }
    return name, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed: a smoke test")
    a = ap.parse_args()
    extra = ["federation.rounds=2", "evaluation.every=1"] if a.quick else []
    seeds = 1 if a.quick else a.seeds
    out = tempfile.mkdtemp(prefix="fedgan-minority-")
    jobs = [(n, f, c, s, extra, out) for n, (f, c) in RUNS.items() for s in range(seeds)]
    results: dict[str, list[dict[str, float]]] = {}
    with ProcessPoolExecutor(a.jobs) as pool:
        for name, row in pool.map(one, jobs):
            results.setdefault(name, []).append(row)
            text = ", ".join(f"{k} {v:.3f}" for k, v in row.items())
            print(f"  done: {name}: {text}", flush=True)
    cols = list(next(iter(results.values()))[0])
    print(f"\nminority modes 0 and 1 (2 % each) on client 0 of 10; {seeds} seed(s), mean ± std\n")
    print("| run | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, rows in results.items():
        cells = []
        for c in cols:
            v = np.array([r[c] for r in rows], dtype=float)
            scale, fmt = (100.0, ".1f") if c == "high_quality_rate" else (1.0, ".2f")
            cells.append(f"{np.nanmean(v) * scale:{fmt}} ± {np.nanstd(v) * scale:{fmt}}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
