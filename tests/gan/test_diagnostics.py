"""Diagnostics: closed-form Dirac-GAN Jacobians, JS at the optimal critic, clipping counts,
per-sample generator gradients and Lipschitz estimates, each against hand-derived values."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from fedgan.simulator.gan.diagnostics import (
    clip_saturation,
    dirac_gan,
    game_jacobian,
    generator_gradient_profile,
    js_estimate,
    lipschitz_estimates,
)
from fedgan.simulator.gan.networks import NetworkSpec, power_iteration
from fedgan.simulator.gan.train import GAN, GANState
from scipy.spatial.distance import jensenshannon

MakeGAN = Callable[..., GAN]
LN2 = math.log(2.0)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def dsig(x: float) -> float:
    return sig(x) * (1.0 - sig(x))


def dirac_jacobian(theta: float, psi: float, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    gan, s = dirac_gan(theta=theta, psi=psi, **kw)  # type: ignore[arg-type]
    jac = game_jacobian(gan, s, real=torch.zeros(4, 1), z=torch.randn(4, 1))
    assert jac.layout == (("generator.theta", 1), ("critic.weight", 1))
    return jac.jacobian, jac.eigenvalues


# ---- game Jacobian ---------------------------------------------------------------------------


@pytest.mark.parametrize(("theta", "psi"), [(0.0, 0.0), (0.3, 0.5), (-2.0, 1.7)])
def test_dirac_wgan_jacobian_is_a_pure_rotation(theta: float, psi: float) -> None:
    """L_D = ψθ − ψ·0, L_G = −ψθ: ξ = (−ψ, θ), J = [[0, −1], [1, 0]], eigenvalues ±i."""
    gan, s = dirac_gan(theta=theta, psi=psi)
    jac = game_jacobian(gan, s, real=torch.zeros(3, 1), z=torch.randn(3, 1))
    np.testing.assert_allclose(jac.jacobian, [[0.0, -1.0], [1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(jac.field, [-psi, theta], atol=1e-6)
    np.testing.assert_allclose(sorted(jac.eigenvalues.imag), [-1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(jac.eigenvalues.real, [0.0, 0.0], atol=1e-12)
    assert jac.max_abs_imag == pytest.approx(1.0)
    assert jac.flow_max_real == pytest.approx(0.0, abs=1e-12)
    # simultaneous GD: |1 − lr·(±i)| = √(1 + lr²) > 1, it spirals out for every lr
    assert jac.gd_spectral_radius(0.1) == pytest.approx(math.sqrt(1.01))
    assert jac.n_generator == 1 and jac.n_critic == 1


@pytest.mark.parametrize("lam", [0.25, 2.0])
@pytest.mark.parametrize(("center", "sampling"), [(0.0, "real"), (0.0, "interpolates"),
                                                  (1.0, "interpolates"), (1.0, "fake")])
def test_dirac_wgan_gradient_penalty_damps(lam: float, center: float, sampling: str) -> None:
    """A linear critic's input gradient is ψ everywhere, so the penalty is λ(|ψ| − center)²
    whatever the sampling; for ψ > 0 its second derivative is 2λ: J = [[0, −1], [1, 2λ]].
    Eigenvalues of J: λ ± √(λ² − 1), so the flow −J has real parts −λ < 0 (λ < 1: a damped
    spiral) or −λ ± √(λ² − 1) < 0 (λ > 1: overdamped)."""
    params = {"lam": lam, "center": center, "sampling": sampling}
    jac, eig = dirac_jacobian(0.3, 0.5, lipschitz="gradient_penalty", lipschitz_params=params)
    np.testing.assert_allclose(jac, [[0.0, -1.0], [1.0, 2 * lam]], atol=1e-6)
    root = np.sqrt(complex(lam**2 - 1.0))
    expected = np.array([lam + root, lam - root])
    np.testing.assert_allclose(np.sort_complex(eig), np.sort_complex(expected), atol=1e-6)
    assert float((-eig).real.max()) < 0


def test_dirac_penalty_can_be_left_out() -> None:
    gan, s = dirac_gan(theta=0.3, psi=0.5, lipschitz="gradient_penalty")
    jac = game_jacobian(gan, s, torch.zeros(2, 1), torch.zeros(2, 1), include_penalty=False)
    np.testing.assert_allclose(jac.jacobian, [[0.0, -1.0], [1.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("objective", ["non_saturating", "saturating"])
def test_dirac_standard_gan_jacobian(objective: str) -> None:
    """L_D = softplus(−ψ·0) + softplus(ψθ), so ξ_ψ = θσ(ψθ).
    non-saturating: L_G = softplus(−ψθ), ξ_θ = −ψσ(−ψθ);
    saturating:     L_G = −softplus(ψθ),  ξ_θ = −ψσ(ψθ).
    At the equilibrium (0, 0) both give [[0, −½], [½, 0]] (Mescheder et al. 2018, f'(0) = ½)."""
    jac, eig = dirac_jacobian(0.0, 0.0, objective=objective)
    np.testing.assert_allclose(jac, [[0.0, -0.5], [0.5, 0.0]], atol=1e-12)
    np.testing.assert_allclose(sorted(eig.imag), [-0.5, 0.5], atol=1e-12)

    th, ps = 0.7, -1.3
    x = ps * th
    s = -1.0 if objective == "non_saturating" else 1.0  # ξ_θ = −ψσ(sx) with x = ψθ
    expected = [  # ∂/∂θ: −sψ²σ'(sx); ∂/∂ψ: −σ(sx) − sxσ'(sx)
        [-s * ps * ps * dsig(s * x), -sig(s * x) - s * x * dsig(s * x)],
        [sig(x) + th * ps * dsig(x), th * th * dsig(x)],
    ]
    jac, _ = dirac_jacobian(th, ps, objective=objective)
    np.testing.assert_allclose(jac, expected, atol=1e-6)


def test_zero_sum_structure_on_a_small_mlp(make_gan: MakeGAN, data: torch.Tensor) -> None:
    """Wasserstein without penalty: L_G + L_D = −E v(real) does not depend on θ_g, so
    ∂ξ_g/∂θ_d = ∇_d∇_g L_G = −(∇_g∇_d L_D) = −(∂ξ_d/∂θ_g)ᵀ; the diagonal blocks are Hessians,
    hence symmetric."""
    gan = make_gan(objective="wasserstein", generator=NetworkSpec(widths=(4,), activation="tanh"),
                   critic=NetworkSpec(widths=(5,), activation="tanh"))
    s = gan.init_state(0)
    jac = game_jacobian(gan, s, data[:16], torch.randn(16, 2))
    n_g = jac.n_generator
    assert n_g + jac.n_critic == sum(n for _, n in jac.layout) == jac.jacobian.shape[0]
    J = jac.jacobian
    np.testing.assert_allclose(J[:n_g, n_g:], -J[n_g:, :n_g].T, atol=1e-10)
    np.testing.assert_allclose(J[:n_g, :n_g], J[:n_g, :n_g].T, atol=1e-10)
    np.testing.assert_allclose(J[n_g:, n_g:], J[n_g:, n_g:].T, atol=1e-10)
    # the critic loss is linear in the critic's last layer: its Hessian block there is zero
    assert np.abs(J[-6:, -6:]).max() < 1e-10


def _shift(s: GANState, delta: np.ndarray, n_g: int) -> GANState:
    def apply(group: dict[str, torch.Tensor], vec: np.ndarray) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for k, v in group.items():
            n = v.numel()
            out[k] = v.double() + torch.from_numpy(vec[i : i + n]).reshape(v.shape)
            i += n
        return out

    return replace(s, g=apply(s.g, delta[:n_g]), d=apply(s.d, delta[n_g:]))


def test_jacobian_matches_finite_differences_of_the_field(
    make_gan: MakeGAN, data: torch.Tensor
) -> None:
    gan = make_gan(objective="non_saturating", lipschitz="gradient_penalty",
                   generator=NetworkSpec(widths=(3,), activation="tanh"),
                   critic=NetworkSpec(widths=(4,), activation="tanh"))
    s = gan.init_state(0)
    gen = torch.Generator().manual_seed(5)  # not the global RNG: other tests move it
    z = torch.randn(8, 2, generator=gen).double()
    real, eps = data[:8].double(), torch.rand(8, 1, generator=gen).double()
    jac = game_jacobian(gan, s, real, z, eps=eps)
    rng = np.random.default_rng(0)
    delta = rng.standard_normal(jac.jacobian.shape[0])
    h = 1e-5
    plus = game_jacobian(gan, _shift(s, h * delta, jac.n_generator), real, z, eps=eps).field
    minus = game_jacobian(gan, _shift(s, -h * delta, jac.n_generator), real, z, eps=eps).field
    np.testing.assert_allclose(jac.jacobian @ delta, (plus - minus) / (2 * h), atol=1e-6)


def test_game_jacobian_refuses_large_models(make_gan: MakeGAN, data: torch.Tensor) -> None:
    gan = make_gan()
    s = gan.init_state(0)
    with pytest.raises(ValueError, match="max_params=10"):
        game_jacobian(gan, s, data[:4], torch.randn(4, 2), max_params=10)


# ---- Dirac-GAN training ------------------------------------------------------------------------


def test_dirac_gan_alternating_sgd_step_by_hand() -> None:
    """Critic first: ψ' = ψ − lr·θ; then the generator against ψ': θ' = θ + lr·ψ'."""
    lr = 0.1
    gan, s = dirac_gan(theta=1.0, psi=0.5, lr=lr)
    s1, _ = gan.step(s, torch.zeros(8, 1), gan.draw(8, torch.Generator().manual_seed(0)))
    psi1 = 0.5 - lr * 1.0
    assert float(s1.d["weight"]) == pytest.approx(psi1)
    assert float(s1.g["theta"]) == pytest.approx(1.0 + lr * psi1)


def test_dirac_gan_cycles_without_and_converges_with_penalty() -> None:
    """Alternating SGD on the bilinear game is the area-preserving map [[1−lr², lr], [−lr, 1]]
    (det 1): it cycles and never converges; the R1-style penalty (center 0) damps it to (0, 0)."""
    data = torch.zeros(8, 1)

    def final(**kw: object) -> tuple[float, float]:
        gan, s = dirac_gan(theta=1.0, psi=0.0, lr=0.1, **kw)  # type: ignore[arg-type]
        s, _ = gan.train(s, data, 400, torch.Generator().manual_seed(0))
        return float(s.g["theta"]), float(s.d["weight"])

    th, ps = final()
    assert 0.5 < math.hypot(th, ps) < 2.0
    th, ps = final(lipschitz="gradient_penalty",
                   lipschitz_params={"lam": 1.0, "center": 0.0, "sampling": "real"})
    assert math.hypot(th, ps) < 1e-3


def test_dirac_gan_rejects_spectral_norm() -> None:
    with pytest.raises(ValueError, match="spectral_norm"):
        dirac_gan(lipschitz="spectral_norm")


# ---- Jensen–Shannon --------------------------------------------------------------------------


def test_js_estimate_endpoints() -> None:
    assert js_estimate(2 * LN2).js == pytest.approx(0.0, abs=1e-15)
    assert js_estimate(0.0).js == pytest.approx(LN2)
    bad = js_estimate(3.0)  # worse than D = ½: raw below 0, clipped
    assert bad.raw == pytest.approx(LN2 - 1.5)
    assert bad.js == 0.0
    assert js_estimate(torch.tensor(1.0)).raw == pytest.approx(LN2 - 0.5)


def _bce(p: np.ndarray, q: np.ndarray, d: np.ndarray) -> float:
    return float(-(p * np.log(d)).sum() - (q * np.log(1 - d)).sum())


def test_js_estimate_is_exact_at_the_optimal_critic_and_a_lower_bound_elsewhere() -> None:
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.1, 0.2, 0.3, 0.4])
    d_opt = np.clip(p / (p + q), 1e-300, 1 - 1e-16)  # D* = p/(p + q)
    js = jensenshannon(p, q) ** 2  # scipy returns the square root, natural log by default
    assert js_estimate(_bce(p, q, d_opt)).js == pytest.approx(js, rel=1e-9)
    for d in (np.full(4, 0.5), np.array([0.6, 0.55, 0.5, 0.3])):
        assert js_estimate(_bce(p, q, d)).js <= js


