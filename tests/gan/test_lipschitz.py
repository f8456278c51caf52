"""Lipschitz controls: clipping bounds, gradient penalty on linear critics, input gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fedgan.simulator.gan.lipschitz import (
    LIPSCHITZ,
    GradientPenalty,
    get_control,
    gradient_norms,
    input_gradients,
)
from fedgan.simulator.gan.train import GAN
from fedgan.simulator.registry import RegistryError


def linear(w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x @ w


def test_registry() -> None:
    assert set(LIPSCHITZ.names()) == {
        "none", "weight_clip", "gradient_penalty", "r1", "spectral_norm"
    }
    assert get_control("spectral_norm").spectral_norm
    assert not get_control("gradient_penalty").spectral_norm


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("weight_clip", {"c": 0.0}, "c must be > 0"),
        ("weight_clip", {"lam": 1.0}, "has no parameter 'lam'"),
        ("gradient_penalty", {"lam": -1.0}, "lam must be >= 0"),
        ("gradient_penalty", {"sampling": "mid"}, "sampling must be one of"),
        ("gradient_penalty", {"center": -1.0}, "center must be >= 0"),
        ("spectral_norm", {"n_power_iterations": 0}, "n_power_iterations"),
        ("r1", {"sampling": "fake"}, "has no parameter 'sampling'; allowed: lam"),
        ("r1", {"lam": -0.1}, "lam must be >= 0"),
    ],
)
def test_invalid_parameters(name: str, params: dict[str, float], match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        get_control(name, params)


def test_input_gradients_of_known_function() -> None:
    x = torch.randn(5, 3)
    # v(x) = Σ x²: ∇ = 2x, per row
    torch.testing.assert_close(input_gradients(lambda y: (y**2).sum(dim=1), x), 2 * x)
    torch.testing.assert_close(
        gradient_norms(lambda y: (y**2).sum(dim=1), x), 2 * x.norm(dim=1), rtol=1e-5, atol=1e-5
    )


def test_r1_is_lambda_times_mean_squared_gradient_norm_on_real_data() -> None:
    """R1 on v(x) = x·w: ∇ₓv = w for every row, so the penalty is λ‖w‖² whatever the fake."""
    w = torch.tensor([3.0, 4.0])
    r1 = get_control("r1", {"lam": 0.2})
    real, fake = torch.randn(6, 2), torch.randn(6, 2) * 100
    pen = r1.penalty(linear(w), real, fake, torch.rand(6, 1))
    torch.testing.assert_close(pen, torch.tensor(0.2 * 25.0), rtol=1e-5, atol=1e-6)
    assert get_control("r1").lam == 0.1  # the default recipe's λ


def test_interpolation_points() -> None:
    real, fake = torch.ones(4, 2), torch.zeros(4, 2)
    eps = torch.tensor([[0.0], [0.25], [0.5], [1.0]])
    gp = GradientPenalty()
    torch.testing.assert_close(gp.points(real, fake, eps), eps.expand(4, 2))
    assert GradientPenalty(sampling="real").points(real, fake, eps) is real
    assert GradientPenalty(sampling="fake").points(real, fake, eps) is fake


@pytest.mark.parametrize("sampling", ["interpolates", "real", "fake"])
def test_gradient_penalty_zero_for_unit_norm_linear_critic(sampling: str) -> None:
    w = torch.tensor([0.6, -0.8])  # ‖w‖ = 1
    gp = get_control("gradient_penalty", {"lam": 10.0, "sampling": sampling, "center": 1.0})
    real, fake, eps = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8, 1)
    assert float(gp.penalty(linear(w), real, fake, eps)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("sampling", ["interpolates", "real", "fake"])
@pytest.mark.parametrize(("w", "center"), [((3.0, 4.0), 1.0), ((0.3, 0.4), 1.0), ((3.0, 4.0), 0.0)])
def test_gradient_penalty_of_linear_critic(
    sampling: str, w: tuple[float, float], center: float
) -> None:
    lam = 2.5
    wt = torch.tensor(w)
    norm = (w[0] ** 2 + w[1] ** 2) ** 0.5
    gp = get_control("gradient_penalty", {"lam": lam, "sampling": sampling, "center": center})
    real, fake, eps = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8, 1)
    pen = gp.penalty(linear(wt), real, fake, eps)
    assert float(pen) == pytest.approx(lam * (norm - center) ** 2, rel=1e-5)


def test_gradient_penalty_is_differentiable_in_the_weights() -> None:
    """d/dw λ(‖w‖ − 1)² = 2λ(‖w‖ − 1)·w/‖w‖ (double backward through the input gradient)."""
    lam = 3.0
    gp = get_control("gradient_penalty", {"lam": lam})
    w = torch.tensor([1.0, 2.0, 2.0])  # ‖w‖ = 3
    real, fake, eps = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 1)
    grad = torch.func.grad(lambda ww: gp.penalty(linear(ww), real, fake, eps))(w)
    torch.testing.assert_close(grad, 2 * lam * (3.0 - 1.0) * w / 3.0, rtol=1e-5, atol=1e-5)


def test_weight_clip_projection() -> None:
    clip = get_control("weight_clip", {"c": 0.1})
    out = clip.project({"a": torch.tensor([-1.0, -0.05, 0.0, 0.2])})
    torch.testing.assert_close(out["a"], torch.tensor([-0.1, -0.05, 0.0, 0.1]))
    none = get_control("none")
    p = {"a": torch.tensor([5.0])}
    assert none.project(p) is p
    assert float(none.penalty(linear(torch.ones(1)), torch.ones(2, 1), torch.ones(2, 1),
                              torch.ones(2, 1))) == 0.0


def test_weight_clipping_holds_after_training(
    make_gan: Callable[..., GAN], data: torch.Tensor
) -> None:
    c = 0.01
    gan = make_gan(objective="wasserstein", lipschitz="weight_clip", lipschitz_params={"c": c},
                   n_critic=3)
    c = float(torch.tensor(c))  # the clamp bound in float32
    s = gan.init_state(0)
    assert all(float(v.abs().max()) <= c for v in s.d.values())
    before = {k: v.clone() for k, v in s.d.items()}
    s, _ = gan.train(s, data, 5, torch.Generator().manual_seed(0))
    assert any(not torch.equal(before[k], s.d[k]) for k in s.d)  # the critic did train
    assert all(float(v.abs().max()) <= c for v in s.d.values())
