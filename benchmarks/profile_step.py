"""Where a batched GAN step's time goes on the CPU, against its FLOPs and a plain GEMM's speed.

    .venv/bin/python benchmarks/profile_step.py [--cases a,b,...] [--steps N] [--repeats N]
        [--threads N] [--compile]

For each case (C clients × hidden layers × width, batch B, non-saturating loss, Adam, with or
without the R1 penalty — gradient penalty on real data, centre 0, λ 0.1):

- **FLOPs** of one step, counted by `torch.utils.flop_counter` on each path (matmuls only: the
  elementwise work is not counted), and the **compute bound**: GFLOP/s of a plain 1024² GEMM
  and of one `bmm` at the step's dominant shape [C, 2B, w] × [C, w, w], in this process;
- **time per step** of `batched.train_batched` on the reference path (`GAN.step` under
  `torch.func.vmap` and `torch.func.grad`, `fastmlp.ENABLED = False`) and on the hand-batched
  path (`fastmlp`), interleaved, median of `--repeats`, as CPU time of this process (one torch
  thread: robust to other jobs on the machine) and wall time;
- **breakdown** (torch profiler, one run of each path): time in GEMM kernels, in the other
  kernels (elementwise, reductions, copies), and the rest of the step — Python, torch.func /
  vmap and autograd dispatch — as the step's CPU time minus the kernels' self time; the
  optimizer (the update alone, vmapped `optim.update` vs `fastmlp`'s flat update, both
  networks) and the penalty (the step with R1 minus the step without) measured apart.

`--compile` also times `torch.compile` of the hand-batched step (its compile time and the
steady-state step), which is not used by default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedgan.simulator.gan import batched, fastmlp, optim  # noqa: E402
from fedgan.simulator.gan.networks import NetworkSpec  # noqa: E402
from fedgan.simulator.gan.optim import OptimizerSpec  # noqa: E402
from fedgan.simulator.gan.train import GAN, GANConfig, GANState  # noqa: E402

R1 = {"lam": 0.1, "sampling": "real", "center": 0.0}
GEMMS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"}


@dataclass(frozen=True)
class Case:
    clients: int
    depth: int
    width: int
    batch: int
    r1: bool

    @property
    def name(self) -> str:
        pen = " + R1" if self.r1 else ""
        return f"{self.clients} × {self.depth}×{self.width}, batch {self.batch}{pen}"


CASES = {
    "a": Case(100, 2, 64, 64, False),  # engine_scale --only compare --widths 64
    "b": Case(100, 2, 64, 64, True),
    "c": Case(5, 3, 128, 128, True),  # five seeds of the default recipe
    "d": Case(1, 3, 128, 128, True),  # one centralized run of the default recipe
}


def make(case: Case, r1: bool | None = None) -> tuple[GAN, GANState, torch.Tensor, list[int]]:
    use_r1 = case.r1 if r1 is None else r1
    spec = NetworkSpec(widths=(case.width,) * case.depth)
    config = GANConfig(
        latent_dim=2,
        generator=spec,
        critic=spec,
        objective="non_saturating",
        lipschitz="gradient_penalty" if use_r1 else "none",
        lipschitz_params=R1 if use_r1 else {},
        batch_size=case.batch,
        g_opt=OptimizerSpec(lr=1e-3),
        d_opt=OptimizerSpec(lr=1e-3),
    )
    gan = GAN(config, data_dim=2)
    gen = torch.Generator().manual_seed(0)
    datas = [torch.randn(500, 2, generator=gen) for _ in range(case.clients)]
    state = batched.stack([gan.init_state(c) for c in range(case.clients)])
    return gan, state, batched.pad_data(datas), [500] * case.clients


def runner(case: Case, steps: int, r1: bool | None = None) -> Callable[[], object]:
    gan, state, data, sizes = make(case, r1)

    def run() -> object:
        gens = [torch.Generator().manual_seed(c) for c in range(case.clients)]
        return batched.train_batched(gan, state, data, sizes, gens, steps)

    return run


def seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def on_path(fast: bool, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        fastmlp.ENABLED = fast
        try:
            return fn()
        finally:
            fastmlp.ENABLED = True

    return run


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """CPU and wall seconds of each function, alternating, after one warm-up call each."""
    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {f"{k}.{m}": [] for k in fns for m in ("cpu", "wall")}
    for _ in range(repeats):
        for k, fn in fns.items():
            c, w = seconds(fn)
            out[f"{k}.cpu"].append(c)
            out[f"{k}.wall"].append(w)
    return out


def gflops(fn: Callable[[], object], flop: float, n: int = 10) -> float:
    fn()
    best = min(seconds(lambda: [fn() for _ in range(n)])[0] for _ in range(3))
    return flop * n / best / 1e9


def gemm_bound(case: Case) -> tuple[float, float]:
    """GFLOP/s of a plain 1024² GEMM and of a bmm at the step's dominant shape."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    plain = gflops(lambda: a @ b, 2 * 1024**3)
    c, r, w = case.clients, 2 * case.batch, case.width
    x, y = torch.randn(c, r, w), torch.randn(c, w, w)
    return plain, gflops(lambda: torch.bmm(x, y), 2 * c * r * w * w, n=20)


