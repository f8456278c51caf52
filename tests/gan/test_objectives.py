"""Objectives: losses at hand-computed points and their logit gradients (math, not our output)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from fedgan.simulator.gan.objectives import OBJECTIVES, get_objective
from fedgan.simulator.registry import RegistryError

LN2 = math.log(2.0)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_registry_names_and_flags() -> None:
    assert set(OBJECTIVES.names()) == {
        "saturating", "non_saturating", "wasserstein", "hinge", "least_squares", "kl",
        "reverse_kl",
    }
    probabilistic = {n for n in OBJECTIVES.names() if get_objective(n).probabilistic}
    assert probabilistic == {"saturating", "non_saturating"}
    with pytest.raises(RegistryError, match="unknown objective"):
        get_objective("nope")


@pytest.mark.parametrize("name", ["saturating", "non_saturating"])
def test_standard_critic_loss_is_binary_cross_entropy(name: str) -> None:
    # L = −mean log D(x) − mean log(1 − D(G(z))), D = sigmoid(v)
    vr, vf = [0.5, -1.0, 2.0], [-0.3, 1.5]
    expected = -sum(math.log(sigmoid(v)) for v in vr) / 3 - sum(
        math.log(1 - sigmoid(v)) for v in vf
    ) / 2
    got = get_objective(name).critic_loss(t(*vr), t(*vf))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # D = ½ everywhere: L = 2 ln 2
    assert float(get_objective(name).critic_loss(t(0.0), t(0.0))) == pytest.approx(2 * LN2)


def test_generator_losses_at_points() -> None:
    v = [-2.0, 0.0, 3.0]
    sat = sum(math.log(1 - sigmoid(x)) for x in v) / 3
    ns = -sum(math.log(sigmoid(x)) for x in v) / 3
    assert float(get_objective("saturating").generator_loss(t(*v))) == pytest.approx(sat)
    assert float(get_objective("non_saturating").generator_loss(t(*v))) == pytest.approx(ns)


def test_generator_logit_gradients_are_minus_d_and_minus_one_minus_d() -> None:
    v = torch.linspace(-6, 6, 13, dtype=torch.float64, requires_grad=True)
    d = torch.sigmoid(v.detach())
    b = v.numel()
    (g_sat,) = torch.autograd.grad(get_objective("saturating").generator_loss(v), v)
    (g_ns,) = torch.autograd.grad(get_objective("non_saturating").generator_loss(v), v)
    # the loss is a mean: per-sample derivative = B · ∂L/∂vᵢ
    torch.testing.assert_close(b * g_sat, -d)
    torch.testing.assert_close(b * g_ns, -(1 - d))


def test_wasserstein() -> None:
    obj = get_objective("wasserstein")
    assert float(obj.critic_loss(t(1.0, 2.0), t(3.0, 5.0))) == pytest.approx(4.0 - 1.5)
    assert float(obj.generator_loss(t(3.0, 5.0))) == pytest.approx(-4.0)


def test_hinge() -> None:
    obj = get_objective("hinge")
    # real: max(0, 1−0.5)=0.5, max(0, 1−2)=0 → 0.25; fake: max(0, 1−2)=0, max(0, 1.5)=1.5 → 0.75
    assert float(obj.critic_loss(t(0.5, 2.0), t(-2.0, 0.5))) == pytest.approx(1.0)
    assert float(obj.generator_loss(t(-2.0, 0.5))) == pytest.approx(0.75)


def test_least_squares() -> None:
    obj = get_objective("least_squares")
    # ½·mean((1−1)², (3−1)²) + ½·mean(0², 2²) = 1 + 1
    assert float(obj.critic_loss(t(1.0, 3.0), t(0.0, 2.0))) == pytest.approx(2.0)
    # ½·mean((0−1)², (2−1)²)
    assert float(obj.generator_loss(t(0.0, 2.0))) == pytest.approx(0.5)


def f_gan_value(
    T_real: list[float], T_fake: list[float], f_star: Callable[[float], float]
) -> float:
    """E_P T − E_Q f*(T): the f-GAN saddle objective the critic maximizes."""
    return sum(T_real) / len(T_real) - sum(f_star(x) for x in T_fake) / len(T_fake)


def test_forward_kl_f_gan() -> None:
    obj = get_objective("kl")

    def f_star(x: float) -> float:
        return math.exp(x - 1)

    vr, vf = [1.0, 2.0], [1.0, 1.0 + LN2]  # T = v
    value = f_gan_value(vr, vf, f_star)
    assert float(obj.critic_loss(t(*vr), t(*vf))) == pytest.approx(-value)
    assert float(obj.generator_loss(t(*vf))) == pytest.approx(-(1.0 + 2.0) / 2)
    # P = Q: the optimal T* = 1 + log(p/q) = 1 gives the divergence KL = 0
    assert float(obj.critic_loss(t(1.0, 1.0), t(1.0, 1.0))) == pytest.approx(0.0, abs=1e-12)


def test_reverse_kl_f_gan() -> None:
    obj = get_objective("reverse_kl")

    def T(v: float) -> float:
        return -math.exp(-v)

    def f_star(x: float) -> float:
        return -1.0 - math.log(-x)

    vr, vf = [0.5, -1.0], [2.0, -0.5, 0.0]
    value = f_gan_value([T(v) for v in vr], [T(v) for v in vf], f_star)
    assert float(obj.critic_loss(t(*vr), t(*vf))) == pytest.approx(-value)
    gen = -sum(f_star(T(v)) for v in vf) / len(vf)
    assert float(obj.generator_loss(t(*vf))) == pytest.approx(gen)
    # P = Q: T* = −q/p = −1, i.e. v = 0, gives the divergence 0
    assert float(obj.critic_loss(t(0.0), t(0.0))) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", sorted(OBJECTIVES.names()))
def test_shapes_b_and_b1_agree(name: str) -> None:
    obj = get_objective(name)
    vr, vf = t(0.3, -1.2, 2.0), t(-0.7, 0.1, 1.1)
    a = obj.critic_loss(vr, vf)
    b = obj.critic_loss(vr[:, None], vf[:, None])
    assert a.shape == () and b.shape == ()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(obj.generator_loss(vf), obj.generator_loss(vf[:, None]))
