"""Benchmark: simulator.metrics.prdc against the reference ``prdc.compute_prdc``.

Run from the repository root::

    .venv/bin/python benchmarks/prdc.py            # 10k × 10k at 64-D and 2-D, then 100k × 100k
    .venv/bin/python benchmarks/prdc.py --quick    # small sizes, a few seconds

Times are the best of ``--repeats`` runs in this process (both implementations on the same
arrays, alternating). Peak memory is measured in a fresh subprocess per case as the growth of
the resident set's high-water mark (VmHWM in /proc/self/status, reset through
/proc/self/clear_refs after the inputs are built), because tracemalloc does not see torch's
allocations.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Idle OpenMP threads sleep instead of spinning. Spinning helps nothing with one thread per
# core, and when other processes share the cores it stalls every parallel region: 10k × 10k
# at 64-D went from 0.45 s to 3–4 s on a loaded 2-core machine. Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# This file is named prdc.py: drop its own folder from the path so that `import prdc` finds the
# reference package, and put the repository root on it for `simulator`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.metrics.prdc import prdc  # noqa: E402

METRICS = ("precision", "recall", "density", "coverage")


def make_sets(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real ~ N(0, I_d), fake ~ N(0.1, 1.1² I_d): close but not identical, float64 [n, d]."""
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d))
    fake = 0.1 + 1.1 * rng.standard_normal((n, d))
    return real, fake


def run_ours(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    return prdc(real, fake, k).as_dict()


def run_reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    # The reference package (test/benchmark-only dependency), imported by name because this
    # file shares it.
    reference = importlib.import_module("prdc")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample sizes
        out = reference.compute_prdc(real, fake, k)
    return {m: float(out[m]) for m in METRICS}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_child(impl: str, n: int, d: int, k: int, seed: int, threads: int) -> None:
    """In a fresh process: build the inputs, reset the RSS high-water mark, run once, report."""
    torch.set_num_threads(threads)
    real, fake = make_sets(n, d, seed)
    if impl == "ours":
        run_ours(real[: k + 2], fake[: k + 2], k)  # load lazily imported code before measuring
    else:
        run_reference(real[: k + 2], fake[: k + 2], k)
    with contextlib.suppress(OSError):  # "5": reset VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmHWM")
    t0 = time.perf_counter()
    out = run_ours(real, fake, k) if impl == "ours" else run_reference(real, fake, k)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "delta_kib": peak - base, **out}))


def measure(impl: str, n: int, d: int, k: int, seed: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", impl, str(n), str(d), str(k), str(seed)]
    cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def best_time(fn: Any, repeats: int) -> tuple[float, dict[str, float]]:
    best = float("inf")
    out: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def agree(a: dict[str, float], b: dict[str, float]) -> bool:
    # Precision, recall and coverage are ratios of integer counts and must match exactly;
    # density may differ in the last bit through the order of the division by k.
    exact = all(a[m] == b[m] for m in ("precision", "recall", "coverage"))
    return exact and abs(a["density"] - b["density"]) <= 1e-12 * max(1.0, abs(b["density"]))


def compare_case(n: int, d: int, k: int, repeats: int, threads: int) -> dict[str, Any]:
    real, fake = make_sets(n, d, seed=d)
    run_ours(real[:100], fake[:100], k)  # warm-up: imports, thread pools
    t_ours = t_ref = float("inf")
    ours: dict[str, float] = {}
    ref: dict[str, float] = {}
    for _ in range(repeats):  # alternate so that machine-load drift hits both alike
        t, ours = best_time(lambda: run_ours(real, fake, k), 1)
        t_ours = min(t_ours, t)
        t, ref = best_time(lambda: run_reference(real, fake, k), 1)
        t_ref = min(t_ref, t)
    mem_ours = measure("ours", n, d, k, d, threads)
    mem_ref = measure("reference", n, d, k, d, threads)
    return {
        "case": f"{n // 1000}k x {n // 1000}k, d={d}, k={k}",
        "ours_s": t_ours,
        "ref_s": t_ref,
        "speedup": t_ref / t_ours,
        "ours_peak_mib": mem_ours["delta_kib"] / 1024,
        "ref_peak_mib": mem_ref["delta_kib"] / 1024,
        "agree": agree(ours, ref),
        "ours": ours,
        "ref": ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--child", nargs=5, metavar=("IMPL", "N", "D", "K", "SEED"))
    args = parser.parse_args()
    # One torch thread per core: more would only time-slice the same cores.
    torch.set_num_threads(args.threads)
    if args.child:
        impl, n, d, k, seed = args.child
        measure_child(impl, int(n), int(d), int(k), int(seed), args.threads)
        return

    n, big = (2_000, 5_000) if args.quick else (10_000, 100_000)
    repeats = args.repeats or (2 if args.quick else 3)
    print(
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, no GPU used"
    )
    print(
        f"{'case':<24}{'ours s':>9}{'ref s':>9}{'speed-up':>10}"
        f"{'ours MiB':>10}{'ref MiB':>9}  agree"
    )
    for d in (64, 2):
        r = compare_case(n, d, 5, repeats, args.threads)
        print(
            f"{r['case']:<24}{r['ours_s']:>9.3f}{r['ref_s']:>9.3f}{r['speedup']:>9.1f}x"
            f"{r['ours_peak_mib']:>10.0f}{r['ref_peak_mib']:>9.0f}  {r['agree']}"
        )
        if not r["agree"]:
            print(f"  ours {r['ours']}\n  ref  {r['ref']}")
    m = measure("ours", big, 64, 5, 64, args.threads)
    print(
        f"{big // 1000}k x {big // 1000}k, d=64, k=5 (ours only): {m['seconds']:.1f} s, "
        f"peak RSS {m['peak_kib'] / 1024:.0f} MiB (+{m['delta_kib'] / 1024:.0f} MiB during "
        f"the call); P={m['precision']:.4f} R={m['recall']:.4f} "
        f"D={m['density']:.4f} C={m['coverage']:.4f}"
    )


if __name__ == "__main__":
    main()
