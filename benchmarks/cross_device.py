"""Cross-device scale: 1,000 clients of ~13 points, 50 a round — the vectorized engine against
Flower's Ray engine, and the memory of 10,000 clients' private state (issue 26).

    .venv/bin/python benchmarks/cross_device.py [--rounds 6] [--no-ray] [--memory-clients 10000]
        [--threads 1]

speed: `scenarios/scale/cross-device.yaml` for `--rounds` rounds (no evaluation before the
last) on the vectorized engine and on Ray (`pip install -e '.[ray]'`; one CPU per client actor,
`engine.num_cpus: 1`), one after the other in this process. Printed separately: start-up (the
call's wall time before round 1 ends, minus round 1), the first round and the steady rounds
(median of rounds 2..R, the round loop's "train" phase from `timings.csv`: sampling, messages,
local training, the gate, aggregation). The last line is `vectorized vs ray: N×` on steady
rounds (target ≥ 7×, pfl-research's lower bound against other frameworks). Ray runs one client
actor per CPU, so on a 2-core machine it computes two clients at once; `--threads 2` gives the
vectorized engine the same two cores (torch threads), `--threads 1` (the default) one.

memory: a fresh process holds the private state of `--memory-clients` clients (a private
critic and both optimizers' moments each: `federate: generator`) in the private store with a
bound of 64 MiB, so most of it spills to disk; prints the peak RSS, the store's bytes in
memory and on disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "scale" / "cross-device.yaml"


def timed(engine: str, rounds: int, device: str = "cpu") -> dict[str, float]:
    from fedgan.simulator.engines.runner import run_federated
    from fedgan.simulator.scenario import load

    overrides = [
        f"engine.name={engine}",
        f"federation.rounds={rounds}",
        f"evaluation.every={rounds}",
        "gan.lr_schedule=constant",
        f"device={device}",
    ]
    if engine == "ray":
        overrides.append("engine.num_cpus=1")
    s = load(SCENARIO, overrides)
    with tempfile.TemporaryDirectory(prefix="fedgan-xdevice-") as tmp:
        t0 = time.perf_counter()
        res = run_federated(s, tmp)
        wall = time.perf_counter() - t0
        t = pd.read_csv(res.path / "timings.csv")
        train = t[(t["phase"] == "train") & (t["client"] == -1)].sort_values("round")
        rest = t[(t["client"] == -1) & (t["phase"] != "train")]["seconds"].sum()
    per_round = train["seconds"].tolist()
    return {
        "wall": wall,
        "startup": wall - sum(per_round) - float(rest),
        "first": per_round[0],
        "steady": statistics.median(per_round[1:]) if len(per_round) > 1 else per_round[0],
    }


MEMORY_CHILD = r"""
import json, resource, sys, tempfile
import numpy as np
from fedgan.simulator.private_store import PrivateStore
from fedgan.simulator.prepare import critic_state
from fedgan.simulator.scenario import load
n = int(sys.argv[2])
s = load(sys.argv[1], ["federation.federate=generator"])
state = {k: np.asarray(v) for k, v in critic_state(s).items()}
per_client = sum(v.nbytes for v in state.values())
with tempfile.TemporaryDirectory() as tmp:
    store = PrivateStore(n, budget_bytes=64 << 20, spill_dir=tmp)
    for c in range(n):
        store.put(c, {k: v + np.float32(c % 7) for k, v in state.items()})
    back = store.get(n - 1)
    ok = all(np.array_equal(back[k], state[k] + np.float32((n - 1) % 7)) for k in state)
    lines = open("/proc/self/status").read().splitlines()
    status = dict(l.split(":", 1) for l in lines if ":" in l)
    kib = lambda k: int(status.get(k, "0 kB").split()[0]) * 1024
    print(json.dumps({"per_client": per_client, "ok": ok, "spilled": store.spilled,
                      "nbytes": store.nbytes, "anon": kib("RssAnon"), "file": kib("RssFile"),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
    store.close()
"""


def memory(clients: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(SCENARIO), str(clients)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--memory-clients", type=int, default=10_000)
    ap.add_argument("--device", default="cpu", help="the vectorized engine's (cpu, cuda)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the vectorized engine's torch CPU threads (`fedgan run --threads`); Ray runs "
        "one actor per CPU",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    m = memory(args.memory_clients)
    mib = 1 << 20
    print(
        f"memory, {args.memory_clients:,} clients' private state "
        f"({m['per_client'] / 1024:.0f} KiB each, {m['nbytes'] / mib:,.0f} MiB in all, "
        f"{'spilled to memory-mapped files' if m['spilled'] else 'in memory'} past a 64 MiB "
        f"bound): peak RSS {m['peak_rss'] / mib:,.0f} MiB, of it at the end anonymous memory "
        f"{m['anon'] / mib:,.0f} MiB and file pages {m['file'] / mib:,.0f} MiB (mapped pages the "
        f"OS keeps resident while memory is free, written back under pressure); read back "
        f"intact: {m['ok']}"
    )
    results = {"vectorized": timed("vectorized", args.rounds, args.device)}
    if not args.no_ray:
        results["ray"] = timed("ray", args.rounds)
    for engine, r in results.items():
        print(
            f"{engine}: start-up {r['startup']:.1f} s, first round {r['first']:.2f} s, "
            f"steady rounds {r['steady']:.3f} s (median), whole call {r['wall']:.1f} s"
        )
    if "ray" in results:
        ratio = results["ray"]["steady"] / results["vectorized"]["steady"]
        threads = "one torch thread" if args.threads == 1 else f"{args.threads} torch threads"
        print(f"vectorized vs ray: {ratio:.1f}× (the vectorized engine on {threads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
