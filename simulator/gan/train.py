"""The local GAN training loop, written as a pure step function.

`GAN.step(state, batch, noise, lr_scale) -> (state, stats)` takes every input explicitly —
parameters, optimizer state, spectral-norm vectors, real batches and pre-drawn noise — and
returns new tensors without touching the modules. Randomness is drawn *outside* the step
(`GAN.draw`) from a per-run `torch.Generator`, so the same step can later be batched over
clients with `vmap` while each client keeps its own random stream.

With `GANConfig.dp` (sample-level DP-SGD, `dpsgd.py`) every critic update is a DP-SGD step:
the batch is a Poisson (or fixed-size, without replacement) sample of the client's n points,
each real sample's whole gradient contribution — its loss term and its own penalty term (R1 on
it, or the gradient penalty at its interpolate) — is clipped to norm C, the clipped sum gets
Gaussian noise of std σC (pre-drawn in `StepNoise.dp_noise`) and is divided by the expected
batch size B; the terms on generated points are added unclipped. Per-sample gradients come from
`torch.func.vmap(grad(...))` (`dpsgd.reference_parts`), which also runs under the clients'
vmap. The generator step is unchanged (it reads the DP critic: post-processing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from fedgan.simulator.gan import dpsgd, fastmlp, optim
from fedgan.simulator.gan.conditional import Condition, Sampler
from fedgan.simulator.gan.heads import Heads, Span, check_spans
from fedgan.simulator.gan.lipschitz import LipschitzControl, get_control
from fedgan.simulator.gan.networks import (
    SN_LAYERS,
    build_critic,
    build_generator,
    power_iteration,
)
from fedgan.simulator.gan.objectives import Objective, get_objective
from fedgan.simulator.gan.state import ARRAY_GROUPS as ARRAY_GROUPS  # re-exported: the old home
from fedgan.simulator.gan.state import DRAW_BLOCK as DRAW_BLOCK
from fedgan.simulator.gan.state import SCHEDULES as SCHEDULES
from fedgan.simulator.gan.state import GANConfig as GANConfig
from fedgan.simulator.gan.state import GANState as GANState
from fedgan.simulator.gan.state import Params as Params
from fedgan.simulator.gan.state import StepNoise as StepNoise
from fedgan.simulator.gan.state import draw_blocks as draw_blocks
from torch import Tensor, nn
from torch.func import functional_call


def _prox(params: Params, anchor: Params, mu: float) -> Tensor:
    if not mu or not anchor:
        return torch.zeros(())
    return 0.5 * mu * sum(((params[k] - anchor[k]) ** 2).sum() for k in params)  # type: ignore[return-value]


class GAN:
    """A generator/critic pair with its objective, Lipschitz control and optimizers.

    The modules are templates only: all tensors live in `GANState`.
    """

    def __init__(
        self,
        config: GANConfig,
        data_dim: int,
        image_shape: tuple[int, int, int] | None = None,
        output_spans: Sequence[Span] | None = None,
        condition: Condition | None = None,
    ) -> None:
        # Conditional training (`conditional.py`): the latent gets one more coordinate, the
        # condition's (config.latent_dim = L + 1); the generator's input is [z, c] (L + K) and
        # the critic's [x, c] (d + K). None: the unconditional GAN, untouched.
        self.condition = condition
        self.sample_option: int | None = None
        """A conditional GAN's `sample` draws this option only (`conditional.conditioned`)."""
        self.sample_log: list[int] = []
        """Sizes of the draws `sample` conditioned on `sample_option` (`conditioned`'s check)."""
        if condition is not None:
            if image_shape is not None and config.critic.kind != "mlp":
                raise ValueError("a conditional GAN needs MLP networks (the critic sees [x, c])")
            config = replace(config, latent_dim=config.latent_dim + 1)
        self.config = config
        # Mixed-type tables: an activation per span of the generator's output (softmax over a
        # categorical column's one-hot, `heads.py`); None: the network's output as it is.
        self.heads: Heads | None = (
            Heads(check_spans(output_spans, data_dim)) if output_spans else None
        )
        self.data_dim = data_dim
        self.objective: Objective = get_objective(config.objective)
        self.control: LipschitzControl = get_control(config.lipschitz, config.lipschitz_params)
        k = 0 if condition is None else condition.width
        self.generator: nn.Module = build_generator(
            config.generator, config.latent_dim + k - (1 if k else 0), data_dim, image_shape
        )
        self.critic: nn.Module = build_critic(
            config.critic,
            data_dim + k,
            image_shape if not k else None,
            spectral_norm=self.control.spectral_norm,
        )
        for spec in (config.g_opt, config.d_opt):
            spec.validate()
        if config.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}; allowed: {SCHEDULES}")
        self._n_power = getattr(self.control, "n_power_iterations", 1)

    # ---- state -------------------------------------------------------------------------------
    def init_state(self, seed: int) -> GANState:
        """Fresh parameters drawn from torch's default initializers under `seed`."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for m in (self.generator, self.critic):
                for layer in m.modules():
                    reset = getattr(layer, "reset_parameters", None)
                    if callable(reset):
                        reset()
                    if isinstance(layer, SN_LAYERS):
                        layer.u.copy_(F.normalize(torch.randn_like(layer.u), dim=0))
            g = {k: v.detach().clone() for k, v in self.generator.named_parameters()}
            d = {k: v.detach().clone() for k, v in self.critic.named_parameters()}
            d_buf = {k: v.detach().clone() for k, v in self.critic.named_buffers()}
        d = self.control.project(d)
        return GANState(
            g=g,
            d=d,
            d_buf=d_buf,
            g_opt=optim.init_state(self.config.g_opt, g),
            d_opt=optim.init_state(self.config.d_opt, d),
            g_ema={k: v.clone() for k, v in g.items()} if self.config.ema else {},
        )

    # ---- pure functions ----------------------------------------------------------------------
    def G(self, g: Params, z: Tensor) -> Tensor:
        """Generator forward: z [B, latent] → x [B, d] (through the output heads, if any)."""
        if self.condition is not None:  # the last coordinate picks the condition c
            z = torch.cat([z[..., :-1], self.condition.one_hot(z[..., -1])], dim=-1)
        x = functional_call(self.generator, g, (z,))
        return x if self.heads is None else self.heads(x)

    def cond(self, z: Tensor) -> Tensor:
        """A conditional GAN's one-hot conditions c [..., K] of latents z [..., L + 1]."""
        assert self.condition is not None
        return self.condition.one_hot(z[..., -1])

    def rows(self, g: Params, z: Tensor) -> Tensor:
        """What the critic sees of G(z): x [B, d], or [x, c] [B, d + K] when conditional."""
        x = self.G(g, z)
        return x if self.condition is None else torch.cat([x, self.cond(z)], dim=-1)

    def D(self, d: Params, d_buf: Params, x: Tensor) -> Tensor:
        """Critic forward: x [B, d] → v [B]."""
        return functional_call(self.critic, {**d, **d_buf}, (x,))

    def draw(self, n_data: int, gen: torch.Generator) -> StepNoise:
        """Pre-draw the randomness of one generator step from `gen`."""
        return self.draw_steps(n_data, gen, 1).at(0)

    def draw_steps(
        self,
        n_data: int,
        gen: torch.Generator,
        n_steps: int,
        dp_out: Tensor | None = None,
        sampler: Sampler | None = None,
    ) -> StepNoise:
        """Pre-draw the randomness of `n_steps` generator steps from `gen`, with a leading
        [n_steps] axis. Four calls per block rather than four per step: drawing is a Python-level
        cost that batched training over many clients would otherwise pay per client and step.
        Under DP-SGD (`dpsgd.draw_steps`) the batches are DP samples and the per-parameter
        noise is drawn too (into `dp_out` [n_steps, n_critic, P] when given). A conditional
        GAN draws by training-by-sampling (`sampler`, the client's): options for every critic
        and generator row, set in the latents' last coordinate, and `idx` a real row of each
        critic row's option."""
        c = self.config
        if c.dp is not None:
            return dpsgd.draw_steps(c, self.critic, n_data, gen, n_steps, dp_out)
        nc, b, L, T = c.n_critic, c.batch_size, c.latent_dim, n_steps
        if self.condition is not None:
            return self._draw_conditional(gen, T, sampler)
        return StepNoise(
            idx=torch.randint(n_data, (T, nc, b), generator=gen),
            z_d=torch.randn(T, nc, b, L, generator=gen),
            z_g=torch.randn(T, b, L, generator=gen),
            eps=torch.rand(T, nc, b, 1, generator=gen),
        )

    def _draw_conditional(self, gen: torch.Generator, T: int, sampler: Sampler | None) -> StepNoise:
        """`draw_steps` of a conditional GAN (training-by-sampling, `conditional.py`)."""
        c, cond = self.config, self.condition
        assert cond is not None
        if sampler is None:
            raise ValueError("a conditional GAN's training needs its client's sampler")
        nc, b, L = c.n_critic, c.batch_size, c.latent_dim
        z_d = torch.randn(T, nc, b, L, generator=gen)
        z_g = torch.randn(T, b, L, generator=gen)
        eps = torch.rand(T, nc, b, 1, generator=gen)
        opt_d = sampler.options(gen, (T, nc, b))
        opt_g = sampler.options(gen, (T, b))
        idx = sampler.pick(opt_d, gen)
        z_d[..., -1] = cond.code(opt_d)
        z_g[..., -1] = cond.code(opt_g)
        return StepNoise(idx=idx, z_d=z_d, z_g=z_g, eps=eps)

    def critic_step(
        self,
        s: GANState,
        real: Tensor,
        z: Tensor,
        eps: Tensor,
        lr_scale: float,
        mask: Tensor | None = None,
        dp_noise: Tensor | None = None,
    ) -> tuple[GANState, dict[str, Tensor]]:
        """One critic update on real [B, d] against G(z); returns the new state and stats.
        Conditional: real [B, d + K] rows with their conditions, fakes [G(z), c(z)]."""
        fake = self.rows(s.g, z).detach()
        return self.critic_step_on(s, real, fake, eps, lr_scale, mask, dp_noise)

    def critic_step_on(
        self,
        s: GANState,
        real: Tensor,
        fake: Tensor,
        eps: Tensor,
        lr_scale: float,
        mask: Tensor | None = None,
        dp_noise: Tensor | None = None,
    ) -> tuple[GANState, dict[str, Tensor]]:
        """One critic update on real [B, d] against given samples fake [B, d] (a client whose
        generator lives on the server trains against the batches it is sent).

        Under DP-SGD (`config.dp`): real [M, d] with `mask` [M] (rows in the batch; None: all),
        eps [M, 1] and `dp_noise` [P] (standard normals, `dpsgd.layout` order; required) — see
        `dpsgd.py`: per-sample clipped gradients of the real rows, noise σC, divided by B."""
        c = self.config
        d_buf = power_iteration(self.critic, s.d, s.d_buf, self._n_power) if s.d_buf else s.d_buf
        if c.dp is not None:
            return self._dp_critic_step(s, d_buf, real, fake, eps, lr_scale, mask, dp_noise)

        def loss_fn(d: Params) -> tuple[Tensor, dict[str, Tensor]]:
            v_real = self.D(d, d_buf, real)
            v_fake = self.D(d, d_buf, fake)
            loss = self.objective.critic_loss(v_real, v_fake)
            pen = self.control.penalty(lambda x: self.D(d, d_buf, x), real, fake, eps)
            total = loss + pen + _prox(d, s.d_anchor, c.prox_mu)
            stats = {
                "d_loss": loss.detach(),
                "penalty": pen.detach(),
                "v_real": v_real.detach().mean(),
                "v_fake": v_fake.detach().mean(),
            }
            if self.objective.probabilistic:
                stats["d_real"] = torch.sigmoid(v_real.detach()).mean()
                stats["d_fake"] = torch.sigmoid(v_fake.detach()).mean()
            return total, stats

        grads, stats = torch.func.grad(loss_fn, has_aux=True)(s.d)
        d, d_opt = optim.update(c.d_opt, s.d, grads, s.d_opt, c.d_opt.lr * lr_scale)
        d = self.control.project(d)
        stats["d_grad_norm"] = _global_norm(grads)
        return replace(s, d=d, d_opt=d_opt, d_buf=d_buf), stats

    def _dp_critic_step(
        self,
        s: GANState,
        d_buf: Params,
        real: Tensor,
        fake: Tensor,
        eps: Tensor,
        lr_scale: float,
        mask: Tensor | None,
        dp_noise: Tensor | None,
    ) -> tuple[GANState, dict[str, Tensor]]:
        """`critic_step_on` under DP-SGD: (Σ mask_i clip(g_i) + σC·z) / B + the fake terms."""
        c = self.config
        assert c.dp is not None
        if dp_noise is None:
            raise ValueError("gan.dp is set: a critic step needs its pre-drawn dp_noise [P]")
        parts = dpsgd.reference_parts(self, s.d, d_buf, real, fake, eps, mask)
        z = dpsgd.unflatten(dp_noise, self.critic)
        std, b = c.dp.noise_std, c.batch_size
        grads = {k: (parts.clipped[k] + std * z[k]) / b + parts.fake[k] for k in s.d}
        if c.prox_mu and s.d_anchor:
            grads = {k: g + c.prox_mu * (s.d[k] - s.d_anchor[k]) for k, g in grads.items()}
        d, d_opt = optim.update(c.d_opt, s.d, grads, s.d_opt, c.d_opt.lr * lr_scale)
        d = self.control.project(d)
        stats = parts.stats
        stats["d_grad_norm"] = _global_norm(grads)
        return replace(s, d=d, d_opt=d_opt, d_buf=d_buf), stats

    def generator_step(
        self, s: GANState, z: Tensor, lr_scale: float
    ) -> tuple[GANState, dict[str, Tensor]]:
        """One generator update against the current critic."""
        c = self.config

        def loss_fn(g: Params) -> tuple[Tensor, dict[str, Tensor]]:
            x = self.G(g, z)
            if self.condition is None:
                v_fake = self.D(s.d, s.d_buf, x)
                loss = self.objective.generator_loss(v_fake)
                stats = {"g_loss": loss.detach()}
            else:  # [x, c] to the critic, and CTGAN's cross-entropy term (`conditional.py`)
                cz = self.cond(z)
                v_fake = self.D(s.d, s.d_buf, torch.cat([x, cz], dim=-1))
                loss = self.objective.generator_loss(v_fake)
                ce = self.condition.cross_entropy(x, cz)
                stats = {"g_loss": loss.detach(), "g_cond_ce": ce.detach()}
                loss = loss + ce
            if self.objective.probabilistic:
                stats["d_fake_g"] = torch.sigmoid(v_fake.detach()).mean()
            return loss + _prox(g, s.g_anchor, c.prox_mu), stats

        grads, stats = torch.func.grad(loss_fn, has_aux=True)(s.g)
        g, g_opt = optim.update(c.g_opt, s.g, grads, s.g_opt, c.g_opt.lr * lr_scale)
        g_ema = s.g_ema
        if c.ema:
            g_ema = {k: c.ema * g_ema[k] + (1 - c.ema) * g[k].detach() for k in g}
        stats["g_grad_norm"] = _global_norm(grads)
        return replace(s, g=g, g_opt=g_opt, g_ema=g_ema, step=s.step + 1), stats

    def step(
        self, s: GANState, data: Tensor, noise: StepNoise, lr_scale: float = 1.0
    ) -> tuple[GANState, dict[str, Tensor]]:
        """n_critic critic updates then one generator update. data [N, d]; pure."""
        acc: dict[str, Tensor] = {}
        mask, dp = noise.mask, noise.dp_noise
        for i in range(self.config.n_critic):
            real = data[noise.idx[i]]
            if self.condition is not None:  # the real rows carry the condition they were drawn for
                real = torch.cat([real, self.cond(noise.z_d[i])], dim=-1)
            s, st = self.critic_step(
                s,
                real,
                noise.z_d[i],
                noise.eps[i],
                lr_scale,
                None if mask is None else mask[i],
                None if dp is None else dp[i],
            )
            acc = st if not acc else {k: acc[k] + st[k] for k in acc}
        stats = {k: v / self.config.n_critic for k, v in acc.items()}
        s, gst = self.generator_step(s, noise.z_g, lr_scale)
        stats.update(gst)
        return s, stats

    # ---- loops -------------------------------------------------------------------------------
    def train(
        self,
        s: GANState,
        data: Tensor,
        n_steps: int,
        gen: torch.Generator,
        total_steps: int | None = None,
        callback: Callable[[GANState, dict[str, float]], None] | None = None,
        sampler: Sampler | None = None,
    ) -> tuple[GANState, list[dict[str, float]]]:
        """Run `n_steps` generator steps on data [N, d]; the lr schedule spans `total_steps`
        (default n_steps) counted from `s.step`. Returns the state and per-step statistics.
        A conditional GAN needs `sampler` (`Condition.sampler` of the rows in `data`)."""
        total = total_steps or (s.step + n_steps)
        fast = fastmlp.plan(self)
        if fast is not None:  # MLPs: the hand-written step (same update, fewer kernels)
            return fastmlp.train_one(fast, s, data, n_steps, gen, total, callback)
        history: list[dict[str, float]] = []
        for block in draw_blocks(n_steps):
            noise = self.draw_steps(data.shape[0], gen, block, sampler=sampler)
            for t in range(block):
                s, st = self.step(s, data, noise.at(t), self.config.lr_scale(s.step, total))
                row = {k: float(v) for k, v in st.items()}
                history.append(row)
                if callback is not None:
                    callback(s, row)
        return s, history

    @torch.no_grad()
    def sample(self, s: GANState, n: int, gen: torch.Generator, use_ema: bool = True) -> Tensor:
        """n generated points [n, d] (from the EMA generator when there is one)."""
        g = s.g_ema if (use_ema and s.g_ema) else s.g
        z = torch.randn(n, self.config.latent_dim, generator=gen)
        if self.condition is not None and self.sample_option is not None:
            z[:, -1] = self.condition.code(torch.full((n,), self.sample_option, dtype=torch.long))
            self.sample_log.append(n)
        return self.G(g, z)


def _global_norm(grads: Params) -> Tensor:
    return torch.sqrt(sum((v.detach() ** 2).sum() for v in grads.values()))  # type: ignore[arg-type]
