"""Sample-level differential privacy for the critic: DP-SGD (Abadi et al. 2016).

With `GANConfig.dp = DPSGD(clip=C, noise_multiplier=σ, sampling=...)` every critic update of a
client with n training points and batch size B (`config.batch_size`) is one DP-SGD step:

**Sampling** (drawn outside the step, from the step's own generator, in `draw_steps`):

- `poisson`: every one of the n points joins the batch independently with q = B/n. Realized
  as a Bernoulli draw over *all* n points (`torch.rand(n, dtype=float64) < q`, so q is exact
  to 2⁻⁵³), whose selected indices are then compacted, in index order, to the front of a
  fixed-shape index tensor of M columns, M = the largest realized batch of the noise block
  (and, on the batched path, of all clients: `pad_rows`); `mask` marks the selected columns.
  Nothing is truncated — M is never smaller than a realized batch — so the batch is exactly
  the Poisson sample (variable size, expected size qn = B).
- `fixed`: B distinct points uniformly without replacement (`torch.randperm(n)[:B]`, M = B).

Without DP the reference draws B indices *with* replacement (`torch.randint`), as before.

**What one real sample contributes, and is clipped.** For real row i (data point x_i, paired
with fake row i mod B and its interpolation weight ε_i) the per-sample gradient over *all*
critic parameters, as one vector, is

    g_i = ∇_θ [ L([v(x_i)], [0]) + P_i ],

L the objective's critic loss evaluated on a batch of one real output against a fake output
0 held constant (for every built-in objective, a mean of a real-only and a fake-only term,
this is the real term ℓ_r(v(x_i)) plus a constant), and P_i the Lipschitz control's penalty
on that row alone: R1 / `gradient_penalty` with `sampling: real` on x_i, `interpolates` on
x̂_i = ε_i x_i + (1 − ε_i) G(z)_{i mod B} (the interpolate's penalty is x_i's contribution
too), none for the other controls. g_i depends on x_i and on data-independent values only
(the generator is post-processing of earlier DP critics), whatever the objective or control.

Each g_i is clipped, g_i · min(1, C/‖g_i‖), and the update gradient is

    ĝ = (Σ_i mask_i · clip(g_i) + N(0, σ²C² I)) / B  +  ∇_θ L([0], G(z)) [+ P_fake] [+ prox]

— B the *expected* batch size (qn = B for Poisson; B for fixed), never the realized count, so
the add/remove sensitivity of the sum is C (fixed-size sampling: replace-one, 2C). The fake
terms (the loss on the B rows G(z), a `gradient_penalty` with `sampling: fake`, FedProx's
proximal term) depend on no real data and are not clipped; they are computed as the ordinary
step computes them (means over the B fake rows). The noise (`StepNoise.dp_noise`, one
standard normal per critic parameter, in `layout` order) is pre-drawn from
the step's generator like the rest of its randomness, so runs are reproducible and the
sequential and batched paths agree. Weight clipping is a projection after the update and
spectral norm's power iteration reads no data: both compose. The generator's update reads the
DP critic only: post-processing, unchanged.

**Statistics.** Under DP the step also returns `dp_clipped_fraction`: the share of the
realized batch whose ‖g_i‖ exceeded C. The statistics (`d_loss`, `v_real`, this fraction, ...)
are computed on real data and are *not* privatized: a caller that releases them must withhold
or noise them (see /work/shared/notes/privacy.md).

**Where it is computed.** The reference step (`GAN.critic_step_on`, also under the clients'
`vmap` in `batched.py`) takes the per-sample gradients with `torch.func.vmap(grad(...))` over
the real rows (`reference_parts`): exact for any network, objective and control, and it nests
under the outer vmap (vmap of vmap of grad). The hand-batched MLP step (`fastmlp.py`) never
materializes them: it computes each row's gradient norm from its per-layer rank-1 factors
("ghost clipping") and the clipped sum with the step's own GEMMs on scaled rows (see
`FastMLP.dp_gradient`).

Batch statistics cannot be clipped per sample: `dp_problems` refuses a critic that uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from fedgan.simulator.gan import lipschitz, objectives
from fedgan.simulator.gan.state import DP_SAMPLINGS as DP_SAMPLINGS
from fedgan.simulator.gan.state import DPSGD as DPSGD
from fedgan.simulator.gan.state import GANConfig, Params, StepNoise
from torch import Tensor, nn


class GAN(Protocol):
    """What this module reads of a `train.GAN` (train.py imports this module)."""

    config: GANConfig
    critic: nn.Module
    objective: objectives.Objective
    control: lipschitz.LipschitzControl

    def D(self, d: Params, d_buf: Params, x: Tensor) -> Tensor: ...


# ---- sampling and noise -------------------------------------------------------------------------


def draw_batches(
    n: int, batch: int, sampling: str, gen: torch.Generator, lead: tuple[int, ...] = ()
) -> tuple[Tensor, Tensor]:
    """Independent DP-SGD batches of `batch` (expected) points out of n, one per entry of
    `lead`: indices [*lead, M] (long) and mask [*lead, M] (bool). `poisson`: each point
    independently with q = batch/n, compacted in index order to the front of M = the largest
    realized batch (≥ 1) columns — exact, nothing truncated; `fixed`: `batch` distinct points
    uniformly, M = batch, mask all true."""
    if sampling not in DP_SAMPLINGS:
        raise ValueError(f"unknown dp sampling {sampling!r}; allowed: {', '.join(DP_SAMPLINGS)}")
    if batch > n:
        raise ValueError(
            f"DP-SGD batch_size {batch} exceeds the client's {n} training points "
            f"({'q = B/n > 1' if sampling == 'poisson' else 'B distinct points'})"
        )
    count = 1
    for k in lead:
        count *= k
    if sampling == "fixed":
        rows = [torch.randperm(n, generator=gen)[:batch] for _ in range(count)]
        idx = (torch.stack(rows) if rows else torch.zeros(0, batch, dtype=torch.long)).view(
            *lead, batch
        )
        return idx, torch.ones(*lead, batch, dtype=torch.bool)
    q = batch / n
    selected = torch.rand(*lead, n, dtype=torch.float64, generator=gen) < q
    sizes = selected.sum(-1)
    m = max(int(sizes.max()) if sizes.numel() else 0, 1)
    # The selected points, in index order, to the front: point j goes to column
    # (number selected before it); the others to a spare column m, dropped. Padding: index 0.
    column = torch.where(selected, selected.cumsum(-1) - 1, m)
    points = torch.arange(n).expand_as(column)
    idx = torch.zeros(*lead, m + 1, dtype=torch.long).scatter_(-1, column, points)[..., :m]
    mask = torch.arange(m) < sizes.unsqueeze(-1)
    return idx, mask


@dataclass(frozen=True)
class Block:
    """A stretch of `dp_noise`: parameter `name` of `shape`, or — `bias` set — a layer's weight
    [out, ...] and its bias [out] as rows [weights of unit k | bias k], k = 1..out (the layout
    the hand-batched MLP step keeps its [out, in + 1] blocks in, so its noise needs no
    reordering)."""

    name: str
    shape: torch.Size
    bias: str | None = None

    @property
    def size(self) -> int:
        return self.shape.numel() + (self.shape[0] if self.bias is not None else 0)


def layout(critic: nn.Module) -> list[Block]:
    """The order of `dp_noise`: the critic's parameters in `named_parameters` order, each
    module's `weight` with its `bias` (same leading size) as one block of [weight | bias] rows."""
    params = dict(critic.named_parameters())
    out: list[Block] = []
    taken: set[str] = set()
    for name, p in params.items():
        if name in taken:
            continue
        prefix, _, leaf = name.rpartition(".")
        bias = f"{prefix}.bias" if prefix else "bias"
        if (
            leaf == "weight"
            and p.dim() >= 1
            and bias in params
            and params[bias].shape == p.shape[:1]
        ):
            out.append(Block(name, p.shape, bias))
            taken.add(bias)
        else:
            out.append(Block(name, p.shape))
    return out


