"""The pure training step: purity, reproducibility, proximal term, EMA, every combination."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from fedgan.simulator.gan.lipschitz import LIPSCHITZ
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.objectives import OBJECTIVES
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANConfig, GANState

MakeGAN = Callable[..., GAN]
SGD = OptimizerSpec(name="sgd", lr=0.01)

CONTROLS: dict[str, dict[str, float]] = {
    "none": {},
    "weight_clip": {"c": 0.05},
    "gradient_penalty": {"lam": 1.0},
    "r1": {"lam": 0.5},
    "spectral_norm": {"n_power_iterations": 2},
}


def all_tensors(s: GANState) -> dict[str, torch.Tensor]:
    groups = {"g": s.g, "d": s.d, "d_buf": s.d_buf, "g_opt": s.g_opt, "d_opt": s.d_opt,
              "g_ema": s.g_ema, "g_anchor": s.g_anchor, "d_anchor": s.d_anchor}
    return {f"{p}.{k}": v for p, grp in groups.items() for k, v in grp.items()}


def clone_state(s: GANState) -> GANState:
    def c(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in d.items()}

    return replace(s, g=c(s.g), d=c(s.d), d_buf=c(s.d_buf), g_opt=c(s.g_opt), d_opt=c(s.d_opt),
                   g_ema=c(s.g_ema), g_anchor=c(s.g_anchor), d_anchor=c(s.d_anchor))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("control", sorted(CONTROLS))
def test_step_is_pure(make_gan: MakeGAN, data: torch.Tensor, control: str) -> None:
    gan = make_gan(lipschitz=control, lipschitz_params=CONTROLS[control], ema=0.5, prox_mu=0.1,
                   n_critic=2)
    s = gan.init_state(0)
    s = replace(s, g_anchor=clone_state(s).g, d_anchor=clone_state(s).d)
    before = all_tensors(clone_state(s))
    new, _ = gan.step(s, data, gan.draw(data.shape[0], torch.Generator().manual_seed(0)))
    after = all_tensors(s)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert new.step == s.step + 1 and s.step == 0
    assert max_abs_diff(new.g, s.g) > 0 and max_abs_diff(new.d, s.d) > 0
    if control == "spectral_norm":
        assert max_abs_diff(new.d_buf, s.d_buf) > 0  # the power iteration advanced u


def _run(gan: GAN, data: torch.Tensor, init_seed: int, noise_seed: int) -> GANState:
    s = gan.init_state(init_seed)
    s, _ = gan.train(s, data, 4, torch.Generator().manual_seed(noise_seed))
    return s


def test_seeded_runs_reproduce(make_gan: MakeGAN, data: torch.Tensor) -> None:
    gan = make_gan(lipschitz="gradient_penalty")
    a, b = _run(gan, data, 1, 2), _run(gan, data, 1, 2)
    for k in a.g:
        assert torch.equal(a.g[k], b.g[k])
    for k in a.d:
        assert torch.equal(a.d[k], b.d[k])
    # a fresh GAN object (fresh module templates) gives the same run
    c = _run(make_gan(lipschitz="gradient_penalty"), data, 1, 2)
    for k in a.g:
        assert torch.equal(a.g[k], c.g[k])
    # a different init seed or noise seed differs
    assert max_abs_diff(_run(gan, data, 3, 2).g, a.g) > 1e-4
    assert max_abs_diff(_run(gan, data, 1, 5).g, a.g) > 1e-4


def test_init_state_does_not_depend_on_global_rng(make_gan: MakeGAN) -> None:
    gan = make_gan()
    torch.manual_seed(0)
    a = gan.init_state(7)
    torch.manual_seed(99)
    b = gan.init_state(7)
    assert max_abs_diff(a.g, b.g) == 0.0 and max_abs_diff(a.d, b.d) == 0.0


def test_proximal_term_pins_parameters_to_the_anchor(
    make_gan: MakeGAN, data: torch.Tensor
) -> None:
    """SGD with lr·μ = 1: θ' = θ − lr∇L(θ) − (θ − a) = a − lr∇L(θ), so after every step the
    parameters sit one plain gradient step away from the anchor, however far they started."""
    lr, mu = SGD.lr, 1.0 / SGD.lr
    gan = make_gan(g_opt=SGD, d_opt=SGD, prox_mu=mu)
    s = gan.init_state(0)
    noise = gan.draw(data.shape[0], torch.Generator().manual_seed(0))
    # one network at a time (an empty anchor switches the term off): a critic pulled 5 away
    # would otherwise hand the generator gradients 5× larger
    far_g = replace(s, g_anchor={k: v + 5.0 for k, v in s.g.items()})
    far_d = replace(s, d_anchor={k: v - 5.0 for k, v in s.d.items()})
    s_g, _ = gan.step(far_g, data, noise)
    s_d, _ = gan.step(far_d, data, noise)
    # 5 → at most lr·|∇L|, and |∇L| is O(1) for this tiny net
    assert max_abs_diff(s_g.g, far_g.g_anchor) < 20 * lr
    assert max_abs_diff(s_d.d, far_d.d_anchor) < 20 * lr
    # the other network is not anchored and moves by a plain step only
    assert max_abs_diff(s_g.d, s.d) < 20 * lr

    # anchored at the start: the parameters stay near it, while without the term they drift
    def drift(prox_mu: float) -> float:
        gan = make_gan(g_opt=SGD, d_opt=SGD, prox_mu=prox_mu, batch_size=64)
        s = gan.init_state(0)
        s = replace(s, g_anchor=clone_state(s).g, d_anchor=clone_state(s).d)
        anchor = clone_state(s)
        s, _ = gan.train(s, data, 30, torch.Generator().manual_seed(0))
        return max(max_abs_diff(s.g, anchor.g), max_abs_diff(s.d, anchor.d))

    assert drift(mu) < 0.25 * drift(0.0)


def test_ema_is_the_hand_computed_average(make_gan: MakeGAN, data: torch.Tensor) -> None:
    decay = 0.9
    gan = make_gan(ema=decay)
    s0 = gan.init_state(0)
    gen = torch.Generator().manual_seed(0)
    s1, _ = gan.step(s0, data, gan.draw(data.shape[0], gen))
    s2, _ = gan.step(s1, data, gan.draw(data.shape[0], gen))
    for k in s0.g:
        torch.testing.assert_close(s0.g_ema[k], s0.g[k])
        torch.testing.assert_close(s1.g_ema[k], 0.9 * s0.g[k] + 0.1 * s1.g[k])
        torch.testing.assert_close(s2.g_ema[k], 0.81 * s0.g[k] + 0.09 * s1.g[k] + 0.1 * s2.g[k])
    # sampling uses the EMA generator unless told otherwise
    z_gen = torch.Generator().manual_seed(3)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gan.sample(s2, 5, z_gen), gan.G(s2.g_ema, z))
    torch.testing.assert_close(
        gan.sample(s2, 5, torch.Generator().manual_seed(3), use_ema=False), gan.G(s2.g, z)
    )
    assert make_gan().init_state(0).g_ema == {}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES.names()))
@pytest.mark.parametrize("control", sorted(LIPSCHITZ.names()))
def test_every_objective_and_control_trains(
    make_gan: MakeGAN, data: torch.Tensor, objective: str, control: str
) -> None:
    gan = make_gan(objective=objective, lipschitz=control, lipschitz_params=CONTROLS[control],
                   n_critic=2)
    s, history = gan.train(gan.init_state(0), data, 3, torch.Generator().manual_seed(0))
    assert len(history) == 3
    for row in history:
        assert all(math.isfinite(v) for v in row.values()), row
        assert ("d_real" in row) == OBJECTIVES.get(objective).probabilistic
    for group in (s.g, s.d, s.d_buf):
        assert all(bool(torch.isfinite(v).all()) for v in group.values())
    assert np.isfinite(gan.sample(s, 8, torch.Generator().manual_seed(1)).numpy()).all()


def test_critic_step_matches_autograd_reference(make_gan: MakeGAN, data: torch.Tensor) -> None:
    """One SGD critic step with a gradient penalty and clipping, recomputed with plain modules
    and torch.autograd (create_graph for the penalty)."""
    lam, c = 2.0, 0.3
    gan = make_gan(objective="wasserstein", lipschitz="gradient_penalty",
                   lipschitz_params={"lam": lam}, d_opt=SGD)
    s = gan.init_state(0)
    real, z, eps = data[:16], torch.randn(16, 2), torch.rand(16, 1)
    new, stats = gan.critic_step(s, real, z, eps, lr_scale=0.5)

    gen_m, crit_m = copy.deepcopy(gan.generator), copy.deepcopy(gan.critic)
    gen_m.load_state_dict(s.g)
    crit_m.load_state_dict(s.d)
    fake = gen_m(z).detach()
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (gx,) = torch.autograd.grad(crit_m(x_hat).sum(), x_hat, create_graph=True)
    pen = lam * ((gx.norm(dim=1) - 1.0) ** 2).mean()
    loss = crit_m(fake).mean() - crit_m(real).mean()
    (loss + pen).backward()
    for k, p in crit_m.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(new.d[k], p.detach() - 0.5 * SGD.lr * p.grad,
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["d_loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["penalty"], pen.detach(), rtol=1e-4, atol=1e-6)

    clip = make_gan(objective="wasserstein", lipschitz="weight_clip", lipschitz_params={"c": c},
                    d_opt=OptimizerSpec(name="sgd", lr=10.0))
    s = clip.init_state(0)
    new, _ = clip.critic_step(s, real, z, eps, 1.0)
    c32 = float(torch.tensor(c))  # clamp bounds are float32: float32(0.3) > 0.3
    assert all(float(v.abs().max()) <= c32 for v in new.d.values())
    assert any(float(v.abs().max()) == c32 for v in new.d.values())


def test_generator_step_matches_autograd_reference(
    make_gan: MakeGAN, data: torch.Tensor
) -> None:
    gan = make_gan(objective="non_saturating", g_opt=SGD)
    s = gan.init_state(0)
    z = torch.randn(16, 2)
    new, stats = gan.generator_step(s, z, lr_scale=1.0)
    gen_m, crit_m = copy.deepcopy(gan.generator), copy.deepcopy(gan.critic)
    gen_m.load_state_dict(s.g)
    crit_m.load_state_dict(s.d)
    v = crit_m(gen_m(z))
    loss = -torch.log(torch.sigmoid(v)).mean()
    loss.backward()
    for k, p in gen_m.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(new.g[k], p.detach() - SGD.lr * p.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["g_loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    assert new.step == 1
    # the critic is untouched by a generator step
    assert max_abs_diff(new.d, s.d) == 0.0


def test_lr_schedules(make_config: Callable[..., GANConfig]) -> None:
    tiny_config = make_config
    const = tiny_config()
    lin = tiny_config(lr_schedule="linear", lr_final=0.1)
    cos = tiny_config(lr_schedule="cosine", lr_final=0.2)
    assert [const.lr_scale(i, 5) for i in range(5)] == [1.0] * 5
    assert lin.lr_scale(0, 11) == pytest.approx(1.0)
    assert lin.lr_scale(5, 11) == pytest.approx(0.55)
    assert lin.lr_scale(10, 11) == pytest.approx(0.1)
    assert lin.lr_scale(99, 11) == pytest.approx(0.1)  # clamped past the end
    assert cos.lr_scale(0, 11) == pytest.approx(1.0)
    assert cos.lr_scale(5, 11) == pytest.approx(0.6)  # ½(1 + cos(π/2)) = ½ of the way
    assert cos.lr_scale(10, 11) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="lr_schedule"):
        GAN(tiny_config(lr_schedule="step"), data_dim=2)


def test_state_arrays_round_trip(make_gan: MakeGAN, data: torch.Tensor) -> None:
    gan = make_gan(lipschitz="spectral_norm", ema=0.9)
    s, _ = gan.train(gan.init_state(0), data, 2, torch.Generator().manual_seed(0))
    arrays = s.arrays()
    assert {k.split(".")[0] for k in arrays} == {
        "generator", "critic", "critic_buffer", "generator_opt", "critic_opt", "generator_ema",
    }
    fresh = gan.init_state(1)
    loaded = fresh.load_arrays(arrays)
    for k, v in loaded.arrays().items():
        np.testing.assert_array_equal(v, arrays[k])
    # the copy does not alias the arrays it was built from
    arrays["generator.net.0.weight"][...] = 0.0
    assert float(loaded.g["net.0.weight"].abs().sum()) > 0
    with pytest.raises(KeyError, match="unexpected array"):
        fresh.load_arrays({"generator.nope": np.zeros(1)})


def test_conv_gan_step() -> None:
    cfg = GANConfig(
        latent_dim=4, generator=NetworkSpec(kind="conv", widths=(4, 4)),
        critic=NetworkSpec(kind="conv", widths=(4, 4)), batch_size=8,
        lipschitz="spectral_norm",
    )
    gan = GAN(cfg, data_dim=64, image_shape=(1, 8, 8))
    images = torch.rand(20, 64) * 2 - 1
    s, hist = gan.train(gan.init_state(0), images, 2, torch.Generator().manual_seed(0))
    assert gan.sample(s, 3, torch.Generator().manual_seed(0)).shape == (3, 64)
    assert all(math.isfinite(v) for row in hist for v in row.values())