# ---- weight clipping ---------------------------------------------------------------------------


def test_clip_saturation_by_hand() -> None:
    c = 0.5  # exact in float32, so the edges are exactly ±c
    params = {
        "a": torch.tensor([0.5, -0.5, 0.25]),  # 2 at the edges
        "b": torch.tensor([[0.4998, 0.0, -0.499]]),  # threshold 0.5·(1 − 1e-3) = 0.4995
    }
    assert clip_saturation(params, c) == pytest.approx(3 / 6)
    assert clip_saturation(params, c, rtol=0.0) == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="c must be > 0"):
        clip_saturation(params, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        clip_saturation({}, c)


# ---- generator gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["saturating", "non_saturating"])
def test_profile_logit_gradient_and_per_sample_norms(
    make_gan: MakeGAN, objective: str
) -> None:
    gan = make_gan(objective=objective)
    s = gan.init_state(0)
    z = torch.randn(12, 2)
    prof = generator_gradient_profile(gan, s, z)

    gen_m, crit_m = copy.deepcopy(gan.generator), copy.deepcopy(gan.critic)
    gen_m.load_state_dict(s.g)
    crit_m.load_state_dict(s.d)
    v = crit_m(gen_m(z)).detach().double().numpy()
    d = 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(prof.v, v, rtol=1e-6)
    np.testing.assert_allclose(prof.d, d, rtol=1e-6)
    expected = -d if objective == "saturating" else -(1 - d)
    np.testing.assert_allclose(prof.logit_grad, expected, rtol=1e-5)

    # per-sample parameter gradients of ℓ(v) = log(1 − D) or −log D, one backward each
    norms, grads = [], []
    for i in range(z.shape[0]):
        gen_m.zero_grad()
        vi = crit_m(gen_m(z[i : i + 1]))
        loss = torch.log(1 - torch.sigmoid(vi)) if objective == "saturating" else -torch.log(
            torch.sigmoid(vi))
        loss.sum().backward()
        g = torch.cat([p.grad.reshape(-1) for p in gen_m.parameters()])  # type: ignore[union-attr]
        norms.append(float(g.norm()))
        grads.append(g)
    np.testing.assert_allclose(prof.param_grad_norm, norms, rtol=1e-4, atol=1e-7)
    assert prof.batch_grad_norm == pytest.approx(float(torch.stack(grads).mean(0).norm()),
                                                 rel=1e-4)
    loop = generator_gradient_profile(gan, s, z, method="loop")
    np.testing.assert_allclose(loop.param_grad_norm, prof.param_grad_norm, rtol=1e-5)
    np.testing.assert_allclose(loop.logit_grad, prof.logit_grad, rtol=1e-6)

    summ = prof.summary()
    assert summ["d_mean"] == pytest.approx(d.mean(), rel=1e-6)
    assert summ["logit_grad_var"] == pytest.approx(np.var(expected), rel=1e-4, abs=1e-12)
    assert summ["param_grad_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-4)


def test_saturating_gradient_vanishes_when_the_critic_wins() -> None:
    """Dirac-GAN with v = ψθ = −8 (D(G(z)) = σ(−8) ≈ 3·10⁻⁴): ∂ℓ/∂θ = ψ·ℓ'(v), so the
    saturating norm is |ψ|σ(v) → 0 while the non-saturating one is |ψ|(1 − σ(v)) ≈ |ψ|."""
    theta, psi = -4.0, 2.0
    z = torch.randn(5, 1)
    sat = generator_gradient_profile(*dirac_gan(theta, psi, objective="saturating"), z)
    ns = generator_gradient_profile(*dirac_gan(theta, psi, objective="non_saturating"), z)
    np.testing.assert_allclose(sat.d, np.full(5, sig(-8.0)), rtol=1e-6)
    np.testing.assert_allclose(sat.param_grad_norm, np.full(5, psi * sig(-8.0)), rtol=1e-5)
    np.testing.assert_allclose(ns.param_grad_norm, np.full(5, psi * (1 - sig(-8.0))), rtol=1e-6)
    assert sat.summary()["param_grad_norm_var"] == pytest.approx(0.0, abs=1e-15)
    # the Wasserstein generator loss −v: logit gradient −1, D is the raw critic output
    w = generator_gradient_profile(*dirac_gan(theta, psi), z)
    np.testing.assert_allclose(w.logit_grad, -np.ones(5))
    np.testing.assert_allclose(w.d, np.full(5, -8.0))


def test_profile_rejects_unknown_method() -> None:
    gan, s = dirac_gan()
    with pytest.raises(ValueError, match="unknown method"):
        generator_gradient_profile(gan, s, torch.zeros(2, 1), method="jit")  # type: ignore[arg-type]


# ---- Lipschitz estimates -------------------------------------------------------------------------


def test_lipschitz_estimates_linear_critic() -> None:
    gan, s = dirac_gan(theta=2.0, psi=-1.5)
    real, fake = torch.zeros(6, 1), torch.randn(6, 1)
    est = lipschitz_estimates(gan, s, real, fake, eps=torch.rand(6, 1))
    for value in (est.real, est.fake, est.interpolates, est.layer_product, est.bound):
        assert value == pytest.approx(1.5)
    assert est.layer_norms == (pytest.approx(1.5),)


def test_lipschitz_estimates_use_the_state_buffers(make_gan: MakeGAN, data: torch.Tensor) -> None:
    """After the weights change, the state's u vectors (advanced by power iteration) — not the
    module template's — give the effective SN weights: every layer ≈ 1, gradients ≤ 1."""
    gan = make_gan(lipschitz="spectral_norm", critic=NetworkSpec(widths=(8, 8)))
    s = gan.init_state(0)
    d = {k: 3.0 * v + 0.1 for k, v in s.d.items()}
    s = replace(s, d=d, d_buf=power_iteration(gan.critic, d, s.d_buf, n_iter=300))
    est = lipschitz_estimates(gan, s, data[:32], torch.randn(32, 2), eps=0.5)
    assert est.layer_norms == tuple([pytest.approx(1.0, rel=1e-4)] * 3)
    assert est.bound == pytest.approx(1.0, rel=1e-3)
    assert max(est.real, est.fake, est.interpolates) <= 1.0 + 1e-4


def test_lipschitz_estimates_two_branch_critic(make_gan: MakeGAN) -> None:
    """Identical one-layer SN branches: each layer has norm 1 (product 1) but v = 2·w/‖w‖·x has
    Lipschitz constant 2; the structural bound sums the branches: 2."""
    gan = make_gan(lipschitz="spectral_norm", critic=NetworkSpec(kind="two_branch", widths=()))
    s = gan.init_state(0)
    d = {k: s.d[k.replace("branch_b.", "branch_a.")] for k in s.d}
    buf = {k: s.d_buf[k.replace("branch_b.", "branch_a.")] for k in s.d_buf}
    s = replace(s, d=d, d_buf=power_iteration(gan.critic, d, buf, n_iter=100))
    est = lipschitz_estimates(gan, s, torch.randn(8, 2), torch.randn(8, 2), eps=0.3)
    assert est.layer_product == pytest.approx(1.0, rel=1e-4)
    assert est.bound == pytest.approx(2.0, rel=1e-4)
    for value in (est.real, est.fake, est.interpolates):
        assert value == pytest.approx(2.0, rel=1e-4)
