"""Federated rounds on the in-process and Ray engines against the same GAN steps run centrally.

    .venv/bin/python benchmarks/engine.py [--quick] [--rounds N] [--reps N] [--no-ray] [--breakdown]

The federated run is `scenarios/ring-2pct-10-clients.yaml` (10 clients, 5 sampled per round,
50 local steps, batch 128) with fewer rounds; the central run is one `GAN.train` loop over the
pooled training set with the same GAN config and batch size for
`rounds × local_steps × clients_per_round` steps.

What is timed, to keep it fair:
- Central: `GAN.train` only (data loading and the model's construction are outside the timer).
- Federated: the round loop's "train" phase from the run's `timings.csv` — sampling, messages,
  every ClientApp call (state set-up, array conversion, local training), the reply gate and
  FedAvg — summed over rounds. Left out: data set-up, node discovery and Ray's start and
  shutdown (reported apart as whole-run wall time) and the server's evaluation (its own phase,
  and only run in the last round here).
- Client-side evaluation of the received generator (part of every ClientApp train call) is
  switched off by `partition.client_holdout=0`: with no held-out points a client skips it.
Everything runs in this one process with one torch thread (Ray actors: one each, one CPU per
actor); central and federated runs are interleaved and the ratio is the median over pairs, so
load from other processes hits both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "ring-2pct-10-clients.yaml"
TARGET = 1.2
"""In-process round time / central time we aim to stay under."""


def scenario(rounds: int, engine: str) -> Any:
    """Quickstart with `rounds` rounds, no client-side evaluation, server evaluation at the end."""
    from fedgan.simulator.scenario import load

    return load(QUICKSTART, [
        f"federation.rounds={rounds}", f"evaluation.every={rounds}", "evaluation.n_samples=500",
        "partition.client_holdout=0", f"engine.name={engine}",
    ])


def total_steps(s: Any) -> int:
    """Local GAN steps the federation runs: rounds × local steps × clients per round."""
    f = s.federation
    return int(f.rounds * f.local_steps * (f.clients_per_round or s.partition.n_clients))


def central_seconds(s: Any) -> float:
    """Wall time of one `GAN.train` loop of `total_steps(s)` steps on the pooled training set."""
    from fedgan.simulator.gan.train import GAN
    from fedgan.simulator.prepare import prepare_data
    from fedgan.simulator.seeding import derive_seed, torch_generator

    train, _ = prepare_data(s)
    gan = GAN(s.gan.config(), train.X.shape[1], train.image_shape)
    state = gan.init_state(derive_seed(s.seed, "init"))
    data = torch.as_tensor(train.X)
    n = total_steps(s)
    t0 = time.perf_counter()
    gan.train(state, data, n, torch_generator(s.seed, "train"), total_steps=n)
    return time.perf_counter() - t0


@dataclass
class FedTime:
    rounds: float
    """Sum of the rounds' "train" phases (seconds)."""
    wall: float
    """The whole `run_federated` call (seconds)."""


def federated_seconds(s: Any, out: Path) -> FedTime:
    """Run `s` and read its round-loop time back from the run's timings table."""
    from fedgan.simulator.engines.runner import run_federated

    t0 = time.perf_counter()
    res = run_federated(s, out)
    wall = time.perf_counter() - t0
    timings = pd.read_csv(res.path / "timings.csv")
    dropped = res.metrics.loc[res.metrics["metric"] == "fed.dropped", "value"].sum()
    if dropped:  # a failing client trains less: the timing would flatter the engine
        raise RuntimeError(f"{s.engine.name}: {dropped:.0f} client replies dropped")
    return FedTime(float(timings.loc[timings["phase"] == "train", "seconds"].sum()), wall)


# --- where the in-process overhead goes ---------------------------------------------------


