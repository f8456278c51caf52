"""Vectorized vs in-process (sequential) vs Ray engine, client scaling and memory at scale.

    .venv/bin/python benchmarks/engine_scale.py [--quick] [--widths 64,128,256] [--rounds N]
        [--engines vectorized,inprocess,ray,vectorized-ref,...] [--no-ray] [--repeats N]
        [--device cpu|cuda|auto] [--threads N] [--only compare,scaling,memory]
        [--clients 10,100,1000]

compare: `scenarios/scale/ring-100-clients.yaml` (8-ring, 100 Dirichlet clients all sampled, 20
local steps, 2 hidden layers of the given width, batch 64) on each engine, one after another in
this process. Timed: the round loop's "train" phase from the run's `timings.csv` — sampling,
messages, local training (incl. each client's evaluation of the received generator and its
Lipschitz estimates), the reply gate and FedAvg — summed over rounds; set-up, node discovery,
Ray's start and the server's evaluation are outside it (the whole call's wall time is shown
beside it). The vectorized and sequential runs also print the largest difference between their
metrics tables (the engines must agree).

scaling: seconds per round on the vectorized engine for each client count (200 training points
per client), the median over the rounds after the first (the first pays one-time warm-up).

memory: peak RSS of a fresh process running 1,000 clients with private critics
(`federate: generator`: each client keeps its critic and both optimizers' moments) for two
rounds, and the bytes held by the private store.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "scale" / "ring-100-clients.yaml"
KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def scenario(overrides: list[str]) -> Any:
    from fedgan.simulator.scenario import load

    return load(SCENARIO, overrides)


def timed_run(s: Any, out: Path) -> tuple[list[float], float, pd.DataFrame, Path]:
    """Per-round "train" seconds, whole-call wall seconds, metrics, run folder."""
    from fedgan.simulator.engines.runner import run_federated

    t0 = time.perf_counter()
    res = run_federated(s, out)
    wall = time.perf_counter() - t0
    t = pd.read_csv(res.path / "timings.csv")
    per_round = t[(t["phase"] == "train") & (t["client"] == -1)].sort_values("round")
    dropped = res.metrics.loc[res.metrics["metric"] == "fed.dropped", "value"].sum()
    if dropped:  # a failing client trains less: the timing would flatter the engine
        raise RuntimeError(f"{s.engine.name}: {dropped:.0f} client replies dropped")
    return per_round["seconds"].tolist(), wall, res.metrics, res.path


FINAL = ["recall", "coverage", "precision", "density", "modes_captured", "high_quality_rate"]
"""Global metrics compared at the last round (engines against each other, and against seeds)."""


def final_gap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Σ |a − b| over the last round's overall global metrics `FINAL` of two runs."""

    def last(m: pd.DataFrame) -> pd.Series:
        rows = m[(m["round"] == m["round"].max()) & (m["scope"] == "global") & (m["group"] == "")]
        return rows[rows["metric"].isin(FINAL)].set_index("metric")["value"]

    x, y = last(a), last(b)
    return float((x - y.reindex(x.index)).abs().sum(skipna=True))


def _engine(eng: str) -> tuple[str, bool]:
    """An engine column's scenario engine and whether it runs the hand-batched MLP step: the
    suffix `-ref` turns it off (`simulator.gan.fastmlp.ENABLED`), i.e. the torch.func / autograd
    step every engine ran before it; `vectorized-cpu` is the vectorized engine on the CPU."""
    name = eng.removesuffix("-ref")
    return name.removesuffix("-cpu"), name == eng


