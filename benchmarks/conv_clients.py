"""A conv client round's cost: DCGAN clients (28×28, 1 channel) vectorized vs sequential.

    .venv/bin/python benchmarks/conv_clients.py [--quick] [--clients 10,50] [--widths 64,128]
        [--batch 64] [--steps 5] [--control r1] [--repeats 3] [--threads 1]
        [--device cpu|cuda|auto]

Data: the bundled 8×8 digits (scikit-learn's 1,797), upsampled bilinearly to 28×28 in [−1, 1]
so that the `dcgan` networks are the ones measured, split at random into C equal shards (50
clients: ~36 images each). The GAN: `dcgan` generator and critic of `--widths` (channels from
the image side), latent 64, non-saturating loss with `--control` (default R1, λ 0.1: the
project's default, a double backward through conv), Adam, batch `--batch`.

A round: every client starts from the same global state (as after FedAvg) and runs `--steps`
local generator steps (n_critic 1) on its own shard with its own noise stream.
- sequential: one client after another, `GAN.train` (what the in-process engine runs per
  client; on cuda the same `GAN.step` loop with each block of noise moved to the device);
- vectorized: the C states stacked, `batched.train_batched` (vmap of the same `GAN.step` over
  the client axis), the result split per client on the host, as the vectorized engine does.
Timed: that local training with the states' set-up and the data padding (the engine's array
conversion, client evaluation and Lipschitz estimates are left out: they are the same on both
sides or small). Both paths run in this process, interleaved, `--repeats` times after a
warm-up; the median wall time a round. Check lines give the largest difference between the two
paths' final generator parameters: in float64 (3 clients; they agree to rounding, ~1e-15) and
in float32 per client count (up to ~lr: Adam's first steps lr·g/(√v + ε) turn the sign of a
gradient that is ~0 but for rounding into a step of up to lr). The last line is the ratio at
the largest client count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedgan.simulator.data import load_dataset  # noqa: E402
from fedgan.simulator.gan import batched  # noqa: E402
from fedgan.simulator.gan.networks import NetworkSpec  # noqa: E402
from fedgan.simulator.gan.optim import OptimizerSpec  # noqa: E402
from fedgan.simulator.gan.train import GAN, GANConfig, GANState, draw_blocks  # noqa: E402

IMAGE = (1, 28, 28)


def digits_28() -> torch.Tensor:
    """The bundled digits [1797, 784], upsampled 8×8 → 28×28 (bilinear), in [−1, 1]."""
    x = torch.as_tensor(load_dataset("digits", None, 0, {}).X).reshape(-1, 1, 8, 8)
    up = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return up.clamp(-1.0, 1.0).reshape(-1, 784)


def shards(x: torch.Tensor, clients: int, seed: int = 0) -> list[torch.Tensor]:
    """x split at random into `clients` near-equal shards."""
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    return [x[torch.as_tensor(ix)] for ix in np.array_split(perm, clients)]


def make_gan(widths: tuple[int, ...], batch: int, control: str) -> GAN:
    spec = NetworkSpec(kind="dcgan", widths=widths)
    params = {"lam": 0.1} if control == "r1" else {}
    config = GANConfig(
        latent_dim=64,
        generator=spec,
        critic=spec,
        objective="non_saturating",
        lipschitz=control,
        lipschitz_params=params,
        batch_size=batch,
        g_opt=OptimizerSpec(lr=2e-4, betas=(0.5, 0.999)),
        d_opt=OptimizerSpec(lr=2e-4, betas=(0.5, 0.999)),
    )
    return GAN(config, data_dim=784, image_shape=IMAGE)


def to(state: GANState, device: torch.device) -> GANState:
    groups = {
        name: {k: v.to(device) for k, v in getattr(state, name).items()}
        for name in batched.STATE_GROUPS
    }
    return GANState(**groups, step=state.step)


def sequential(
    gan: GAN, state: GANState, datas: list[torch.Tensor], steps: int, device: torch.device
) -> list[GANState]:
    """Each client alone: `GAN.train` on the CPU; on another device the same `GAN.step` loop
    with the noise (drawn on the CPU from the client's generator) moved there."""
    out = []
    for c, x in enumerate(datas):
        gen = torch.Generator().manual_seed(c)
        if device.type == "cpu":
            out.append(gan.train(state, x, steps, gen, total_steps=steps)[0])
            continue
        s = state
        for block in draw_blocks(steps):
            noise = gan.draw_steps(x.shape[0], gen, block).map(lambda _, v: v.to(device))
            for t in range(block):
                s, _ = gan.step(s, x, noise.at(t), gan.config.lr_scale(s.step, steps))
        out.append(s)
    return out


def vectorized(
    gan: GAN, state: GANState, datas: list[torch.Tensor], steps: int, device: torch.device
) -> list[GANState]:
    """All clients at once: stacked states, `batched.train_batched`, split on the host."""
    stacked = batched.stack([state] * len(datas), device)
    data = batched.pad_data(datas, device)
    gens = [torch.Generator().manual_seed(c) for c in range(len(datas))]
    sizes = [int(x.shape[0]) for x in datas]
    new, _ = batched.train_batched(gan, stacked, data, sizes, gens, steps, total_steps=steps)
    return batched.unstack(new)


def max_diff(a: list[GANState], b: list[GANState]) -> float:
    return max(
        float((x.g[k].cpu() - y.g[k].cpu()).abs().max())
        for x, y in zip(a, b, strict=True)
        for k in x.g
    )


def check64(
    args: argparse.Namespace, widths: tuple[int, ...], x: torch.Tensor, device: torch.device
) -> float:
    """Largest |Δ| between the two paths' generator parameters after a round of 3 clients, in
    float64. In float32 they differ by more than rounding where a gradient is ~0 but for
    rounding: Adam's first steps lr·g/(√v + ε) turn its sign into a step of up to lr."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        gan = make_gan(widths, args.batch, args.control)
        state = to(gan.init_state(0), device)
        datas = [d.to(device, torch.float64) for d in shards(x, max(3, x.shape[0] // 40))[:3]]
        return max_diff(
            sequential(gan, state, datas, args.steps, device),
            vectorized(gan, state, datas, args.steps, device),
        )
    finally:
        torch.set_default_dtype(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="widths 8,16, batch 16, 2 steps, 1 repeat")
    ap.add_argument("--clients", default="10,50")
    ap.add_argument("--widths", default="64,128")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--control", default="r1", choices=("r1", "spectral_norm", "none"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    args = ap.parse_args()
    if args.quick:
        args.widths, args.batch, args.steps, args.repeats = "8,16", 16, 2, 1
    torch.set_num_threads(args.threads)
    dev = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if dev == "auto" else dev)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    widths = tuple(int(w) for w in args.widths.split(","))
    counts = [int(c) for c in args.clients.split(",")]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{os.cpu_count()} CPU cores"
    )
    print(f"torch {torch.__version__}, {name}, {args.threads} torch thread(s)")
    gan = make_gan(widths, args.batch, args.control)
    n_g = sum(v.numel() for v in gan.generator.parameters())
    n_d = sum(v.numel() for v in gan.critic.parameters())
    print(
        f"dcgan widths {list(widths)} (generator {n_g:,} / critic {n_d:,} parameters), 28×28×1, "
        f"batch {args.batch}, {args.steps} local steps, {args.control}, {args.repeats} repeat(s)"
    )
    x = digits_28()
    state = to(gan.init_state(0), device)
    agree = check64(args, widths, x, device)
    print(f"agreement, float64, 3 clients: max |Δ generator param| {agree:.1e}")
    ratios = {}
    for C in counts:
        datas = [d.to(device) for d in shards(x, C)]
        fns = {
            "sequential": lambda: sequential(gan, state, datas, args.steps, device),  # noqa: B023
            "vectorized": lambda: vectorized(gan, state, datas, args.steps, device),  # noqa: B023
        }
        out = {k: fn() for k, fn in fns.items()}  # warm-up, and the agreement check
        sync()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratios[C] = med["sequential"] / med["vectorized"]
        print(
            f"{C:4d} clients (~{x.shape[0] // C} images each): sequential {med['sequential']:.3f} s"
            f" / round, vectorized {med['vectorized']:.3f} s / round, {ratios[C]:.2f}x; "
            f"float32 max |Δ generator param| {max_diff(out['sequential'], out['vectorized']):.1e}"
        )
    last = max(counts)
    print(f"conv vectorized vs sequential: {ratios[last]:.2f}× at {last} clients")


if __name__ == "__main__":
    main()
