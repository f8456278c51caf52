"""Issue 30, item 5: does training-by-sampling keep a rare category? The bundled mixed table
(5 % islands region on client 0 of 5), FedAvg and UA-GAN + agnostic, each with and without
`gan.conditional`, beside the centralized twins, 3 seeds.

    for s in mixed mixed-conditional; do for seed in 0 1 2; do
      fedgan run scenarios/tables/$s.yaml --centralized seed=$seed --out runs/m30/twin; done; done
    for s in mixed mixed-conditional mixed-uagan mixed-uagan-conditional; do
      fedgan sweep scenarios/tables/$s.yaml --seeds 0-2 --sweep-dir runs/m30/fed-$s; done
    python benchmarks/tables_minority.py runs/m30

Every run's saved samples (`samples/round-*.npy`) are scored again here with today's evaluator
(`make_evaluator` on the run's own resolved scenario), so runs made by older code read through
one instrument. Prints per run and evaluation: the islands' coverage, mass ratio, declared
ratio and forgotten flag, the other regions' mean coverage, precision and mean column
fidelity (whole table, and the rows declaring the islands against the real islanders); then per
method the last evaluation as mean ± std over seeds and how many seeds keep
the islands (coverage ≥ 0.3).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

RARE = "islands"
KEEP = 0.3


def _evaluator(run: Path) -> tuple[Any, str, int]:
    from fedgan.simulator.evaluate import make_evaluator
    from fedgan.simulator.prepare import federated_data, prepare_data
    from fedgan.simulator.scenario import load

    s = load(run / "scenario.yaml")
    if s.federation is None:
        train, held = prepare_data(s)
        return make_evaluator(s, held, train), s.name, s.seed
    data = federated_data(s)
    return make_evaluator(s, data.held, data.train), s.name, s.seed


def score(run: Path) -> list[dict[str, float]]:
    """Per saved evaluation of `run`: the islands and the rest, read by today's evaluator."""
    ev, _, _ = _evaluator(run)
    out = []
    for f in sorted((run / "samples").glob("round-*.npy")):
        e = ev(np.load(f))
        r = {
            (row["metric"], str(row["group"])): row["value"]
            for row in e.rows
            if row.get("group_by") == "region"
        }
        rest = [g for g in ev.labels["region"].unique() if g != RARE]
        out.append(
            {
                "round": int(f.stem.split("-")[1]),
                "islands": r[("coverage", RARE)],
                "mass_ratio": r[("mass_ratio", RARE)],
                "declared": r.get(("declared_ratio", RARE), float("nan")),
                "forgotten": r[("forgotten", RARE)],
                "rest": float(np.mean([r[("coverage", str(g))] for g in rest])),
                "precision": e.summary["precision"],
                "fidelity": r.get(("fidelity", ""), float("nan")),
                "fid_islands": r.get(("fidelity", RARE), float("nan")),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="folder holding the runs (searched recursively)")
    args = ap.parse_args()
    runs = sorted(
        {p.parent for p in args.root.rglob("scenario.yaml") if (p.parent / "samples").is_dir()}
    )
    last: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    keys = (
        "islands",
        "mass_ratio",
        "declared",
        "forgotten",
        "rest",
        "precision",
        "fidelity",
        "fid_islands",
    )
    for run in runs:
        rows = score(run)
        if not rows:
            continue
        _, name, seed = _evaluator(run)
        print(f"\n{name} {run}")
        print("  round  " + "  ".join(f"{k:>10}" for k in keys))
        for r in rows:
            print(f"  {r['round']:5d}  " + "  ".join(f"{r[k]:10.3f}" for k in keys))
        last[name][seed] = rows[-1]
    print("\nlast evaluation, mean ± std over seeds (kept: islands coverage ≥ 0.3)")
    for name, by_seed in sorted(last.items()):
        rs = [by_seed[k] for k in sorted(by_seed)]
        cells = []
        for k in ("islands", "mass_ratio", "rest", "precision", "fidelity", "fid_islands"):
            v = np.array([r[k] for r in rs])
            cells.append(f"{k} {np.nanmean(v):.3f} ± {np.nanstd(v):.3f}")
        kept = sum(r["islands"] >= KEEP for r in rs)
        print(f"{name}: n={len(rs)} kept {kept}/{len(rs)}; " + "; ".join(cells))
    from fedgan.simulator.findings.bootstrap import paired_bootstrap

    print("\nconditional − unconditioned islands coverage, paired by seed (95 % bootstrap)")
    for name in sorted(last):
        twin = name.replace("-conditional", "")
        if "-conditional" not in name or twin not in last:
            continue
        seeds = sorted(set(last[name]) & set(last[twin]))
        a = [last[name][k]["islands"] for k in seeds]
        b = [last[twin][k]["islands"] for k in seeds]
        print(f"{name} − {twin}: {paired_bootstrap(a, b).cell()} (seeds {seeds})")


if __name__ == "__main__":
    main()
