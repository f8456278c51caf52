"""Many clients' GANs trained in lockstep: the one `GAN.step`, under `torch.func.vmap`.

Every client's tensors are stacked along a new leading axis (`stack`), the pure step runs once
for all clients (`train_batched`), and the result is split again (`unstack`). Nothing here is a
second implementation of training: the vmapped function *is* `GAN.step`, and each client's
randomness comes from its own generator, drawn outside the batched function in the same blocks
(`draw_blocks`) as the sequential `GAN.train` draws them, so client c's noise is bit-identical
on both paths.

Ragged clients are handled by padding and masking: data sets of different sizes are padded to
the largest (indices are drawn per client below its own size, so padding is never read), and a
client with fewer local steps stops updating (its state is held by `torch.where`) once its steps
are done. Under DP-SGD (`dpsgd.py`) each client's real batches are padded, masked, to the
largest client's rows (`dpsgd.pad_rows`: padding contributes nothing), and the per-parameter
noise is drawn by every client from its own stream straight into one stacked buffer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

import numpy as np
import torch
from fedgan.simulator.gan import dpsgd, fastmlp
from fedgan.simulator.gan.conditional import Sampler
from fedgan.simulator.gan.train import (
    ARRAY_GROUPS,
    DRAW_BLOCK,
    GAN,
    GANState,
    Params,
    StepNoise,
    draw_blocks,
)
from torch import Tensor

STATE_GROUPS = ("g", "d", "d_buf", "g_opt", "d_opt", "g_ema", "g_anchor", "d_anchor")
"""The tensor dicts of a `GANState` (everything but the integer step counter)."""

assert {f.name for f in fields(GANState)} == {*STATE_GROUPS, "step"}


def stack(states: Sequence[GANState], device: torch.device | str | None = None) -> GANState:
    """One GANState whose tensors carry a leading client axis [C, ...]. All states must have
    the same keys, shapes and step counter (clients of one round)."""
    if not states:
        raise ValueError("stack needs at least one state")
    step = states[0].step
    if any(s.step != step for s in states):
        raise ValueError("states of one batch must share their step counter")
    groups: dict[str, Params] = {}
    for name in STATE_GROUPS:
        first: Params = getattr(states[0], name)
        groups[name] = {
            k: torch.stack([getattr(s, name)[k] for s in states]).to(device) for k in first
        }
    return GANState(**groups, step=step)


def stack_arrays(
    base: GANState,
    sources: Sequence[Sequence[Mapping[str, np.ndarray]]],
    device: torch.device | str | None = None,
) -> GANState:
    """One stacked state for C clients straight from their arrays, without a GANState each.

    Client c's tensor for `prefix.name` comes from the last dict of `sources[c]` that holds the
    key (e.g. [private, received]: received arrays win, as in `GANState.load_arrays`), else from
    `base`. A value every client shares (the same array object: the round's global model) is
    moved to the device once and broadcast, not copied C times. Anchors start empty.
    """
    C = len(sources)
    groups: dict[str, Params] = {name: {} for name in STATE_GROUPS}
    for prefix, name in ARRAY_GROUPS.items():
        for key, old in getattr(base, name).items():
            full = f"{prefix}.{key}"
            vals: list[np.ndarray | None] = []
            for src in sources:
                vals.append(next((d[full] for d in reversed(src) if full in d), None))
            first = vals[0]
            if all(v is first for v in vals):
                one = old if first is None else torch.as_tensor(np.asarray(first), dtype=old.dtype)
                groups[name][key] = one.to(device).expand(C, *one.shape)
            else:
                fill = old.numpy()
                rows = np.stack([fill if v is None else np.asarray(v) for v in vals])
                groups[name][key] = torch.as_tensor(rows, dtype=old.dtype).to(device)
    return GANState(**groups, step=base.step)


def numpy_arrays(state: GANState) -> dict[str, np.ndarray]:
    """`GANState.arrays()` of a stacked state: each key → one host array [C, ...]."""
    return {
        f"{prefix}.{k}": v.detach().cpu().numpy()
        for prefix, name in ARRAY_GROUPS.items()
        for k, v in getattr(state, name).items()
    }


def unstack(state: GANState, device: torch.device | str | None = "cpu") -> list[GANState]:
    """The per-client states of a stacked state (moved to `device`)."""
    n = client_count(state)
    # One device-to-host copy per stacked tensor, then views: not one tiny copy per client.
    moved = {
        name: {k: v.to(device) for k, v in getattr(state, name).items()} for name in STATE_GROUPS
    }
    out = []
    for i in range(n):
        groups = {name: {k: v[i] for k, v in moved[name].items()} for name in STATE_GROUPS}
        out.append(GANState(**groups, step=state.step))
    return out


def client_count(state: GANState) -> int:
    """Size of the leading client axis of a stacked state."""
    for name in STATE_GROUPS:
        for v in getattr(state, name).values():
            return int(v.shape[0])
    raise ValueError("the state holds no tensors")


def pad_data(datas: Sequence[Tensor], device: torch.device | str | None = None) -> Tensor:
    """Client data sets [N_c, ...] padded with zeros to one tensor [C, max N_c, ...]."""
    n_max = max(int(x.shape[0]) for x in datas)
    out = torch.zeros((len(datas), n_max, *datas[0].shape[1:]), dtype=datas[0].dtype)
    for i, x in enumerate(datas):
        out[i, : x.shape[0]] = x
    return out.to(device)


def _groups(s: GANState) -> tuple[Params, ...]:
    return tuple(getattr(s, name) for name in STATE_GROUPS)


def _state(groups: Sequence[Params], step: int) -> GANState:
    return GANState(**dict(zip(STATE_GROUPS, groups, strict=True)), step=step)


def _where(active: Tensor, new: GANState, old: GANState) -> GANState:
    """Per client: the new state where `active` [C] is true, else the old one."""
    groups = {}
    for name in STATE_GROUPS:
        a, b = getattr(new, name), getattr(old, name)
        groups[name] = {
            k: torch.where(active.view(-1, *([1] * (v.dim() - 1))), v, b[k]) for k, v in a.items()
        }
    return GANState(**groups, step=new.step)


def _stack_noise(
    noises: Sequence[StepNoise], device: torch.device | str | None, dp_noise: Tensor | None = None
) -> StepNoise:
    """The clients' noise stacked on a new leading axis; under DP-SGD each client's real batch
    padded (masked) to the largest client's M rows first (`dpsgd.pad_rows`), and the DP noise
    the clients drew into one buffer (`dp_noise` [C, block, n_critic, P]) attached."""
    if noises[0].mask is not None:
        m = max(dpsgd.rows_of(n) for n in noises)
        noises = [dpsgd.pad_rows(n, m) for n in noises]
    names = list(noises[0].tensors())
    out = {k: torch.stack([n.tensors()[k] for n in noises]).to(device) for k in names}
    if dp_noise is not None:
        out["dp_noise"] = dp_noise.to(device)
    return StepNoise(**out)


def _draw(
    gan: GAN,
    n_data: int,
    gen: torch.Generator,
    n_steps: int,
    block: int,
    offset: int,
    dp_out: Tensor | None = None,
    sampler: Sampler | None = None,
) -> StepNoise:
    """A client's noise for steps offset..offset+block of its loop: the steps it really takes
    are drawn exactly as `GAN.train` draws them; steps past its end are zeros (masked). Under
    DP-SGD the per-parameter noise is drawn into `dp_out` [block, n_critic, P] (one client's
    part of a buffer shared by all, not stacked afterwards) and left out of the result."""
    own = min(block, max(n_steps - offset, 0))
    c = gan.config
    pad = StepNoise(
        idx=torch.zeros(block, c.n_critic, c.batch_size, dtype=torch.long),
        z_d=torch.zeros(block, c.n_critic, c.batch_size, c.latent_dim),
        z_g=torch.zeros(block, c.batch_size, c.latent_dim),
        eps=torch.zeros(block, c.n_critic, c.batch_size, 1),
    )
    if c.dp is not None:
        assert dp_out is not None
        dp_out[own:].zero_()
        pad = StepNoise(
            **pad.tensors(), mask=torch.zeros(block, c.n_critic, c.batch_size, dtype=torch.bool)
        )
    if own == 0:
        return pad
    drawn = gan.draw_steps(n_data, gen, own, None if dp_out is None else dp_out[:own], sampler)
    drawn = StepNoise(**{k: v for k, v in drawn.tensors().items() if k != "dp_noise"})
    if own == block:
        return drawn
    return drawn.map(lambda _, v: torch.cat([v, v.new_zeros(block - own, *v.shape[1:])]))


def train_batched(
    gan: GAN,
    state: GANState,
    data: Tensor,
    n_data: Sequence[int],
    gens: Sequence[torch.Generator],
    n_steps: int | Sequence[int],
    total_steps: int | Sequence[int] | None = None,
    start_steps: Sequence[int] | None = None,
    samplers: Sequence[Sampler] | None = None,
) -> tuple[GANState, dict[str, Tensor]]:
    """Train C clients at once: `n_steps` (one count, or one per client) generator steps each.

    state: stacked (`stack`); data [C, N, ...] padded client data (`pad_data`), client c's
    real points in its first `n_data[c]` rows; gens: one generator per client (its noise
    stream). Client c's lr schedule spans `total_steps` (one, or one per client) from its
    `start_steps[c]` (default: `state.step` for all), as in `GAN.train`. A conditional GAN
    takes `samplers` (client c's `Condition.sampler`): the vmapped step is the same
    `GAN.step` (its [x, c] concatenations and cross-entropy term are pure), not the
    hand-batched MLP step (`fastmlp.why_not`). Returns the stacked
    new state (step counter advanced by the largest count) and each statistic's mean over the
    client's own steps, [C].
    """
    C = len(gens)
    steps = [int(n_steps)] * C if isinstance(n_steps, int) else [int(n) for n in n_steps]
    starts = [state.step] * C if start_steps is None else [int(s) for s in start_steps]
    T = max(steps)
    if total_steps is None:
        totals = [st + T for st in starts]
    elif isinstance(total_steps, int):
        totals = [total_steps] * C
    else:
        totals = [int(n) for n in total_steps]
    if {len(steps), len(starts), len(totals), len(n_data), data.shape[0]} != {C}:
        raise ValueError("state, data, n_data, gens and the step counts need one entry a client")
    device = data.device
    counts = torch.tensor(steps, device=device)
    ragged = min(steps) != T
    # One schedule for all (a Python float, as the sequential loop passes), else one lr a client.
    shared = len(set(zip(starts, totals, strict=True))) == 1
    sums: dict[str, Tensor] = {}

    def one(
        groups: tuple[Params, ...], x: Tensor, noise: dict[str, Tensor], lr: float | Tensor
    ) -> tuple[tuple[Params, ...], dict[str, Tensor]]:
        new, stats = gan.step(_state(groups, 0), x, StepNoise(**noise), lr)  # type: ignore[arg-type]
        return _groups(new), stats

    # MLPs take the hand-batched step on flat buffers (fastmlp), everything else vmap(GAN.step).
    fast = fastmlp.plan(gan)
    flat = fast.to_flat(state) if fast is not None else None
    t = 0
    dp_buf = None  # DP-SGD's per-parameter noise of a block, drawn in place (dpsgd.draw_steps)
    if gan.config.dp is not None:
        nc, p = gan.config.n_critic, dpsgd.noise_size(gan.critic)
        dp_buf = torch.empty(C, min(T, DRAW_BLOCK), nc, p)
    for block in draw_blocks(T):
        dp = None if dp_buf is None else dp_buf[:, :block]
        noise = _stack_noise(
            [
                _draw(
                    gan,
                    n_data[c],
                    gens[c],
                    steps[c],
                    block,
                    t,
                    None if dp is None else dp[c],
                    None if samplers is None else samplers[c],
                )
                for c in range(C)
            ],
            device,
            dp,
        )
        for i in range(block):
            lrs = [gan.config.lr_scale(st + t, tot) for st, tot in zip(starts, totals, strict=True)]
            lr: float | Tensor = lrs[0] if shared else torch.tensor(lrs, device=device)
            step_noise = noise.map(lambda _, v: v[:, i]).tensors()  # noqa: B023 (used at once)
            active = t < counts
            if fast is not None and flat is not None:
                mask = active if ragged else None
                stats = fast.step(flat, data, StepNoise(**step_noise), lr, mask)
            else:
                groups, stats = torch.func.vmap(one, in_dims=(0, 0, 0, None if shared else 0))(
                    _groups(state), data, step_noise, lr
                )
                new = _state(groups, state.step + 1)
                if ragged:
                    new = _where(active, new, state)
                state = new
            for k, v in stats.items():
                v = torch.where(active, v, torch.zeros_like(v)) if ragged else v
                sums[k] = sums[k] + v if k in sums else v
            t += 1
    if fast is not None and flat is not None:
        state = fast.to_state(flat, state)
    means = {k: v / counts.to(v.dtype) for k, v in sums.items()}
    return state, means


def lipschitz_batched(
    gan: GAN,
    state: GANState,
    data: Tensor,
    n_data: Sequence[int],
    gens: Sequence[torch.Generator],
    n: int = 256,
) -> dict[str, Tensor]:
    """`diagnostics.lipschitz_metrics` for every client of a stacked state: each key → [C].
    Client c's points and noise are drawn from `gens[c]` exactly as the sequential call draws
    them; the estimates are the same pure function, vmapped (for MLPs: `FastMLP.lipschitz`)."""
    from fedgan.simulator.gan.diagnostics import lipschitz_draw, lipschitz_tensors

    draws = [lipschitz_draw(gan, n_data[c], g, n) for c, g in enumerate(gens)]
    idx, z, eps = (torch.stack([d[i] for d in draws]).to(data.device) for i in range(3))
    real = data[torch.arange(len(gens), device=data.device)[:, None], idx]
    fast = fastmlp.plan(gan)
    if fast is not None:  # MLPs: the hand-written forward and input gradient, no vmap
        return fast.lipschitz(state.g, state.d, real, z, eps)
    fake = torch.func.vmap(gan.G)(state.g, z).detach()

    def one(d: Params, d_buf: Params, r: Tensor, f: Tensor, e: Tensor) -> dict[str, Tensor]:
        return lipschitz_tensors(gan, d, d_buf, r, f, e)

    return torch.func.vmap(one)(state.d, state.d_buf, real, fake, eps)
