"""The math of server-held generators (MD-GAN, UA-GAN): framework-free and pure.

The generator and its optimizer live on the server; every client keeps a private critic and
its optimizer and never shows its data. One generator step is one exchange:

1. the server draws latents and sends generated batches x = G(z) [B, d];
2. each client takes `n_critic` critic steps on its own real data against the critic batches,
   then answers on the feedback batch — MD-GAN (Hardy et al. 2019): the error feedback
   e_k = ∂L_G,k/∂x [B, d]; UA-GAN (Zhang et al. 2021): its logits l_k(x) [B] and their input
   gradients ∇ₓ l_k [B, d];
3. the server turns the answers into one feedback e [B, d] on the batch it generated and steps
   G with the vector-Jacobian product J_θᵀ e (`generator_step`).

Shapes: B samples of d features (flattened images for conv nets); K clients.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from fedgan.simulator.gan import optim
from fedgan.simulator.gan.lipschitz import input_gradients
from fedgan.simulator.gan.train import GAN, GANState, Params
from torch import Tensor


def critic_steps(
    gan: GAN,
    s: GANState,
    reals: Tensor,
    fakes: Tensor,
    eps: Tensor,
    lr_scale: float = 1.0,
    masks: Tensor | None = None,
    dp_noise: Tensor | None = None,
) -> tuple[GANState, dict[str, Tensor]]:
    """A client's `n_critic` critic updates: reals, fakes [n_critic, B, d] (the batches it was
    sent), eps [n_critic, B, 1] (gradient-penalty interpolation weights). Statistics are means
    over the steps. Under DP-SGD (`gan.config.dp`, `dpsgd.py`): reals [n_critic, M, d] drawn
    by `dpsgd.draw_batches` with their masks [n_critic, M] (None: every row in the batch),
    eps [n_critic, M, 1], and dp_noise [n_critic, P] (required)."""
    acc: dict[str, Tensor] = {}
    for i in range(fakes.shape[0]):
        mask = None if masks is None else masks[i]
        noise = None if dp_noise is None else dp_noise[i]
        s, st = gan.critic_step_on(s, reals[i], fakes[i], eps[i], lr_scale, mask, noise)
        acc = st if not acc else {k: acc[k] + st[k] for k in acc}
    return s, {k: v / fakes.shape[0] for k, v in acc.items()}


def mdgan_feedback(gan: GAN, s: GANState, x: Tensor) -> tuple[Tensor, Tensor]:
    """MD-GAN's error feedback of one client: e = ∂L_G/∂x [B, d] for L_G = the objective's
    generator loss of the client's critic on x [B, d] (a batch mean, so e carries the 1/B),
    and L_G itself (a scalar)."""

    def loss(y: Tensor) -> Tensor:
        return gan.objective.generator_loss(gan.D(s.d, s.d_buf, y))

    # torch.func, not torch.autograd: the vectorized engine runs this under vmap.
    with torch.enable_grad():
        e, value = torch.func.grad_and_value(loss)(x.detach())
    return e, value.detach()


def uagan_answer(gan: GAN, s: GANState, x: Tensor) -> tuple[Tensor, Tensor]:
    """UA-GAN's answer of one client on x [B, d]: its critic's logits l(x) [B] and their input
    gradients ∇ₓ l [B, d] (rows are independent, so one vector-Jacobian product gives all)."""
    x = x.detach()
    with torch.enable_grad():
        logits = gan.D(s.d, s.d_buf, x).detach()
        grads = input_gradients(lambda y: gan.D(s.d, s.d_buf, y), x).detach()
    return logits, grads


def uagan_logit(logits: Tensor, log_pi: Tensor) -> Tensor:
    """The aggregated discriminator's logit: D_ua = Φ/(1 + Φ) with Φ = Σ_k π_k D_k/(1 − D_k);
    D_k/(1 − D_k) = exp(l_k), so logit(D_ua) = log Φ = logsumexp_k(log π_k + l_k).
    logits [K, B], log_pi [K] → [B]."""
    return torch.logsumexp(log_pi[:, None] + logits, dim=0)


def uagan_feedback(
    gan: GAN, logits: Tensor, grads: Tensor, log_pi: Tensor
) -> tuple[Tensor, Tensor]:
    """The server's feedback e = ∂L_G/∂x [B, d] against D_ua, from every client's answer:
    logits [K, B], grads [K, B, d], log_pi [K]. ∇ₓ logit_ua = Σ_k softmax_k(log π + l) ∇ₓ l_k,
    and L_G is the objective's generator loss of logit_ua (−E log D_ua when non-saturating).
    Returns (e, L_G)."""
    lg = uagan_logit(logits, log_pi).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = gan.objective.generator_loss(lg)
        (dl,) = torch.autograd.grad(loss, lg)  # [B]
    resp = torch.softmax(log_pi[:, None] + logits, dim=0)  # [K, B]: which critic speaks at x
    e = dl[:, None] * torch.einsum("kb,kbd->bd", resp, grads)
    return e, loss.detach()


def generator_step(
    gan: GAN, s: GANState, z: Tensor, feedback: Tensor, lr_scale: float = 1.0
) -> GANState:
    """The server's generator update from the feedback [B, d] on x = G(z), z [B, latent]:
    ∇θ = J_θᵀ e (so ∇θ = ∇θ L when e = ∂L/∂x), then the generator's optimizer and EMA."""
    c = gan.config
    g = {k: v.detach().requires_grad_(True) for k, v in s.g.items()}
    with torch.enable_grad():
        x = gan.G(g, z)
        grads_t = torch.autograd.grad(x, list(g.values()), grad_outputs=feedback)
    grads: Params = dict(zip(g, grads_t, strict=True))
    new_g, g_opt = optim.update(c.g_opt, s.g, grads, s.g_opt, c.g_opt.lr * lr_scale)
    g_ema = s.g_ema
    if c.ema and g_ema:
        g_ema = {k: c.ema * g_ema[k] + (1 - c.ema) * new_g[k].detach() for k in new_g}
    return replace(s, g=new_g, g_opt=g_opt, g_ema=g_ema, step=s.step + 1)
