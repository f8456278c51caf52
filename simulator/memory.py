"""How much memory a run will need, estimated from the scenario before anything is built (a
plug-in network is counted as an MLP of its widths), and the warning `fedgan run` prints when
that is more than the machine has."""

from __future__ import annotations

import functools
import json
import math

from fedgan.simulator.gan.kinds import DCGAN_SIZES
from fedgan.simulator.scenario import NetworkModel, OptimizerModel, Scenario

DATA_COPIES = 3
"""Copies of the data set's float32 points alive at once: the full array, its train/holdout
split, and the clients' shards (federated) or the training tensor (centralized)."""
ACTIVATION_COPIES = 4
"""Per-unit activations kept per sample: forward, backward, and the double backward of a
gradient penalty."""
_SLOTS = {"adam": 2, "rmsprop": 1}
"""Optimizer moments per parameter (see simulator.gan.optim.init_state)."""


def _slots(opt: OptimizerModel) -> int:
    return _SLOTS.get(opt.name, 1 if opt.momentum else 0)


def _mlp_params(in_dim: int, widths: list[int], out_dim: int) -> int:
    dims = [in_dim, *widths, out_dim]
    return sum(i * o + o for i, o in zip(dims, dims[1:], strict=False))


def _dcgan_side(net: NetworkModel, data_dim: int, channels: int) -> int | None:
    """The lowest side s = H/4 of a dcgan network on square images of data_dim = C·H·H values
    (7 for 28×28, 8 for 32×32), or None where the network would not build (then it is counted
    as an MLP: an estimate never fails)."""
    if net.kind != "dcgan" or len(net.widths) < 2 or channels < 1:
        return None
    side = math.isqrt(data_dim // channels)
    return side // 4 if side * side * channels == data_dim and side in DCGAN_SIZES else None


def _dcgan_params(widths: list[int], channels: int, s: int, latent: int, *, critic: bool) -> int:
    """simulator.gan.networks.DCGANCritic / DCGANGenerator, by formula: widths [w₁, w₂, …]
    from the image side, 4×4 stride-2 (up-)convs C↔w₁↔w₂, 3×3 convs w₂↔w₃↔… at side s."""
    c, w1, w2 = channels, widths[0], widths[1]
    extra = sum(a * b * 9 for a, b in zip(widths[1:], widths[2:], strict=False))
    if critic:  # convs C→w₁→w₂ (+ biases w₁, w₂), 3×3 convs up the widths, head w_last·s²→1
        return (
            c * w1 * 16 + w1 + w1 * w2 * 16 + w2 + extra + sum(widths[2:]) + widths[-1] * s * s + 1
        )
    # linear latent→w_last·s², 3×3 convs down to w₂ (biases w_{k-1}), up-convs w₂→w₁→C
    return (
        latent * widths[-1] * s * s
        + widths[-1] * s * s
        + extra
        + sum(widths[1:-1])
        + w2 * w1 * 16
        + w1
        + w1 * c * 16
        + c
    )


def network_units(net: NetworkModel, data_dim: int, channels: int) -> int:
    """Hidden units of a network per sample (its layers' outputs, the data and latent apart):
    an MLP's widths; a conv layer's channels × its spatial positions (8×8 conv: at most 4×4;
    dcgan: w₁ at side 2s, every further width at side s, s = H/4 — the same count for the
    generator and the critic, which mirror each other)."""
    s = _dcgan_side(net, data_dim, channels)
    if s is not None:
        return net.widths[0] * (2 * s) ** 2 + sum(net.widths[1:]) * s * s
    return sum(net.widths) * (16 if net.kind == "conv" else 1)


def network_params(
    net: NetworkModel, in_dim: int, out_dim: int, channels: int, *, critic: bool
) -> int:
    """Parameter count of a network, by formula: building one may be what does not fit.

    Follows simulator.gan.networks (conv: 4×4 stride-2 convs on 8×8 images; dcgan: see
    `_dcgan_params`); a plug-in kind is counted as an MLP of its widths. `in_dim` / `out_dim`:
    data dims C·H·W and 1 (critic) or latent and C·H·W (generator).
    """
    s = _dcgan_side(net, in_dim if critic else out_dim, channels)
    if s is not None:
        return _dcgan_params(net.widths, channels, s, in_dim, critic=critic)
    if net.kind == "conv" and len(net.widths) == 2:
        a, b = net.widths
        if critic:  # c→a→b convs, linear head from b·2·2
            return channels * a * 16 + a + a * b * 16 + b + b * 4 + 1
        # linear latent→b·2·2, up-convs b→a→channels
        return in_dim * b * 4 + b * 4 + b * a * 16 + a + a * channels * 16 + channels
    branches = 2 if critic and net.kind == "two_branch" else 1
    return branches * _mlp_params(in_dim, net.widths, out_dim)


@functools.lru_cache(maxsize=16)
def _data_shape(dataset: str, n_samples: int | None, params_json: str) -> tuple[int, int, int]:
    """(points, dimensions, image channels) of a validated data spec."""
    from fedgan.simulator.data import load_dataset

    params = json.loads(params_json)
    small = load_dataset(dataset, 64, 0, params)
    d = int(small.X.shape[1])
    channels = small.image_shape[0] if small.image_shape else 1
    n = n_samples
    if n is None:  # "all rows": only a full build knows how many
        try:
            n = int(load_dataset(dataset, None, 0, params).X.shape[0])
        except Exception:  # noqa: BLE001 - an estimate must not fail; assume a typical size
            n = 20_000
    return n, d, channels


EVAL_BLOCK_BYTES = 8 * 2**20
"""One k-NN block of an evaluation on the CPU: `simulator.metrics.neighbours._BLOCK_BYTES`
(a test keeps them equal), not imported from there — that package brings torch and
fairlearn, which a scenario's validation does not need."""


def memory_breakdown(s: Scenario) -> dict[str, int]:
    """Estimated peak bytes of a run, by part (float32 everywhere but evaluation, float64).

    * data: points × dims × 4 × DATA_COPIES;
    * models: the global generator and critic, gradients, optimizer moments, EMA copy;
    * private: federated, what never travels (see federation.FEDERATED_PREFIXES) × clients,
      since every client's state is kept across rounds;
    * replies: federated, the travelling arrays of one round's sampled clients, all held
      by the strategy before it aggregates;
    * activations: batch × units × ACTIVATION_COPIES;
    * evaluation: generated + held-out points in float64 plus one bounded k-NN block.
    """
    f4 = 4
    n, d, channels = _data_shape(
        s.data.dataset, s.data.n_samples, json.dumps(s.data.params, sort_keys=True, default=str)
    )
    g = network_params(s.gan.generator, s.gan.latent_dim, d, channels, critic=False)
    c = network_params(s.gan.critic, d, 1, channels, critic=True)
    g_opt, d_opt = _slots(s.gan.g_opt) * g, _slots(s.gan.d_opt) * c
    ema = g if s.gan.ema else 0
    parts = {
        "data": n * d * f4 * DATA_COPIES,
        "models": (2 * g + 2 * c + g_opt + d_opt + ema) * f4,  # weights + gradients + state
        "private": 0,
        "replies": 0,
    }
    f = s.federation
    if f is not None:
        travel = {"both": g + c, "generator": g, "critic": c}[f.federate]
        private = g + c + g_opt + d_opt + ema - travel
        parts["private"] = private * s.partition.n_clients * f4
        parts["replies"] = travel * (f.clients_per_round or s.partition.n_clients) * f4
    units = sum(network_units(net, d, channels) for net in (s.gan.generator, s.gan.critic))
    parts["activations"] = (
        s.gan.batch_size * (units + d + s.gan.latent_dim) * f4 * (ACTIVATION_COPIES)
    )
    held_out = int(n * s.data.holdout)
    parts["evaluation"] = (s.evaluation.n_samples + held_out) * d * 8 + EVAL_BLOCK_BYTES
    return parts


def estimate_memory_bytes(s: Scenario) -> int:
    """Estimated peak memory of a run in bytes (the sum of `memory_breakdown`)."""
    return sum(memory_breakdown(s).values())


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def scenario_warnings(s: Scenario, available: int | None = None) -> list[str]:
    """Problems that do not stop a run but probably should: today, not enough memory.

    `available` defaults to the machine's MemAvailable; with neither, nothing is said.
    """
    available = available_memory_bytes() if available is None else available
    if available is None:
        return []
    try:
        parts = memory_breakdown(s)
    except Exception:  # noqa: BLE001 - an estimate (a plug-in dataset built again) never stops a run
        return []
    total = sum(parts.values())
    if total <= available:
        return []
    top = ", ".join(
        f"{k} {v / 2**30:.1f} GiB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    )
    return [
        f"(top): the run needs about {total / 2**30:.1f} GiB of memory ({top}) but "
        f"{available / 2**30:.1f} GiB is available"
    ]