def flops(fn: Callable[[], object]) -> float | None:
    """Matmul FLOPs of one call; None where the counter cannot follow (its hooks refuse
    torch.func's double backward under vmap)."""
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except RuntimeError:
        return None
    return float(counter.get_total_flops())


def breakdown(fn: Callable[[], object]) -> tuple[float, float, float]:
    """(GEMM kernels, other kernels, total) seconds of one call, from the profiler (wall
    times: use them as shares of the total)."""
    fn()
    w0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = time.perf_counter() - w0
    gemm = other = 0.0
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        t = e.self_cpu_time_total / 1e6
        if e.key in GEMMS:
            gemm += t
        else:
            other += t
    return gemm, other, total


def optimizer_seconds(case: Case, steps: int) -> tuple[float, float]:
    """CPU seconds a step of both networks' Adam updates takes: vmapped `optim.update` on the
    stacked parameter dicts, and `fastmlp`'s update on flat buffers."""
    gan, state, _, _ = make(case)
    spec = gan.config.d_opt
    fast = fastmlp.plan(gan)
    assert fast is not None
    flat = fast.to_flat(state)

    def ref() -> None:
        for _ in range(steps):
            for p, o in ((state.g, state.g_opt), (state.d, state.d_opt)):
                torch.func.vmap(lambda p, g, o: optim.update(spec, p, g, o, 1e-3))(p, p, o)

    grads = {id(flat.g): flat.g.clone(), id(flat.d): flat.d.clone()}

    def ours() -> None:
        for _ in range(steps):
            for p, o in ((flat.g, flat.g_opt), (flat.d, flat.d_opt)):
                fastmlp._update(spec, p, grads[id(p)], o, 1e-3, None, True)

    t = interleaved({"ref": ref, "fast": ours}, 3)
    return statistics.median(t["ref.cpu"]) / steps, statistics.median(t["fast.cpu"]) / steps


