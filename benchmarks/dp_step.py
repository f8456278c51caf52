"""What DP-SGD costs the hand-batched MLP step: a DP step against the ordinary one, one process.

    .venv/bin/python benchmarks/dp_step.py [--steps N] [--repeats N] [--threads N]
        [--sampling poisson|fixed]

The quickstart's GAN (`scenarios/quickstart.yaml` through `prepare.make_gan`: 2-D data,
widths [128, 128], batch 128, relu, non-saturating, Adam; its R1 control, λ 0.1) on its five
clients' training sets (client 0 ≈ 1,800 points, the others ≈ 1,150), stacked as the
vectorized engine runs them (`batched.train_batched` → `fastmlp`). Four variants: with and
without R1, each with `gan.dp` unset and set (clip 1, noise multiplier 1, `--sampling`). Each
call trains `--steps` generator steps (default 64: one noise block, its drawing included —
the DP batches and the per-parameter noise are drawn there); warm-up, then the variants
interleaved, `--repeats` times; the median per step (CPU time of this process, and wall time).
The last two lines are the ratios, DP / non-DP, of the median CPU time per step (the two
before them: of the fastest repeats, for a machine that other jobs share).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedgan.simulator import prepare, scenario  # noqa: E402
from fedgan.simulator.gan import batched, fastmlp  # noqa: E402
from fedgan.simulator.gan.state import DPSGD  # noqa: E402
from fedgan.simulator.gan.train import GAN  # noqa: E402


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "simulator/gan"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out + (" (+ uncommitted changes in simulator/gan)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def variants(sampling: str) -> dict[str, tuple[GAN, torch.Tensor, list[int]]]:
    s = scenario.load(ROOT / "scenarios" / "quickstart.yaml")
    data = prepare.federated_data(s)
    base = prepare.make_gan(s, data)
    c = base.config
    assert c.lipschitz == "r1" and c.batch_size == 128, c
    sizes = [len(ix) for ix in data.client_train]
    xs = [torch.as_tensor(data.train.X[ix], dtype=torch.float32) for ix in data.client_train]
    padded = batched.pad_data(xs)
    dp = DPSGD(clip=1.0, noise_multiplier=1.0, sampling=sampling)  # type: ignore[arg-type]
    out = {}
    for r1 in (False, True):
        cfg = c if r1 else dataclasses.replace(c, lipschitz="none", lipschitz_params={})
        for name, d in (("non-dp", None), ("dp", dp)):
            gan = GAN(dataclasses.replace(cfg, dp=d), data_dim=2)
            assert fastmlp.plan(gan) is not None, fastmlp.why_not(gan)
            out[f"{name} {'with' if r1 else 'without'} R1"] = (gan, padded, sizes)
    return out


def runner(gan: GAN, data: torch.Tensor, sizes: list[int], steps: int) -> Callable[[], object]:
    state = batched.stack([gan.init_state(0)] * len(sizes))

    def run() -> object:
        gens = [torch.Generator().manual_seed(c) for c in range(len(sizes))]
        return batched.train_batched(gan, state, data, sizes, gens, steps)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sampling", choices=("poisson", "fixed"), default="poisson")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"commit {commit()}; torch {torch.__version__}, {os.cpu_count()} CPU cores, ")
    print(f"{args.threads} torch thread(s); {args.steps} steps a call, {args.repeats} repeats")
    vs = variants(args.sampling)
    sizes = next(iter(vs.values()))[2]
    print(f"clients' training points: {sizes}; dp: clip 1, σ 1, {args.sampling} sampling")
    fns = {k: runner(g, x, n, args.steps) for k, (g, x, n) in vs.items()}
    for fn in fns.values():  # warm-up
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[k].append((time.process_time() - c0) / args.steps)
            wall[k].append((time.perf_counter() - w0) / args.steps)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    for k in fns:
        w = statistics.median(wall[k])
        print(
            f"{k:22s} {1e3 * med[k]:7.2f} ms CPU / step (fastest {1e3 * min(cpu[k]):.2f}), "
            f"{1e3 * w:7.2f} ms wall"
        )
    for pen in ("without", "with"):  # the fastest repeats: less sensitive to a busy machine
        ratio = min(cpu[f"dp {pen} R1"]) / min(cpu[f"non-dp {pen} R1"])
        print(f"fastest repeats, dp/non-dp {pen} R1: {ratio:.2f}x")
    for pen in ("without", "with"):
        ratio = med[f"dp {pen} R1"] / med[f"non-dp {pen} R1"]
        print(f"dp/non-dp {pen} R1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
