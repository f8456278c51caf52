"""Benchmark: simulator.metrics.prdc against the reference ``prdc.compute_prdc``.

Run from the repository root::

    .venv/bin/python benchmarks/prdc.py            # 10k × 10k at 64-D and 2-D, then 100k × 100k
    .venv/bin/python benchmarks/prdc.py --quick    # small sizes, a few seconds
    .venv/bin/python benchmarks/prdc.py --n 20000 --big 0 --d 64   # other sizes
    python3 benchmarks/prdc.py --device cuda --n 100000   # GPU: 100k × 100k, 64-D, vs CPU

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

from fedgan.simulator.devices import float32_matmul_is_ieee, resolve_device  # noqa: E402
from fedgan.simulator.metrics.neighbours import device_block_bytes  # noqa: E402
from fedgan.simulator.metrics.prdc import PER_SAMPLE, PRDC, prdc  # noqa: E402

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




def timed_prdc(
    real: np.ndarray, fake: np.ndarray, k: int, device: torch.device, repeats: int
) -> tuple[float, PRDC]:
    """Best wall time of `repeats` calls (results come back as numpy: the GPU is done)."""
    best = float("inf")
    res: PRDC | None = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = prdc(real, fake, k, device=device)
        best = min(best, time.perf_counter() - t0)
    assert res is not None
    return best, res


def device_main(device: torch.device, n: int, d: int, cpu_n: int, repeats: int) -> None:
    """Time PRDC on `device` at n × n, then GPU against CPU in this process at cpu_n × cpu_n."""
    k = 5
    name = torch.cuda.get_device_name(device)
    free, total = torch.cuda.mem_get_info(device)
    print(
        f"device: {name} ({total / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free), "
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch threads; block {device_block_bytes(free) / 2**20:.0f} "
        f"MiB; float32 GEMM trusted (no TF32): {float32_matmul_is_ieee(device)}"
    )
    real, fake = make_sets(n, d, seed=d)
    prdc(real[:2000], fake[:2000], k, device=device)  # warm-up: CUDA context, cuBLAS, kernels
    torch.cuda.reset_peak_memory_stats(device)
    t_dev, res = timed_prdc(real, fake, k, device, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    print(
        f"{n // 1000}k x {n // 1000}k, d={d}, k={k} on {device}: {t_dev:.3f} s (best of "
        f"{repeats}), peak GPU memory {peak:.0f} MiB; P={res.precision:.4f} "
        f"R={res.recall:.4f} D={res.density:.4f} C={res.coverage:.4f}"
    )
    # The CPU path at full size takes minutes; compare both in this process at cpu_n.
    r, f = real[:cpu_n], fake[:cpu_n]
    t_cpu, on_cpu = timed_prdc(r, f, k, torch.device("cpu"), max(1, repeats - 1))
    t_gpu, on_gpu = timed_prdc(r, f, k, device, repeats)
    same = all(np.array_equal(getattr(on_cpu, m), getattr(on_gpu, m)) for m in PER_SAMPLE)
    near = int(np.count_nonzero(on_cpu.nearest_real_index != on_gpu.nearest_real_index))
    print(
        f"{cpu_n // 1000}k x {cpu_n // 1000}k, d={d}, k={k}: CPU {t_cpu:.3f} s, {device} "
        f"{t_gpu:.3f} s, {t_cpu / t_gpu:.1f}x; per-sample arrays identical: {same}; "
        f"nearest-real index differs (float32 near-ties) for {near} of {cpu_n}"
    )
    if not same:
        raise SystemExit("GPU and CPU results differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--n", type=int, default=None, help="points per set (compared case)")
    parser.add_argument("--big", type=int, default=None, help="ours-only case size, 0: none")
    parser.add_argument("--d", type=int, default=None, help="dimension (default 64 and 2)")
    parser.add_argument(
        "--cpu-n", type=int, default=None, help="GPU vs CPU size (default min(n, 20000))"
    )
    parser.add_argument("--child", nargs=5, metavar=("IMPL", "N", "D", "K", "SEED"))
    args = parser.parse_args()
    # One torch thread per core: more would only time-slice the same cores.
    torch.set_num_threads(args.threads)
    if args.child:
        impl, n, d, k, seed = args.child
        measure_child(impl, int(n), int(d), int(k), int(seed), args.threads)
        return
    device = resolve_device(args.device, field="--device")
    if device.type == "cuda":
        n = args.n or 100_000
        cpu_n = args.cpu_n or min(n, 20_000)
        device_main(device, n, args.d or 64, cpu_n, args.repeats or 3)
        return

    n, big = (2_000, 5_000) if args.quick else (10_000, 100_000)
    n = args.n or n
    big = big if args.big is None else args.big
    dims = (64, 2) if args.d is None else (args.d,)
    repeats = args.repeats or (2 if args.quick else 3)
    print(
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, no GPU used"
    )
    print(
        f"{'case':<24}{'ours s':>9}{'ref s':>9}{'speed-up':>10}"
        f"{'ours MiB':>10}{'ref MiB':>9}  agree"
    )
    for d in dims:
        r = compare_case(n, d, 5, repeats, args.threads)
        print(
            f"{r['case']:<24}{r['ours_s']:>9.3f}{r['ref_s']:>9.3f}{r['speedup']:>9.1f}x"
            f"{r['ours_peak_mib']:>10.0f}{r['ref_peak_mib']:>9.0f}  {r['agree']}"
        )
        if not r["agree"]:
            print(f"  ours {r['ours']}\n  ref  {r['ref']}")
    if not big:
        return
    m = measure("ours", big, dims[0], 5, dims[0], args.threads)
    print(
        f"{big // 1000}k x {big // 1000}k, d={dims[0]}, k=5 (ours only): {m['seconds']:.1f} s, "
        f"peak RSS {m['peak_kib'] / 1024:.0f} MiB (+{m['delta_kib'] / 1024:.0f} MiB during "
        f"the call); P={m['precision']:.4f} R={m['recall']:.4f} "
        f"D={m['density']:.4f} C={m['coverage']:.4f}"
    )


if __name__ == "__main__":
    main()
