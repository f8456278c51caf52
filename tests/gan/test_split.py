"""Server-held generators: MD-GAN's and UA-GAN's generator gradients against plain autograd.

Oracles are written out from the papers' definitions with torch autograd on the whole
computation in one process (float64), never through `simulator.gan.split`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.split import (
    generator_step,
    mdgan_feedback,
    uagan_answer,
    uagan_feedback,
    uagan_logit,
)
from fedgan.simulator.gan.train import GAN, GANState

SGD1 = OptimizerSpec(name="sgd", lr=1.0)  # θ_new = θ − ∇θ: the step reveals the gradient


def _double(s: GANState) -> GANState:
    d = lambda p: {k: v.double() for k, v in p.items()}  # noqa: E731
    return replace(s, g=d(s.g), d=d(s.d), d_buf=d(s.d_buf), g_opt=d(s.g_opt), d_opt=d(s.d_opt))


def _setup(make_gan: Callable[..., GAN], k: int) -> tuple[GAN, GANState, list[GANState]]:
    gan = make_gan(g_opt=SGD1, objective="non_saturating")
    server = _double(gan.init_state(0))
    clients = [_double(gan.init_state(10 + i)) for i in range(k)]  # private critics differ
    return gan, server, clients


def _applied_gradient(before: GANState, after: GANState) -> torch.Tensor:
    return torch.cat([(before.g[n] - after.g[n]).flatten() for n in before.g])


def _autograd(gan: GAN, s: GANState, loss_of: Callable[[dict], torch.Tensor]) -> torch.Tensor:
    g = {n: v.clone().requires_grad_(True) for n, v in s.g.items()}
    grads = torch.autograd.grad(loss_of(g), list(g.values()))
    return torch.cat([t.flatten() for t in grads])


def test_mdgan_gradient_is_autograd_of_the_weighted_client_generator_losses(
    make_gan: Callable[..., GAN],
) -> None:
    gan, server, clients = _setup(make_gan, 3)
    gen = torch.Generator().manual_seed(0)
    z = [torch.randn(16, 2, generator=gen, dtype=torch.float64) for _ in clients]
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    # Server: each client's feedback on its own batch, weighted, stacked into one batch.
    e = [mdgan_feedback(gan, c, gan.G(server.g, zk))[0] for c, zk in zip(clients, z, strict=True)]
    fb = torch.cat([wk * ek for wk, ek in zip(w, e, strict=True)])
    got = _applied_gradient(server, generator_step(gan, server, torch.cat(z), fb))

    def loss(g: dict) -> torch.Tensor:  # Σ_k w_k · mean_i softplus(−v_k(G(z_k,i)))
        out = torch.zeros((), dtype=torch.float64)
        for wk, c, zk in zip(w, clients, z, strict=True):
            v = gan.D(c.d, c.d_buf, gan.G(g, zk))
            out = out + wk * torch.nn.functional.softplus(-v).mean()
        return out

    expected = _autograd(gan, server, loss)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("pi", [[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])
def test_uagan_gradient_is_autograd_of_minus_log_d_ua(
    make_gan: Callable[..., GAN], pi: list[float]
) -> None:
    gan, server, clients = _setup(make_gan, 3)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = gan.G(server.g, z)
    answers = [uagan_answer(gan, c, x) for c in clients]
    logits = torch.stack([a[0] for a in answers])
    grads = torch.stack([a[1] for a in answers])
    log_pi = torch.log(torch.tensor(pi, dtype=torch.float64))
    fb, _ = uagan_feedback(gan, logits, grads, log_pi)
    got = _applied_gradient(server, generator_step(gan, server, z, fb))

    def loss(g: dict) -> torch.Tensor:  # −E log D_ua, in probabilities as the paper writes it
        xg = gan.G(g, z)
        phi = torch.zeros(16, dtype=torch.float64)
        for p, c in zip(pi, clients, strict=True):
            d = torch.sigmoid(gan.D(c.d, c.d_buf, xg))
            phi = phi + p * d / (1 - d)
        return -torch.log(phi / (1 + phi)).mean()

    expected = _autograd(gan, server, loss)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-12)


def test_uagan_with_one_client_is_that_clients_discriminator(
    make_gan: Callable[..., GAN],
) -> None:
    gan, server, (client,) = _setup(make_gan, 1)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = gan.G(server.g, z)
    logits, grads = uagan_answer(gan, client, x)
    log_pi = torch.zeros(1, dtype=torch.float64)
    torch.testing.assert_close(uagan_logit(logits[None], log_pi), gan.D(client.d, client.d_buf, x))
    fb, loss = uagan_feedback(gan, logits[None], grads[None], log_pi)
    e, md_loss = mdgan_feedback(gan, client, x)  # the plain non-saturating GAN's feedback
    torch.testing.assert_close(fb, e, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(loss, md_loss)


def test_uagan_answer_gradients_are_per_sample_input_gradients(
    make_gan: Callable[..., GAN],
) -> None:
    gan, server, (client,) = _setup(make_gan, 1)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logits, grads = uagan_answer(gan, client, x)
    for i in range(5):  # one sample at a time, plain autograd
        xi = x[i : i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(gan.D(client.d, client.d_buf, xi).sum(), xi)
        torch.testing.assert_close(grads[i], gi[0])
        torch.testing.assert_close(logits[i], gan.D(client.d, client.d_buf, x[i : i + 1])[0])