@contextlib.contextmanager
def timers(
    targets: list[tuple[Any, str, str]], active: Callable[[], bool]
) -> Iterator[dict[str, float]]:
    """Wrap each `owner.attr` with a timer adding to bucket `label` while `active()`; the
    originals are put back on exit."""
    totals: dict[str, float] = {label: 0.0 for _, _, label in targets}
    saved = []
    for owner, attr, label in targets:
        fn = getattr(owner, attr)
        saved.append((owner, attr, owner.__dict__[attr]))

        def timed(*a: Any, _fn: Callable[..., Any] = fn, _label: str = label, **k: Any) -> Any:
            if not active():
                return _fn(*a, **k)
            t0 = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                totals[_label] += time.perf_counter() - t0

        setattr(owner, attr, timed)
    try:
        yield totals
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def breakdown(s: Any, out: Path) -> tuple[FedTime, dict[str, float]]:
    """One instrumented in-process run: seconds spent in each layer of the rounds' train
    phases (the timers stop during set-up, node discovery and the server's evaluation)."""
    import fedgan.clients.app as capp
    import fedgan.clients.training as fed
    import fedgan.server.loop as loop
    import fedgan.simulator.engines.inprocess as inproc
    from fedgan.simulator.gan.train import GAN, GANState
    from flwr.clientapp import ClientApp

    phase = ["setup"]
    discover, evaluate = loop.discover, loop.evaluate

    def timed_discover(*a: Any, **k: Any) -> Any:
        out = discover(*a, **k)
        phase[0] = "train"  # the round loop starts right after discovery
        return out

    def timed_evaluate(*a: Any, **k: Any) -> Any:
        phase[0] = "evaluate"
        try:
            return evaluate(*a, **k)
        finally:
            phase[0] = "train"

    loop.discover, loop.evaluate = timed_discover, timed_evaluate
    try:
        with timers([
            (ClientApp, "__call__", "ClientApp calls"),
            (capp, "client_train", "  client_train"),
            (GAN, "train", "    GAN.train (the local steps)"),
            (GAN, "init_state", "    GAN.init_state (fresh template)"),
            (GANState, "load_arrays", "    GANState.load_arrays"),
            (GANState, "arrays", "    GANState.arrays"),
            (fed, "evaluate_locally", "    evaluate_locally (off: no holdout)"),
            (capp, "from_record", "  from_record (records -> arrays)"),
            (capp, "to_record", "  to_record (arrays -> records)"),
            (inproc, "copy_recorddict", "engine: message and state copies"),
            (loop, "check_replies", "server: reply gate"),
        ], active=lambda: phase[0] == "train") as totals:
            ft = federated_seconds(s, out)
    finally:
        loop.discover, loop.evaluate = discover, evaluate
    return ft, totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds, 1 repetition")
    ap.add_argument("--rounds", type=int, default=None, help="federated rounds (default 6)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    ap.add_argument("--breakdown", action="store_true", help="always show where time goes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:  # run folders: not kept
        run(args, Path(tmp))


def run(args: argparse.Namespace, out: Path) -> None:
    """Measure, print the ratios and, above target (or on request), the breakdown."""
    rounds = args.rounds or (2 if args.quick else 6)
    reps = args.reps or (1 if args.quick else 3)
    torch.set_num_threads(1)  # tiny MLPs gain nothing from threads on a busy 2-core machine

    s_in, s_ray = scenario(rounds, "inprocess"), scenario(rounds, "ray")
    f = s_in.federation
    print(f"quickstart: {s_in.partition.n_clients} clients, {f.clients_per_round} per round, "
          f"{rounds} rounds x {f.local_steps} local steps, batch {s_in.gan.batch_size} "
          f"-> {total_steps(s_in)} GAN steps; torch threads {torch.get_num_threads()}")
    has_ray = importlib.util.find_spec("ray") is not None and not args.no_ray
    # Warm-up (imports, data caches, first-call costs) outside every timer.
    central_seconds(scenario(1, "inprocess"))
    federated_seconds(scenario(1, "inprocess"), out / "warmup")

    rows: list[dict[str, float]] = []
    for rep in range(reps):
        # Alternate the order so that a slow spell of the machine does not favour one side.
        order = ["central", "inprocess"] if rep % 2 == 0 else ["inprocess", "central"]
        row: dict[str, float] = {}
        for what in order:
            if what == "central":
                row["central"] = central_seconds(s_in)
            else:
                ft = federated_seconds(s_in, out / f"in-{rep}")
                row["inprocess"], row["inprocess_wall"] = ft.rounds, ft.wall
        if has_ray:
            ft = federated_seconds(s_ray, out / f"ray-{rep}")
            row["ray"], row["ray_wall"] = ft.rounds, ft.wall
            row["central_ray"] = central_seconds(s_in)  # the Ray run's own partner
        rows.append(row)
        print(f"rep {rep + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()), flush=True)

    df = pd.DataFrame(rows)
    in_ratio = statistics.median(df["inprocess"] / df["central"])
    print(f"\ncentral GAN.train          median {df['central'].median():7.2f} s")
    print(f"in-process round loop      median {df['inprocess'].median():7.2f} s  "
          f"(whole run {df['inprocess_wall'].median():.2f} s)")
    print(f"in-process / central       {in_ratio:.3f}x  (target <= {TARGET}x)")
    if has_ray:
        ray_ratio = statistics.median(df["ray"] / df["central_ray"])
        ray_wall = statistics.median(df["ray_wall"] / df["central_ray"])
        print(f"ray round loop             median {df['ray'].median():7.2f} s  "
              f"(whole run {df['ray_wall'].median():.2f} s)")
        print(f"ray / central              {ray_ratio:.3f}x  (whole run incl. Ray start and "
              f"shutdown: {ray_wall:.2f}x)")
    else:
        print("ray: skipped (Ray is not installed: pip install -e '.[ray]')"
              if not args.no_ray else "ray: skipped (--no-ray)")

    if in_ratio > TARGET or args.breakdown:
        ft, totals = breakdown(s_in, out / "breakdown")
        total = ft.rounds
        rest = total - totals["ClientApp calls"] - totals["engine: message and state copies"] \
            - totals["server: reply gate"]
        train = totals["    GAN.train (the local steps)"]
        print(f"\nwhere the in-process round loop goes (one instrumented run, {total:.2f} s; "
              "indented = part of the line above):")
        for label, sec in [*totals.items(),
                           ("server: the rest (sampling, FedAvg, records)", rest)]:
            print(f"  {label:46s} {sec:7.3f} s  {100 * sec / total:5.1f} %")
        print(f"  {'=> everything but GAN.train':46s} {total - train:7.3f} s  "
              f"{100 * (total - train) / total:5.1f} %")

if __name__ == "__main__":
    main()
