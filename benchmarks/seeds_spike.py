"""Spike: do S seeds of a centralized scenario, batched like clients, beat `sweep --jobs 2`?

    .venv/bin/python benchmarks/seeds_spike.py [--steps 3000] [--every 500] [--seeds 5]
        [--repeats 2] [--threads 1,2] [--scenario scenarios/ring-centralized.yaml]

(A) `simulator.sweep.sweep(..., seeds=0..S-1, jobs=2)`: S ordinary centralized runs, two worker
processes with one torch thread each (what `fedgan sweep --seeds 0-4 --jobs 2` does), wall time
of the whole call (process start-up, data, training, evaluation, run folders).

(B) the same S seeds in this one process, batched: each seed's data, initial state and noise
stream exactly as its own `run_centralized` makes them, the S states stacked and trained by
`batched.train_batched` in `--every`-step chunks (the hand-batched MLP step), and every
`--every` steps each seed's Lipschitz estimates, samples and `Evaluator` call, as in the
centralized loop (no run folders written), with each of `--threads` torch threads (default 1:
on a loaded machine two OpenMP threads spin against the other jobs and run ~5× slower).

The two alternate `--repeats` times; the ratios are A / B of the wall times. Also printed: the
training time per step, and the largest parameter difference between seed 0 batched and seed 0
run alone on the same path (`GAN.train`), to check the batched seeds are the same runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedgan.simulator.centralized import make_evaluator
from fedgan.simulator.gan import batched  # noqa: E402
from fedgan.simulator.gan.diagnostics import lipschitz_metrics  # noqa: E402
from fedgan.simulator.gan.train import GAN  # noqa: E402
from fedgan.simulator.prepare import prepare_data
from fedgan.simulator.scenario import Scenario, load  # noqa: E402
from fedgan.simulator.seeding import derive_seed, torch_generator  # noqa: E402
from fedgan.simulator.sweep import sweep  # noqa: E402


def swept(s: Scenario, seeds: list[int], out: Path) -> float:
    t0 = time.perf_counter()
    res = sweep(s, {}, seeds=seeds, out_dir=out, jobs=2)
    took = time.perf_counter() - t0
    if res.failed:
        raise SystemExit(f"sweep runs failed: {res.failed}")
    return took


def batched_seeds(s: Scenario, seeds: list[int], threads: int) -> tuple[float, float, GAN, list]:
    """Wall seconds of the whole batched run, its training seconds, and the final states."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        runs = [s.model_copy(update={"seed": k}) for k in seeds]
        prepared = [prepare_data(r) for r in runs]
        train0 = prepared[0][0]
        gan = GAN(s.gan.config(), train0.X.shape[1], train0.image_shape)
        evaluators = [make_evaluator(r, held) for r, (_, held) in zip(runs, prepared, strict=True)]
        datas = [torch.as_tensor(tr.X) for tr, _ in prepared]
        sizes = [len(x) for x in datas]
        x = batched.pad_data(datas)
        state = batched.stack([gan.init_state(derive_seed(k, "init")) for k in seeds])
        gens = [torch_generator(k, "train") for k in seeds]
        total, every = s.train.steps, s.evaluation.every
        trained = 0.0
        while state.step < total:
            n = min(every, total - state.step)
            t1 = time.perf_counter()
            state, _ = batched.train_batched(gan, state, x, sizes, gens, n, total_steps=total)
            trained += time.perf_counter() - t1
            for k, one, data, ev in zip(
                seeds, batched.unstack(state), datas, evaluators, strict=True
            ):
                lipschitz_metrics(gan, one, data, torch_generator(k, "lipschitz", one.step))
                sample_gen = torch_generator(k, "sample", one.step)
                ev(gan.sample(one, s.evaluation.n_samples, sample_gen).numpy())
        return time.perf_counter() - t0, trained, gan, batched.unstack(state)
    finally:
        torch.set_num_threads(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="scenarios/ring-centralized.yaml")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    torch.set_num_threads(1)
    s = load(args.scenario, [f"train.steps={args.steps}", f"evaluation.every={args.every}"])
    seeds = list(range(args.seeds))
    print(f"{args.seeds} seeds of {args.scenario}, {args.steps} steps, evaluation every "
          f"{args.every}; {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f}")
    cols = " | ".join(f"batched, {t} thread(s) (s) | sweep / batched-{t}" for t in threads)
    print(f"| repetition | sweep --jobs 2 (s) | {cols} | train ms/step | load |")
    print("| ---: | ---: |" + " ---: | ---: |" * len(threads) + " --- | ---: |")
    ratios: dict[int, list[float]] = {t: [] for t in threads}
    with tempfile.TemporaryDirectory(prefix="seeds-spike-") as tmp:
        for rep in range(args.repeats):
            a = swept(s, seeds, Path(tmp) / f"sweep{rep}")
            cells, per_step = [], []
            for t in threads:
                b, trained, gan, states = batched_seeds(s, seeds, t)
                ratios[t].append(a / b)
                cells.append(f"{b:.1f} | {a / b:.2f}")
                per_step.append(f"{trained / args.steps * 1e3:.1f}")
            print(f"| {rep} | {a:.1f} | {' | '.join(cells)} | {' / '.join(per_step)} | "
                  f"{os.getloadavg()[0]:.1f} |")
    for t in threads:
        print(f"median sweep / batched ({t} thread(s)): {statistics.median(ratios[t]):.2f}")
    # Seed 0 batched against seed 0 alone (same step code, one GAN at a time).
    prepared = prepare_data(s.model_copy(update={"seed": 0}))
    alone = gan.init_state(derive_seed(0, "init"))
    data = torch.as_tensor(prepared[0].X)
    gen = torch_generator(0, "train")
    while alone.step < s.train.steps:
        n = min(args.every, s.train.steps - alone.step)
        alone, _ = gan.train(alone, data, n, gen, total_steps=s.train.steps)
    diff = max(float((states[0].g[k] - alone.g[k]).abs().max()) for k in alone.g)
    print(f"seed 0 batched vs alone, largest generator parameter difference: {diff:.2e}")


if __name__ == "__main__":
    main()
