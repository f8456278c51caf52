"""Centralized ring: every standard objective × Lipschitz control, several seeds.

    python benchmarks/methods.py [--seeds 3] [--steps 3000] [--jobs 2] [--quick]

Runs `scenarios/ring-centralized.yaml` (3,000 steps by default) with the overrides below,
one process per run (one torch thread each), and prints modes captured / % high quality (3σ) /
min mode mass ratio / recall / coverage / seconds as mean ± std over seeds — laid out like the
VEEGAN/PacGAN tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

BASE = Path(__file__).resolve().parent.parent / "scenarios" / "ring-centralized.yaml"

NONE = "gan.lipschitz={name: none}"
METHODS: dict[str, list[str]] = {
    "non-saturating + R1 (default)": [],
    "saturating": ["gan.objective=saturating", NONE],
    "non-saturating": [NONE],
    "non-saturating + SN (Adam 2e-4, β (0, 0.9))": [
        "gan.lipschitz={name: spectral_norm}",
        "gan.g_opt={lr: 2.0e-4, betas: [0.0, 0.9]}",
        "gan.d_opt={lr: 2.0e-4, betas: [0.0, 0.9]}",
    ],
    "WGAN (clip 0.01, RMSprop 5e-5, n_critic 5)": [
        "gan.objective=wasserstein",
        "gan.lipschitz.name=weight_clip",
        "gan.lipschitz.params={c: 0.01}",
        "gan.n_critic=5",
        "gan.g_opt={name: rmsprop, lr: 5.0e-5}",
        "gan.d_opt={name: rmsprop, lr: 5.0e-5}",
    ],
    "WGAN-GP (λ 0.1, n_critic 5)": [
        "gan.objective=wasserstein",
        "gan.lipschitz.params={lam: 0.1}",
        "gan.n_critic=5",
        "gan.g_opt={lr: 1.0e-4, betas: [0.5, 0.9]}",
        "gan.d_opt={lr: 1.0e-4, betas: [0.5, 0.9]}",
    ],
    "hinge + SN (SN-GAN: Adam 2e-4, β (0, 0.9), n_critic 5)": [
        "gan.objective=hinge",
        "gan.lipschitz={name: spectral_norm}",
        "gan.n_critic=5",
        "gan.g_opt={lr: 2.0e-4, betas: [0.0, 0.9]}",
        "gan.d_opt={lr: 2.0e-4, betas: [0.0, 0.9]}",
    ],
    "least squares": ["gan.objective=least_squares", NONE],
    "f-GAN reverse KL": ["gan.objective=reverse_kl", NONE],
    "f-GAN KL": ["gan.objective=kl", NONE],
}

COLUMNS = ["modes_captured", "high_quality_rate", "min_mass_ratio", "recall", "coverage"]


def one(args: tuple[str, list[str], int, int, str]) -> tuple[str, int, dict[str, float]]:
    import torch
    from fedgan.simulator.centralized import run_centralized
    from fedgan.simulator.scenario import load

    name, overrides, seed, steps, out = args
    torch.set_num_threads(1)
    s = load(
        BASE, [*overrides, f"seed={seed}", f"train.steps={steps}", f"evaluation.every={steps}"]
    )
    t0 = time.perf_counter()
    res = run_centralized(s, out)
    summary = res.last.summary if res.last is not None else {}  # None: the generator diverged
    row = {k: summary.get(k, float("nan")) for k in COLUMNS}
    row["seconds"] = time.perf_counter() - t0
    return name, seed, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="substring of the method names to run")
    ap.add_argument("--quick", action="store_true", help="200 steps, 1 seed: a smoke test")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps = 1, 200
    out = tempfile.mkdtemp(prefix="fedgan-methods-")
    jobs = [
        (n, o, seed, a.steps, out)
        for n, o in METHODS.items()
        if a.only in n
        for seed in range(a.seeds)
    ]
    results: dict[str, list[dict[str, float]]] = {}
    with ProcessPoolExecutor(a.jobs) as pool:
        for name, seed, row in pool.map(one, jobs):
            results.setdefault(name, []).append(row)
            print(
                f"  done: {name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
                flush=True,
            )
    print(
        f"\n8-ring (r=2, σ=0.02), centralized, {a.steps} generator steps, {a.seeds} seeds, "
        "mean ± std; 2,500 samples vs 4,000 held-out points, k=5\n"
    )
    print("n/a: no high-quality sample, or a diverged generator.\n")
    print("| method | modes (of 8) | % high quality | min mass ratio | recall | coverage | s/run |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        cells = []
        for k in [*COLUMNS, "seconds"]:
            v = np.array([r[k] for r in rows], dtype=float)
            scale = 100.0 if k == "high_quality_rate" else 1.0
            fmt = (
                ".1f"
                if k in ("modes_captured", "high_quality_rate")
                else (".0f" if k == "seconds" else ".3f")
            )
            bad = int(np.isnan(v).sum())
            cell = (
                f"{np.nanmean(v) * scale:{fmt}} ± {np.nanstd(v) * scale:{fmt}}"
                if bad < len(v)
                else "n/a"
            )
            cells.append(cell + (f" ({bad} n/a)" if bad else ""))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
