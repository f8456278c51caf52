"""Every fairness rule × every protocol it applies to, against FedAvg, at the regime.

    python benchmarks/fairness.py [--seeds 5] [--jobs 2] [--quick] [--csv FILE]

The quickstart (`scenarios/quickstart.yaml`): the 8-ring's modes 0 and 1 (5 % each) live on
client 0 of 5 only, the other six modes on every client; every client every round, 400 rounds ×
10 local steps = 4,000 generator steps — the 5 % regime (findings item 0), where FedAvg learns
the majority and forgets the minority — with the quickstart's GAN (MLPs 2×128). Methods:
FedAvg with `fedavg`, `coverage_weighted`, `quality_qfedavg`, `agnostic`, `group_aware`,
`critic_swap`; MD-GAN and UA-GAN unweighted and with every weighting; the matched centralized
twin; and, outside the planned comparisons (marked †), every protocol + `group_dro` (issue 27;
UA-GAN + group_dro is the setting README recommends). A method the code under test cannot run
(a protocol not merged yet) is skipped with what `fedgan validate` says of it. 5 seeds, paired
by seed.

For each method against FedAvg: the paired-by-seed bootstrap (10,000 resamples of the seeds)
95 % interval of the mean difference in minority coverage (modes 0 and 1) and in worst-group
coverage (the lowest per-mode coverage; item 10's preregistration named worst-group recall,
which reads high for a forgotten mode — docs/guide/metrics.md). Multiple comparisons:
Bonferroni within each metric over the 13 planned comparisons — "higher"/"lower" only when
the interval at 1 − 0.05/13 excludes 0, otherwise "indistinguishable". Preregistered in
docs/prereg-findings-10.md.

Cost (measured 2026-12-02, quiet machine): 44–78 CPU s a run (one torch thread),
`quality_qfedavg` 605 s before the frozen-heap fix (`server/heap.py`) → 75 runs in 60 min on
2 cores; `--quick` (MLPs 2×16,
2 rounds × 5 local steps, 2 seeds) ≈ 1 min, a smoke test whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedgan.simulator.findings.batch import Job, Outcome, run_jobs  # noqa: E402
from fedgan.simulator.findings.common import md_table, mean_std  # noqa: E402
from fedgan.simulator.findings.fedmethods import (  # noqa: E402
    FEDAVG_RULES,
    Method,
    against,
    every_method,
    group_methods,
    keeps_all,
    minority_coverage,
    score,
    skip_note,
    unavailable,
)

BASE = ROOT / "scenarios" / "quickstart.yaml"
MINORITY = ("0", "1")
FEDAVG = Method("fedavg")
TWIN = Method("centralized")
METHODS = every_method(tuple(FEDAVG_RULES))
"""FedAvg first; 13 methods to compare with it (the preregistered family)."""
ADDED = group_methods()
"""Issue 27's rows (each protocol + group_dro): run and shown, marked †, outside the 13 planned
comparisons — their intervals are read at the same level, the family is not loosened."""
QUICK = (
    "gan.generator.widths=[16, 16]",
    "gan.critic.widths=[16, 16]",
    "federation.rounds=2",
    "federation.local_steps=5",
    "evaluation.every=2",
    "data.n_samples=2000",
    "evaluation.n_samples=500",
)
METRICS: dict[str, Callable[[Outcome], float]] = {
    "minority coverage": lambda o: minority_coverage(o, MINORITY),
    "worst-group coverage": lambda o: score(o, "coverage.group_min"),
}


def _cost_rank(m: Method) -> int:
    """Where a method's runs go in the queue: 0 for the longest (measured, see the docstring)."""
    if m.rule == "quality_qfedavg":
        return 0
    return {"mdgan": 1, "uagan": 1, "fedavg": 2}.get(m.protocol, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny GAN, 2 rounds, 2 seeds")
    ap.add_argument("--csv", default="", help="also write one row per run here")
    a = ap.parse_args()
    seeds = list(range(2 if a.quick else a.seeds))
    small = QUICK if a.quick else ()
    t0 = time.perf_counter()

    skipped: dict[Method, str] = {}
    jobs = []
    # The longest runs first, so the pool of processes ends evenly: quality_qfedavg (over 10×
    # a FedAvg run, measured), then the server-held protocols (~1.4×), then FedAvg, the twin.
    longest_first = sorted([*METHODS, *ADDED, TWIN], key=_cost_rank)
    for m in longest_first:
        why = unavailable(BASE, (*m.overrides, *small, "seed=0"), m.centralized)
        if why:
            skipped[m] = why
            continue
        jobs += [
            Job(str(BASE), (*m.overrides, *small, f"seed={s}"), (m.label, s), m.centralized)
            for s in seeds
        ]
    out = run_jobs(jobs, a.jobs)
    res: dict[Method, list[Outcome]] = {}
    by_label = {m.label: m for m in [*METHODS, *ADDED, TWIN]}
    for o in out:
        res.setdefault(by_label[str(o.key[0])], []).append(o)

    fedavg = res[FEDAVG]
    family = len(METHODS) - 1
    others = [*METHODS[1:], *ADDED, TWIN]
    comps = against(fedavg, {m: res[m] for m in others if m in res}, METRICS, family)
    by = {(c.method, c.metric): c for c in comps}

    rows = []
    for m in [TWIN, *METHODS, *ADDED]:
        label = f"{m.label} †" if m in ADDED else m.label
        os_ = res.get(m)
        if os_ is None:
            rows.append([label, "skipped (below)"] + [""] * 9)
            continue
        cells = [
            label,
            mean_std([METRICS["minority coverage"](o) for o in os_], ".2f"),
            f"{sum(keeps_all(o, MINORITY) for o in os_)} of {len(os_)}",
            mean_std([METRICS["worst-group coverage"](o) for o in os_], ".2f"),
        ]
        for metric in METRICS:
            c = by.get((m, metric))
            # The twin is outside the family: its difference is shown for scale only.
            word = "" if m == TWIN else f" {c.word}" if c else ""
            cells.append("" if c is None else f"{c.ci95.cell()}{word}")
        cells += [
            mean_std([score(o, "precision") for o in os_], ".2f"),
            mean_std([score(o, "modes_captured") for o in os_], ".1f"),
            mean_std([score(o, "min_mass_ratio") for o in os_], ".2f"),
            mean_std([o.bytes / 1e6 for o in os_], ".1f")
            if all(o.bytes == o.bytes for o in os_)
            else "n/a",
            mean_std([o.cpu_seconds for o in os_], ".0f"),
        ]
        rows.append(cells)
    header = [
        "method",
        "minority coverage",
        "seeds keeping both",
        "worst-group coverage",
        "Δ minority coverage vs FedAvg [95 %]",
        "Δ worst-group coverage vs FedAvg [95 %]",
        "precision",
        "modes (of 8)",
        "min mode mass ratio",
        "MB (down + up)",
        "CPU s/run",
    ]
    print(
        f"\n{len(seeds)} seeds{' (quick: smoke values that mean nothing)' if a.quick else ''}; "
        f"Δ: paired-by-seed bootstrap, mean [95 % interval]; higher / lower / indistinguishable "
        f"at Bonferroni's 1 − 0.05/{family} over the {family} comparisons per metric (the "
        "twin's difference is outside that family, shown for scale; † marks issue 27's "
        "group-level rows, added after the preregistration and outside the family too).\n"
    )
    print(md_table(header, rows))
    if skipped:
        print("\nSkipped, with what `fedgan validate` says of them: " + skip_note(skipped))
    print(f"\n{len(out)} runs in {time.perf_counter() - t0:.0f} s with {a.jobs} processes.")
    if a.csv:
        with open(a.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["method", "seed", *METRICS, "precision", "bytes", "cpu_seconds"])
            for m, os_ in res.items():
                for o in os_:
                    w.writerow(
                        [m.label, o.key[-1], *(v(o) for v in METRICS.values())]
                        + [score(o, "precision"), o.bytes, o.cpu_seconds]
                    )


if __name__ == "__main__":
    main()