def compare(args: argparse.Namespace, out: Path) -> None:
    from fedgan.simulator.gan import fastmlp

    engines = args.engines.split(",")
    if "vectorized" not in engines:
        raise SystemExit("--engines must include vectorized (the ratios are against it)")
    if args.no_ray:
        engines = [e for e in engines if not e.startswith("ray")]
    print(f"\n## compare: 100 clients x {args.rounds} rounds x 20 local steps, batch 64, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} repetitions (engines interleaved), medians")
    print("| width | engine | train phase (s) | s/round | whole call (s) | vectorized faster by "
          "| ratio per repetition | load |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for width in args.widths:
        common = [f"federation.rounds={args.rounds}", f"evaluation.every={args.rounds}",
                  f"gan.generator.widths=[{width},{width}]", f"gan.critic.widths=[{width},{width}]"]
        train: dict[str, list[float]] = {e: [] for e in engines}
        walls: dict[str, list[float]] = {e: [] for e in engines}
        metrics: dict[str, pd.DataFrame] = {}
        loads: list[str] = []
        if "inprocess" in engines and width == args.widths[0]:
            # Seed-to-seed noise, the yardstick for the engines' agreement: the sequential
            # engine with the next seed (not timed).
            seed1 = common + ["seed=1", "engine.name=inprocess", "device=cpu"]
            _, _, other, _ = timed_run(scenario(seed1), out / f"seed{width}")
        for rep in range(args.repeats):
            loads.append(f"{os.getloadavg()[0]:.1f}")
            for eng in engines:
                # "vectorized" runs on --device; the other engines on the CPU.
                name, fast = _engine(eng)
                dev = args.device if eng == "vectorized" else "cpu"
                fastmlp.ENABLED = fast
                os.environ["FEDGAN_FAST_MLP"] = "1" if fast else "0"  # Ray's workers read it
                try:
                    rounds, wall, m, _ = timed_run(
                        scenario(common + [f"engine.name={name}", f"device={dev}"]),
                        out / f"{eng}{width}-{rep}",
                    )
                finally:
                    fastmlp.ENABLED = True
                    os.environ.pop("FEDGAN_FAST_MLP", None)
                train[eng].append(sum(rounds))
                walls[eng].append(wall)
                metrics[eng] = m
        vec = train["vectorized"]
        for eng in engines:
            t = train[eng]
            per = [a / b for a, b in zip(t, vec, strict=True)]
            ratio = "1" if eng == "vectorized" else f"{statistics.median(per):.1f}x"
            reps = ", ".join(f"{r:.2f}" for r in per)
            print(f"| {width} | {eng} | {statistics.median(t):.2f} | "
                  f"{statistics.median(t) / args.rounds:.3f} | {statistics.median(walls[eng]):.1f} "
                  f"| {ratio} | {reps} | {' '.join(loads)} |")
        for ref in ("inprocess", "vectorized-ref", "inprocess-ref", "vectorized-cpu"):
            if ref in metrics:
                gap = final_gap(metrics[ref], metrics["vectorized"])
                note = ""
                if ref == "inprocess" and width == args.widths[0]:
                    noise = final_gap(metrics[ref], other)
                    note = f"; seed 0 vs seed 1 on the sequential engine: {noise:.3f}"
                print(f"|  | final global metrics, Σ abs. difference vs {ref}: {gap:.3f}{note} "
                      "| | | | | | |")


class _MathTimer:
    """Seconds spent in the batched math (local training and Lipschitz estimates, synchronized
    with the device), to split a round into the GAN math and everything around it."""

    def __init__(self) -> None:
        from fedgan.simulator.gan import batched

        self.seconds = 0.0
        names = ("train_batched", "lipschitz_batched")
        self._saved = {name: getattr(batched, name) for name in names}
        for name, fn in self._saved.items():
            setattr(batched, name, self._timed(fn))

    def _timed(self, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
            sync()
            t0 = time.perf_counter()
            try:
                out = fn(*a, **k)
                sync()
                return out
            finally:
                self.seconds += time.perf_counter() - t0

        return wrapper

    def close(self) -> None:
        from fedgan.simulator.gan import batched

        for name, fn in self._saved.items():
            setattr(batched, name, fn)


def scaling(args: argparse.Namespace, out: Path) -> None:
    print(f"\n## scaling: vectorized engine, device {args.device}, width 64, 20 local steps, "
          f"batch 64, every client every round")
    print("| clients | s/round (median after the first) | first round (s) | per client-step (µs) "
          "| GAN math share |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rounds = max(args.rounds, 3)
    for n in args.clients:
        s = scenario([f"partition.n_clients={n}", f"data.n_samples={200 * n}",
                      f"federation.rounds={rounds}", f"evaluation.every={rounds}",
                      "evaluation.n_samples=2000", f"device={args.device}"])
        timer = _MathTimer()
        try:
            per_round, _, _, _ = timed_run(s, out / f"scale{n}")
        finally:
            timer.close()
        steady = statistics.median(per_round[1:])
        share = timer.seconds / sum(per_round)
        print(f"| {n} | {steady:.3f} | {per_round[0]:.2f} | {steady / (n * 20) * 1e6:.0f} "
              f"| {share:.0%} |")


def memory(args: argparse.Namespace, out: Path) -> None:
    n = 1000
    print(f"\n## memory: {n} clients with private critics (federate: generator), 2 rounds, "
          f"device {args.device}")
    code = (
        "import json, resource, sys, torch; torch.set_num_threads(1)\n"
        "from fedgan.simulator.scenario import load\n"
        "from fedgan.simulator.engines import vectorized as v\n"
        "sizes = {}\n"
        "close = v.PrivateStore.close\n"
        "def spy(self):\n"
        "    sizes['private'] = self.nbytes; sizes['spilled'] = self.spilled; close(self)\n"
        "v.PrivateStore.close = spy\n"
        "from fedgan.simulator.engines.runner import run_federated\n"
        f"s = load({str(SCENARIO)!r}, ['partition.n_clients={n}', 'data.n_samples={200 * n}',\n"
        "  'federation.rounds=2', 'evaluation.every=2', 'federation.federate=generator',\n"
        f"  'gan.critic.widths=[{args.widths[0]},{args.widths[0]}]',\n"
        f"  'engine.max_batch={args.max_batch}',\n"
        f"  'device={args.device}'])\n"
        f"run_federated(s, {str(out / 'memory')!r})\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "sizes['peak_rss'] = int(hwm.split()[1]) * 1024\n"
        "print(json.dumps(sizes))\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    if done.returncode:
        print(done.stderr[-3000:])
        raise SystemExit("memory run failed")
    sizes = json.loads(done.stdout.strip().splitlines()[-1])
    batch = args.max_batch or "all"
    print(f"critic width {args.widths[0]}, max_batch {batch}: "
          f"peak RSS {sizes['peak_rss'] / 2**20:.0f} MiB, private "
          f"store {sizes['private'] / 2**20:.1f} MiB (spilled to disk: {sizes['spilled']}), "
          f"{time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, width 64, 10 and 100 clients, no memory run")
    ap.add_argument("--widths", default=None, help="comma-separated (default 64,128,256)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 10; quick 2)")
    ap.add_argument("--clients", default=None, help="scaling client counts (default 10,100,1000)")
    ap.add_argument("--engines", default="vectorized,inprocess,ray",
                    help="compare these (vectorized-cpu: the vectorized engine on the CPU; a "
                         "-ref suffix: that engine without the hand-batched MLP step)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="compare: repetitions, engines interleaved (default 3; quick 1)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    ap.add_argument("--device", default="cpu", help="vectorized engine's device")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="memory run: engine.max_batch (0: all clients in one batch)")
    ap.add_argument("--only", default="compare,scaling,memory", help="sections to run")
    args = ap.parse_args()
    widths = args.widths or ("64" if args.quick else "64,128,256")
    args.widths = [int(w) for w in widths.split(",")]
    args.rounds = args.rounds or (2 if args.quick else 10)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.clients = [int(c) for c in (args.clients or ("10,100" if args.quick else "10,100,1000"))
                    .split(",")]
    only = set(args.only.split(","))
    if args.quick:
        only.discard("memory")
    torch.set_num_threads(args.threads)
    from fedgan.simulator.devices import resolve_device

    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"machine: {name}; torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:  # run folders: not kept
        for section, fn in (("compare", compare), ("scaling", scaling), ("memory", memory)):
            if section in only:
                fn(args, Path(tmp))
    print(f"\npeak RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
