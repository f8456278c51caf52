"""FedAvg against every fairness-aware rule on minority modes held by 2 of 20 clients.

    python benchmarks/fairness.py [--seeds 3] [--jobs 2] [--quick] [--out DIR]

A `fedgan sweep` of `scenarios/fairness/minority-2of20.yaml` over the strategies below (3 seeds),
then `fedgan compare`: worst-group recall and coverage next to global precision and recall, the
minimum mode mass ratio and the client spread, as mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent / "scenarios" / "fairness" / "minority-2of20.yaml"

STRATEGIES: list[dict[str, object]] = [
    {"name": "fedavg"},
    {"name": "coverage_weighted", "params": {"q": 2.0}},
    # QFedAvg's L = 1 / client_learning_rate must stay small against q‖Δw‖²/F, or the step
    # shrinks to nothing (25 Adam steps move ‖Δw‖² ≈ 10 here).
    {"name": "quality_qfedavg", "params": {"client_learning_rate": 50.0, "q": 1.0}},
    {"name": "agnostic", "params": {"step_size": 0.5}},
    {"name": "group_aware", "params": {"beta": 2.0, "metric": "coverage"}},
    {"name": "critic_swap"},
]

METRICS = [
    "recall.group_min", "coverage.group_min", "precision", "recall", "coverage",
    "min_mass_ratio", "modes_captured", "worst_client_recall", "client_recall_spread",
]


def main() -> None:
    from simulator.compare import compare
    from simulator.sweep import sweep

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 seed: a smoke test")
    ap.add_argument("--out", default="", help="sweep parent folder (default: a temporary one)")
    a = ap.parse_args()
    extra = ["federation.rounds=2", "evaluation.every=1"] if a.quick else []
    from simulator.scenario import load

    base = load(BASE, extra)
    res = sweep(base, {"strategy": STRATEGIES}, list(range(1 if a.quick else a.seeds)),
                out_dir=a.out or tempfile.mkdtemp(prefix="fedgan-fairness-"), jobs=a.jobs)
    table = compare([res.path], metrics=METRICS)
    cols = [c for c in table.columns if c.endswith(".mean")]
    print(f"\nsweep folder: {res.path}\n")
    print("| strategy | " + " | ".join(c.removesuffix(".mean") for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    labels = {str(s_["name"]): f"{s_['name']} {s_.get('params', '')}".strip() for s_ in STRATEGIES}
    for _, row in table.iterrows():
        cells = [f"{row[c]:.3f} ± {row[c.removesuffix('.mean') + '.std']:.3f}" for c in cols]
        label = labels.get(str(row["strategy.name"]), row["config"])
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
