"""Cost of one generator step of a server-held generator (mdgan, uagan) on each engine.

    python benchmarks/protocol_engines.py [--rounds 5] [--engines inprocess,vectorized,ray]
                                          [--deployment 2]

Runs `scenarios/protocols/dirichlet-{mdgan,uagan}.yaml` (10 clients, MLPs 3×128, batch 128,
10 generator steps a round) for `--rounds` rounds on each engine, one torch thread, and reports
the round loop's "train" phase from the run's `timings.csv` — the server's latents and batches,
every message, every client's critic steps and answer, the gate, the generator step — per
generator step (rounds after the first, so Ray's warm-up is left out; Ray's start and shutdown
are in the whole-run wall time beside it). Evaluation runs once, at the end, outside the
timed phase. `--deployment N` also starts a local SuperLink with N SuperNodes (no TLS) and
runs the same scenarios with N clients for 2 rounds × 2 generator steps on the deployment
engine: Flower's SuperNode and ServerApp poll every 3 s (flwr 1.42), so there the cost of a
generator step is the message round trip, whatever the GAN.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent / "scenarios" / "protocols"


def main() -> None:
    import torch
    from fedgan.simulator.api import run
    from fedgan.simulator.scenario import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engines", default="inprocess,vectorized,ray")
    ap.add_argument("--protocols", default="mdgan,uagan")
    ap.add_argument("--deployment", type=int, default=0, help="SuperNodes (0: skip)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix="fedgan-protocol-engines-")
    print(f"load {os.getloadavg()}")
    print("| protocol | engine | s per generator step | whole run (s) |")
    print("|---|---|---|---|")
    for proto in a.protocols.split(","):
        for engine in a.engines.split(","):
            over = [
                f"federation.rounds={a.rounds}",
                f"evaluation.every={a.rounds}",
                f"engine={{name: {engine}}}",
            ]
            t0 = time.perf_counter()
            res = run(ROOT / f"dirichlet-{proto}.yaml", over, out_dir=out)
            wall = time.perf_counter() - t0
            t = pd.read_csv(res.path / "timings.csv")
            train = t[(t["phase"] == "train") & (t["round"] > 1)]["seconds"]
            steps = load(ROOT / f"dirichlet-{proto}.yaml").federation.local_steps  # type: ignore[union-attr]
            print(f"| {proto} | {engine} | {train.mean() / steps:.3f} | {wall:.0f} |", flush=True)
    if a.deployment:
        _deployment(a.deployment, a.protocols.split(","), out)
    print(f"load {os.getloadavg()}")


def _deployment(nodes: int, protocols: list[str], out: str) -> None:
    """Seconds per generator step on a local SuperLink with `nodes` SuperNodes."""
    from fedgan.simulator.api import run
    from fedgan.simulator.engines.local_cluster import LocalCluster

    with LocalCluster(nodes, Path(out) / "cluster") as cluster:
        for proto in protocols:
            over = [
                f"partition.n_clients={nodes}",
                "federation.rounds=2",
                "federation.local_steps=2",
                "evaluation.every=2",
                "federation.timeout=120",
                f"engine={{name: deployment, address: '{cluster.address}', run_timeout: 600}}",
            ]
            t0 = time.perf_counter()
            res = run(ROOT / f"dirichlet-{proto}.yaml", over, out_dir=out)
            wall = time.perf_counter() - t0
            t = pd.read_csv(res.path / "timings.csv")
            train = t[(t["phase"] == "train") & (t["round"] > 1)]["seconds"]
            print(
                f"| {proto} | deployment ({nodes} nodes) | {train.mean() / 2:.2f} | {wall:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
