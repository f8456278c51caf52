"""Centralized runs of the default recipe: ms per step before and after the hand-batched step.

    .venv/bin/python benchmarks/centralized.py [--steps 1500] [--every 500] [--repeats 3]
        [--scenario scenarios/ring-centralized.yaml]

Each run is `simulator.api.run` of the scenario (3×128 MLPs, batch 128, non-saturating loss +
R1) in a fresh process with one torch thread, as `fedgan run` runs it; "before" sets
`FEDGAN_FAST_MLP=0` (the reference `GAN.step` through torch.func, and glibc's default
allocator settings: the code path of the engines before the hand-batched step), "after" is the
default. The two alternate `--repeats` times. Printed per run: the training time per step (the
run's "train" phases in `timings.csv`, evaluation excluded), the whole run's wall time, and the
ratio before / after of each pair; the last evaluation's recall, coverage, precision, density
and modes captured of the two paths are compared, beside the same difference between seeds 0
and 1 (float32 rounds differently on the two paths, and a GAN run amplifies it as another seed
would).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import json, sys, time, torch
torch.set_num_threads(1)
from fedgan.simulator.api import run
t0 = time.perf_counter()
res = run(sys.argv[1], sys.argv[2:-1], out_dir=sys.argv[-1])
wall = time.perf_counter() - t0
import pandas as pd
t = pd.read_csv(res.path / "timings.csv")
m = res.metrics
last = m[(m["round"] == m["round"].max()) & (m["group"] == "")]
final = {r.metric: r.value for r in last.itertuples() if r.metric in
         ("recall", "coverage", "precision", "density", "modes_captured")}
print(json.dumps({"train": float(t[t["phase"] == "train"]["seconds"].sum()), "wall": wall,
                  "final": final}))
"""


def one(scenario: str, overrides: list[str], fast: bool, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if not fast:
        env["FEDGAN_FAST_MLP"] = "0"
    done = subprocess.run(
        [sys.executable, "-c", CODE, scenario, *overrides, str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False,
    )
    if done.returncode:
        print(done.stderr[-3000:])
        raise SystemExit("run failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/ring-centralized.yaml")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    overrides = [f"train.steps={args.steps}", f"evaluation.every={args.every}"]
    print(f"{args.scenario}, {args.steps} steps, evaluation every {args.every}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| repetition | before: ms/step | after: ms/step | before / after | whole run before "
          "/ after (s) | load |")
    print("| ---: | ---: | ---: | ---: | --- | ---: |")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-central-") as tmp:
        for rep in range(args.repeats):
            b = one(args.scenario, overrides, False, Path(tmp) / f"before{rep}")
            a = one(args.scenario, overrides, True, Path(tmp) / f"after{rep}")
            mb, ma = b["train"] / args.steps * 1e3, a["train"] / args.steps * 1e3
            ratios.append(mb / ma)
            print(f"| {rep} | {mb:.2f} | {ma:.2f} | {mb / ma:.2f}× | {b['wall']:.1f} / "
                  f"{a['wall']:.1f} | {os.getloadavg()[0]:.1f} |")
        # The yardstick for that difference: the same run with the next seed.
        other = one(args.scenario, [*overrides, "seed=1"], True, Path(tmp) / "seed1")
    gap = sum(abs(a["final"][k] - b["final"][k]) for k in b["final"])
    noise = sum(abs(a["final"][k] - other["final"][k]) for k in b["final"])
    print(f"median before / after: {statistics.median(ratios):.2f}×; final metrics "
          f"{json.dumps(a['final'])}, Σ abs. difference before vs after {gap:.3f} (seed 0 vs "
          f"seed 1: {noise:.3f})")


if __name__ == "__main__":
    main()
