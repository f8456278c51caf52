"""What a federated run costs beyond its GAN steps: the quickstart's wall time against the same
GAN steps alone, in one loop (issue 26).

    .venv/bin/python benchmarks/overhead.py [scenario.yaml] [--repeats 1]

Prints, for the scenario (default: scenarios/quickstart.yaml), the run's wall time
(`fedgan.run`, one torch thread, its folder in a temporary directory), the time of the very
same GAN steps without the federation around them — every client's `local_steps` a round for
`rounds` rounds, stacked as the vectorized engine stacks them (`simulator.gan.batched`), one
call per round from the round-0 state, no messages, aggregation, statistics, evaluation or
checkpoints —, the commit it measured, and as its last line `overhead ratio R` = run / steps
(target R ≤ 1.15). Both are measured in this one process, the steps first (they also warm the
caches the run would warm), alternating `--repeats` times; it prints the best of each, and R is
the median over the repeats of run / steps within a pair (on this VM the steps alone vary by
up to 12 % between repeats and the run by 3 %: the best of each divides one lucky draw by
another, while a pair shares the machine's state). The modules a run
imports beyond the steps' (the server and client apps, the engines, and through them
fairlearn, scikit-learn and scipy: ~1 s) are imported before either is timed, and that time
is printed on its own line: it is start-up, which `fedgan run` pays once, as the issue's
profile counts it ("imports 4.5 s; the run 45 s"), not a cost of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def steps_alone(path: Path) -> float:
    """Seconds of the scenario's GAN steps alone: rounds × one stacked call of every client's
    local steps (the vectorized engine's computation), nothing around them."""
    import torch
    from fedgan.simulator.gan import batched
    from fedgan.simulator.prepare import federated_data, initial_state, local_steps, make_gan
    from fedgan.simulator.scenario import load
    from fedgan.simulator.seeding import torch_generator

    s = load(path)
    assert s.federation is not None, "a federated scenario"
    f = s.federation
    data = federated_data(s)
    gan = make_gan(s, data)
    clients = list(range(data.n_clients))
    steps = [local_steps(s, data, c) for c in clients]
    xs = [torch.as_tensor(data.train.X[data.client_train[c]]) for c in clients]
    x = batched.pad_data(xs)
    base = initial_state(s, gan)
    arrays = base.arrays()
    state = batched.stack_arrays(base, [[arrays] for _ in clients], "cpu")
    t0 = time.perf_counter()
    for r in range(1, f.rounds + 1):
        state, _ = batched.train_batched(
            gan,
            state,
            x,
            [len(v) for v in xs],
            [torch_generator(s.seed, "train", c, r) for c in clients],
            steps,
            total_steps=[f.rounds * n for n in steps],
            start_steps=[(r - 1) * n for n in steps],
        )
    return time.perf_counter() - t0


def import_run_modules() -> float:
    """Seconds to import what a federated run imports beyond the steps' modules."""
    t0 = time.perf_counter()
    import fedgan.clients.app  # noqa: F401
    import fedgan.server.app  # noqa: F401
    import fedgan.simulator.api  # noqa: F401
    import fedgan.simulator.engines.runner  # noqa: F401
    import fedgan.simulator.engines.vectorized  # noqa: F401

    return time.perf_counter() - t0


def run_wall(path: Path) -> float:
    """Seconds of the whole run (`fedgan.run`), its folder in a temporary directory."""
    from fedgan.simulator.api import run

    with tempfile.TemporaryDirectory(prefix="fedgan-overhead-") as tmp:
        t0 = time.perf_counter()
        run(path, out_dir=tmp)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default=str(ROOT / "scenarios" / "quickstart.yaml"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both (as `fedgan run --threads`; measure on a quiet machine)",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    path = Path(args.scenario)
    imports = import_run_modules()
    alones, walls = [], []
    for _ in range(args.repeats):  # interleaved: a drift of the machine's speed hits both
        alones.append(steps_alone(path))
        walls.append(run_wall(path))
    alone, wall = min(alones), min(walls)
    threads = "one torch thread" if args.threads == 1 else f"{args.threads} torch threads"
    print(f"scenario {path.name}, commit {_commit()}, {threads}")
    print(f"start-up: the run's own imports, once: {imports:.1f} s")
    each = " / ".join(f"{w:.1f}" for w in walls)
    print(
        f"run (fedgan.run, wall): {wall:.1f} s" + (f" (best of {each})" if len(walls) > 1 else "")
    )
    each = " / ".join(f"{a:.1f}" for a in alones)
    print(
        f"the same GAN steps alone, one loop: {alone:.1f} s"
        + (f" (best of {each})" if len(alones) > 1 else "")
    )
    ratios = sorted(w / a for w, a in zip(walls, alones, strict=True))
    if len(ratios) > 1:
        print("run / steps per pair: " + " / ".join(f"{r:.2f}" for r in ratios))
    print(f"overhead ratio {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