def noise_size(critic: nn.Module) -> int:
    """P: the number of critic parameters, the length of one step's `dp_noise`."""
    return sum(p.numel() for p in critic.parameters())


def unflatten(flat: Tensor, critic: nn.Module) -> Params:
    """A flat [..., P] vector in `layout` order → the critic's parameter dict [..., *shape]."""
    out: Params = {}
    p = 0
    lead = flat.shape[:-1]
    for block in layout(critic):
        part = flat[..., p : p + block.size]
        p += block.size
        if block.bias is None:
            out[block.name] = part.reshape(*lead, *block.shape)
            continue
        o = block.shape[0]
        rows = part.reshape(*lead, o, block.size // o)
        out[block.name] = rows[..., :-1].reshape(*lead, *block.shape)
        out[block.bias] = rows[..., -1]
    return out


def draw_steps(
    config: GANConfig,
    critic: nn.Module,
    n_data: int,
    gen: torch.Generator,
    n_steps: int,
    dp_out: Tensor | None = None,
) -> StepNoise:
    """`GAN.draw_steps` under DP (config.dp set): the randomness of `n_steps` generator steps
    with a leading [n_steps] axis, drawn from `gen` in this order — the batches
    (`draw_batches`, [T, n_critic, M]), z_d [T, n_critic, B, latent], z_g [T, B, latent],
    eps [T, n_critic, M, 1], dp_noise [T, n_critic, P] (written into `dp_out` when given:
    the same numbers, without a copy into a stacked buffer afterwards)."""
    dp = config.dp
    assert dp is not None
    nc, b, L, T = config.n_critic, config.batch_size, config.latent_dim, n_steps
    idx, mask = draw_batches(n_data, b, dp.sampling, gen, (T, nc))
    m = idx.shape[-1]
    return StepNoise(
        idx=idx,
        z_d=torch.randn(T, nc, b, L, generator=gen),
        z_g=torch.randn(T, b, L, generator=gen),
        eps=torch.rand(T, nc, m, 1, generator=gen),
        mask=mask,
        dp_noise=torch.randn(T, nc, noise_size(critic), generator=gen, out=dp_out),
    )


ROW_AXES = {"idx": -1, "mask": -1, "eps": -2}
"""The axis of the real batch's M rows in each `StepNoise` field that has one."""


def rows_of(noise: StepNoise) -> int:
    """M, the real batch's rows of DP noise (B without DP)."""
    return int(noise.idx.shape[-1])


def pad_rows(noise: StepNoise, m: int) -> StepNoise:
    """The noise with its real batch padded to m ≥ M rows: padding is masked out (mask
    false, index 0, ε 0), so the step's result is the same to float rounding."""
    have = rows_of(noise)
    if have == m:
        return noise

    def pad(name: str, t: Tensor) -> Tensor:
        axis = ROW_AXES.get(name)
        if axis is None:
            return t
        shape = list(t.shape)
        shape[axis] = m - have
        return torch.cat([t, t.new_zeros(shape)], dim=axis)

    return noise.map(pad)


# ---- the reference step's per-sample gradients --------------------------------------------------


@dataclass
class DPParts:
    """One critic step's DP gradient, before noise: per-sample gradients `per_sample` (each
    parameter [M, *shape]; padding rows included, masked out below), their norms [M] over all
    parameters, `clipped` = Σ_i mask_i · clip(g_i) (not yet divided by B), `fake` = the
    gradient of the data-independent terms (loss on G(z), a fake-sampled penalty; no prox),
    and the step's statistics."""

    per_sample: Params
    norms: Tensor
    clipped: Params
    fake: Params
    stats: dict[str, Tensor]


def fake_penalty(control: lipschitz.LipschitzControl) -> bool:
    """The control's penalty reads generated points only (not clipped: no real data)."""
    return isinstance(control, lipschitz.GradientPenalty) and control.sampling == "fake"


def paired_fakes(fake: Tensor, m: int) -> Tensor:
    """The fake row each of m real rows is interpolated with: row i → fake row i mod B."""
    b = fake.shape[0]
    return fake if m == b else fake[torch.arange(m, device=fake.device) % b]


def clip_factors(norms: Tensor, clip: float, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(w, over): w_i = mask_i · min(1, C/‖g_i‖) and over_i = ‖g_i‖ > C (any shape)."""
    over = norms > clip
    w = torch.where(over, clip / norms, torch.ones_like(norms))
    if mask is not None:
        w = torch.where(mask, w, torch.zeros_like(w))
    return w, over


def reference_parts(
    gan: GAN,
    d: Params,
    d_buf: Params,
    real: Tensor,
    fake: Tensor,
    eps: Tensor,
    mask: Tensor | None,
) -> DPParts:
    """The DP-SGD gradient's parts for real [M, d] (rows with `mask` [M] false are padding;
    None: all real), fake [B, d] and eps [M, 1], with `torch.func`: per-sample gradients by
    `vmap(grad(...))` over the real rows. Pure (works under an outer vmap over clients)."""
    c, obj, ctl = gan.config, gan.objective, gan.control
    assert c.dp is not None
    clip = c.dp.clip
    m = real.shape[0]
    on_fakes = fake_penalty(ctl)

    def critic(dd: Params) -> Callable[[Tensor], Tensor]:
        return lambda x: gan.D(dd, d_buf, x)

    def one(
        dd: Params, x: Tensor, f: Tensor, e: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        v = gan.D(dd, d_buf, x[None])  # [1]
        half = obj.critic_loss(v, torch.zeros_like(v))
        if on_fakes:
            pen = torch.zeros_like(half)
        else:
            pen = ctl.penalty(critic(dd), x[None], f[None], e[None])
        return half + pen, (half.detach(), pen.detach(), v.detach()[0])

    grad_one = torch.func.grad(one, has_aux=True)
    per_sample, (half, pen, v) = torch.func.vmap(grad_one, in_dims=(None, 0, 0, 0))(
        d, real, paired_fakes(fake, m), eps
    )
    sq = torch.stack([g.flatten(1).square().sum(1) for g in per_sample.values()]).sum(0)
    norms = sq.sqrt()
    w, over = clip_factors(norms, clip, mask)
    clipped = {k: torch.tensordot(w, g, dims=1) for k, g in per_sample.items()}

    def fake_fn(dd: Params) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        vf = gan.D(dd, d_buf, fake)
        loss = obj.critic_loss(vf.new_zeros(1), vf)
        if on_fakes:
            p = ctl.penalty(critic(dd), fake, fake, torch.zeros_like(fake[:, :1]))
        else:
            p = loss.new_zeros(())
        return loss + p, (loss.detach(), p.detach(), vf.detach())

    fake_grad, (lf, pf, vf) = torch.func.grad(fake_fn, has_aux=True)(d)
    zero = v.new_zeros(1)
    l0 = obj.critic_loss(zero, zero)
    keep = torch.ones_like(norms, dtype=torch.bool) if mask is None else mask
    maskf = keep.to(v.dtype)
    count = maskf.sum().clamp_min(1.0)

    def mean(t: Tensor) -> Tensor:
        return (t * maskf).sum() / count

    stats = {
        "d_loss": mean(half - l0) + lf,
        "penalty": mean(pen) + pf,
        "v_real": mean(v),
        "v_fake": vf.mean(),
    }
    if obj.probabilistic:
        stats["d_real"] = mean(torch.sigmoid(v))
        stats["d_fake"] = torch.sigmoid(vf).mean()
    stats["dp_clipped_fraction"] = mean((over & keep).to(v.dtype))
    return DPParts(per_sample, norms, clipped, fake_grad, stats)


# ---- what DP-SGD cannot do ----------------------------------------------------------------------

BATCH_STATISTICS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)
"""Layers whose output for one sample depends on the rest of the batch (BatchNorm and its
variants, SyncBatchNorm included). A plug-in layer with such a dependence (minibatch standard
deviation, batch-level attention, ...) says so with a class attribute `batch_statistics = True`."""


def batch_statistics(module: nn.Module) -> list[str]:
    """The names of the submodules of `module` that use batch statistics."""
    return [
        name or type(m).__name__
        for name, m in module.named_modules()
        if isinstance(m, BATCH_STATISTICS) or getattr(m, "batch_statistics", False)
    ]


def dp_problems(
    config: GANConfig, data_dim: int = 2, image_shape: tuple[int, int, int] | None = None
) -> list[str]:
    """Why DP-SGD cannot run on this configuration's critic ([] when it can). Checked
    whether or not `config.dp` is set yet (a scenario's privacy section may set it later).

    DP-SGD needs a per-sample gradient: a critic whose output on one sample depends on the
    others (batch statistics) has none. The built-in critics (mlp, two_branch, conv, dcgan) are
    per-sample (spectral norm's power iteration reads no data: fine); a plug-in critic kind is
    built (with `data_dim` / `image_shape`) and inspected (`batch_statistics`). Any objective
    or Lipschitz control is fine (weight clipping is a projection; penalties are taken per
    sample). The batch size against a client's points is checked when batches are drawn."""
    from fedgan.simulator.gan import networks

    kind = config.critic.kind
    where = f"gan.critic.kind: {kind!r}"
    try:
        factory = networks.CRITICS.get(kind)
    except Exception as exc:  # an unknown kind is the schema's error, named here too
        return [f"{where}: {exc}"]
    built_in = (
        networks.mlp_critic,
        networks.two_branch_critic,
        networks.conv_critic,
        networks.dcgan_critic,
    )
    if factory in built_in:
        return []
    try:
        module = networks.build_critic(config.critic, data_dim, image_shape)
    except Exception as exc:
        return [f"{where}: could not be built to check it for batch statistics ({exc})"]
    names = batch_statistics(module)
    if not names:
        return []
    return [
        f"{where}: {', '.join(names)} uses batch statistics, which DP-SGD cannot clip per "
        "sample (a sample's gradient would depend on the rest of its batch); use a critic "
        "without them (e.g. no BatchNorm, or a per-sample norm such as LayerNorm/GroupNorm)"
    ]
