"""A Flower strategy that collects garbage per reply, with and without the frozen library heap.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/strategy_gc.py [--rounds 20] [--repeats 2]

Flower's `QFedAvg` (our `quality_qfedavg` extends it) reads every reply with
`to_numpy_ndarrays(keep_input=False)`, which calls `gc.collect()` each time; a full collection
walks the whole heap of the process (torch, pandas, fairlearn, …). A run's rounds run inside
`server.heap.library_heap_frozen`, which freezes the heap from before the run, so those
collections walk only the run's own objects. This runs the quickstart with `quality_qfedavg`
for `--rounds` rounds, alternately with the freeze (as landed) and without (the reference:
`library_heap_frozen` swapped for a null context), in this process, and prints CPU seconds a
run, the ratio, and whether both give the same metrics (they must: garbage collection changes
no number).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fedgan.server.app as server_app  # noqa: E402
from fedgan.simulator.api import run  # noqa: E402

QFEDAVG = 'strategy={"name": "quality_qfedavg", "params": {"client_learning_rate": 50.0, "q": 1.0}}'
LANDED = server_app.library_heap_frozen


def one(rounds: int, frozen: bool) -> tuple[float, pd.DataFrame]:
    """CPU seconds of one run and its metric values (the seconds columns dropped)."""
    server_app.library_heap_frozen = (  # type: ignore[assignment]
        LANDED if frozen else contextlib.nullcontext
    )
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        res = run(
            ROOT / "scenarios" / "quickstart.yaml",
            [QFEDAVG, f"federation.rounds={rounds}", f"evaluation.every={rounds}"],
            out_dir=tmp,
        )
        cpu = time.process_time() - c0
    m = res.metrics
    m = m[~m["metric"].astype(str).str.contains("seconds")]
    return cpu, m.reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    one(2, True)  # warm-up: imports, data caches
    times: dict[bool, list[float]] = {True: [], False: []}
    metrics = {}
    for _ in range(a.repeats):
        for frozen in (False, True):
            cpu, m = one(a.rounds, frozen)
            times[frozen].append(cpu)
            metrics[frozen] = m
    same = metrics[True].equals(metrics[False])
    ref, new = statistics.median(times[False]), statistics.median(times[True])
    print(f"objects tracked by gc: {len(gc.get_objects()):,}")
    print(f"quickstart + quality_qfedavg, {a.rounds} rounds, median of {a.repeats}, CPU s:")
    print(f"  full collections (reference): {ref:.1f} s")
    print(f"  frozen library heap (landed): {new:.1f} s")
    print(f"  speed-up: {ref / new:.1f}×; same metrics: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