def compiled(case: Case, steps: int) -> tuple[float, float, float]:
    """(compile seconds, eager and compiled CPU seconds per step) of the hand-batched step."""
    from fedgan.simulator.gan.train import StepNoise

    gan, state, data, sizes = make(case)
    fast = fastmlp.plan(gan)
    assert fast is not None
    gens = [torch.Generator().manual_seed(c) for c in range(case.clients)]
    drawn = [gan.draw_steps(s, g, steps) for s, g in zip(sizes, gens, strict=True)]
    noise = batched._stack_noise(drawn, None)

    def loop(step: Callable[..., Any]) -> None:
        f = fast.to_flat(state)
        fast.bind(f, data)
        for i in range(steps):
            n = StepNoise(noise.idx[:, i], noise.z_d[:, i], noise.z_g[:, i], noise.eps[:, i])
            step(f, n, 1.0)

    # The fused Adam mutates row views of its inputs, which the compiler's functionalization
    # refuses: it stays eager (a graph break), everything else is compiled.
    fastmlp._fused_adam = torch.compiler.disable(fastmlp._fused_adam)  # type: ignore[assignment]
    step = torch.compile(fast.update, dynamic=False)
    t0 = time.perf_counter()
    loop(step)
    took = time.perf_counter() - t0
    t = interleaved({"eager": lambda: loop(fast.update), "compiled": lambda: loop(step)}, 3)
    eager, comp = (statistics.median(t[f"{k}.cpu"]) / steps for k in ("eager", "compiled"))
    return took, eager, comp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="a,b,c,d", help=f"of {', '.join(CASES)}")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, {args.threads} torch "
          f"thread(s), load average {os.getloadavg()[0]:.1f}")
    for key in args.cases.split(","):
        case = CASES[key]
        n = args.steps
        run = runner(case, n)
        plain, bmm = gemm_bound(case)
        f_ref = flops(on_path(False, runner(case, 1)))
        f_fast = flops(on_path(True, runner(case, 1)))
        t = interleaved({"ref": on_path(False, run), "fast": on_path(True, run)}, args.repeats)
        ref_ms = statistics.median(t["ref.cpu"]) / n * 1e3
        fast_ms = statistics.median(t["fast.cpu"]) / n * 1e3
        ratios = [a / b for a, b in zip(t["ref.cpu"], t["fast.cpu"], strict=True)]
        wall = [a / b for a, b in zip(t["ref.wall"], t["fast.wall"], strict=True)]
        print(f"\n## {key}: {case.name}   (load average {os.getloadavg()[0]:.1f})")
        print(f"compute bound: plain 1024² GEMM {plain:.0f} GFLOP/s, bmm at the step's shape "
              f"{bmm:.0f} GFLOP/s")
        print("| path | MFLOP/step | CPU ms/step | GFLOP/s | GEMM ms | other kernels ms "
              "| Python + dispatch ms | optimizer ms | penalty ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        opt_ref, opt_fast = optimizer_seconds(case, n)
        if case.r1:
            bare = runner(case, n, r1=False)
            tb = interleaved({"ref": on_path(False, bare), "fast": on_path(True, bare)}, 3)
            pen = {p: ms - statistics.median(tb[f"{p}.cpu"]) / n * 1e3
                   for p, ms in (("ref", ref_ms), ("fast", fast_ms))}
        for path, ms, fl, opt_s in (("reference (vmap)", ref_ms, f_ref, opt_ref),
                                    ("hand-batched", fast_ms, f_fast, opt_fast)):
            p = "ref" if path.startswith("ref") else "fast"
            gemm, other, total = breakdown(on_path(p == "fast", run))
            g, o = ms * gemm / total, ms * other / total  # the profiler's shares of the time
            pen_s = f"{pen[p]:.2f}" if case.r1 else "—"
            mf = "n/a" if fl is None else f"{fl / 1e6:.1f}"
            rate = "—" if fl is None else f"{fl / 1e6 / ms:.1f}"
            print(f"| {path} | {mf} | {ms:.2f} | {rate} | {g:.2f} | {o:.2f} | "
                  f"{ms - g - o:.2f} | {opt_s * 1e3:.2f} | {pen_s} |")
        print(f"hand-batched / reference: {statistics.median(ratios):.2f}× CPU time "
              f"(per repetition {', '.join(f'{r:.2f}' for r in ratios)}), "
              f"{statistics.median(wall):.2f}× wall time")
        if args.compile:
            took, eager, comp = compiled(case, n)
            print(f"torch.compile of the hand-batched step: {took:.0f} s to compile, "
                  f"{eager * 1e3:.2f} → {comp * 1e3:.2f} CPU ms/step ({eager / comp:.2f}×)")


if __name__ == "__main__":
    main()
