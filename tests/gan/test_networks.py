"""Networks: shapes, spectral normalization against an exact SVD, the two-branch counterexample."""

from __future__ import annotations

import pytest
import torch
from fedgan.simulator.gan.lipschitz import gradient_norms
from fedgan.simulator.gan.networks import (
    NetworkSpec,
    SNConv2d,
    SNLinear,
    TwoBranchCritic,
    build_critic,
    build_generator,
    layer_spectral_norms,
    param_count,
    power_iteration,
)
from fedgan.simulator.registry import RegistryError
from torch import nn
from torch.func import functional_call


def exact_sigma(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))


def state_of(m: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {k: v.detach().clone() for k, v in m.named_parameters()}
    bufs = {k: v.detach().clone() for k, v in m.named_buffers()}
    return params, bufs


@pytest.mark.parametrize(
    ("kind", "widths", "image"),
    [("mlp", (8, 8), None), ("two_branch", (8,), None), ("conv", (4, 8), (1, 8, 8))],
)
@pytest.mark.parametrize("sn", [False, True])
def test_critic_shapes(
    kind: str, widths: tuple[int, ...], image: tuple[int, int, int] | None, sn: bool
) -> None:
    d = 64 if image else 3
    critic = build_critic(NetworkSpec(kind=kind, widths=widths), d, image, spectral_norm=sn)
    assert critic(torch.randn(5, d)).shape == (5,)
    has_u = any(k.endswith(".u") for k, _ in critic.named_buffers())
    assert has_u == sn


@pytest.mark.parametrize(("kind", "image"), [("mlp", None), ("conv", (3, 8, 8))])
def test_generator_shapes(kind: str, image: tuple[int, int, int] | None) -> None:
    d = 192 if image else 3
    spec = NetworkSpec(kind=kind, widths=(4, 8), output="tanh")
    gen = build_generator(spec, latent_dim=2, data_dim=d, image_shape=image)
    x = gen(torch.randn(5, 2)).detach()
    assert x.shape == (5, d)
    assert float(x.abs().max()) <= 1.0  # tanh output / conv generator ends in tanh


def test_network_errors() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        build_critic(NetworkSpec(activation="nope"), 2)
    with pytest.raises(ValueError, match="needs image data"):
        build_critic(NetworkSpec(kind="conv", widths=(4, 8)), 64)
    with pytest.raises(ValueError, match="8×8"):
        build_critic(NetworkSpec(kind="conv", widths=(4, 8)), 3 * 16 * 16, (3, 16, 16))
    with pytest.raises(ValueError, match="exactly two"):
        build_critic(NetworkSpec(kind="conv", widths=(4,)), 64, (1, 8, 8))
    with pytest.raises(ValueError, match="unknown output"):
        build_generator(NetworkSpec(output="relu"), 2, 2)
    with pytest.raises(RegistryError):
        build_critic(NetworkSpec(kind="nope"), 2)


def test_param_count() -> None:
    # 3→5 (15 + 5) and 5→1 (5 + 1)
    assert param_count(build_critic(NetworkSpec(widths=(5,)), 3)) == 26


@pytest.mark.parametrize("layer_kind", ["linear", "conv"])
def test_spectral_normalized_layer_has_unit_norm(layer_kind: str) -> None:
    torch.manual_seed(0)
    layer: nn.Module = SNLinear(7, 5) if layer_kind == "linear" else SNConv2d(2, 3, 3, 1, 1)
    params, bufs = state_of(layer)
    params["weight"] = params["weight"] * 4.0  # far from unit norm before normalization
    bufs = power_iteration(layer, params, bufs, n_iter=200)
    w = params["weight"].reshape(params["weight"].shape[0], -1)
    u = bufs["u"]
    sigma_hat = float(u @ (w @ torch.nn.functional.normalize(w.t() @ u, dim=0)))
    assert sigma_hat == pytest.approx(exact_sigma(w), rel=1e-4)
    assert exact_sigma(w / sigma_hat) == pytest.approx(1.0, rel=1e-4)
    assert layer_spectral_norms(layer, params, bufs) == [pytest.approx(1.0, rel=1e-4)]
    if layer_kind == "linear":
        # the forward uses exactly W/σ(W) (σ from an SVD)
        x = torch.randn(4, 7)
        out = functional_call(layer, {**params, **bufs}, (x,))
        ref = torch.nn.functional.linear(x, params["weight"] / exact_sigma(w), params["bias"])
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_forward_does_not_touch_buffers() -> None:
    critic = build_critic(NetworkSpec(widths=(4,)), 3, spectral_norm=True)
    params, bufs = state_of(critic)
    before = {k: v.clone() for k, v in bufs.items()}
    functional_call(critic, {**params, **bufs}, (torch.randn(6, 3),))
    new = power_iteration(critic, params, bufs, n_iter=3)
    for k in bufs:
        torch.testing.assert_close(bufs[k], before[k], rtol=0, atol=0)
        assert float(new[k].norm()) == pytest.approx(1.0, rel=1e-5)


def test_layer_spectral_norms_plain_layers_match_svd() -> None:
    critic = build_critic(NetworkSpec(widths=(6, 4)), 3)
    norms = layer_spectral_norms(critic)
    weights = [m.weight for m in critic.modules() if isinstance(m, nn.Linear)]
    assert norms == [pytest.approx(exact_sigma(w.detach()), rel=1e-6) for w in weights]


def _converged(m: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params, bufs = state_of(m)
    return params, power_iteration(m, params, bufs, n_iter=300)


def test_two_branch_linear_branches_reach_two() -> None:
    """No hidden layer: each branch is w/‖w‖ (exactly 1-Lipschitz); equal branches sum to 2."""
    torch.manual_seed(1)
    critic = TwoBranchCritic(4, (), "relu", spectral_norm=True)
    params, bufs = _converged(critic)
    for k in list(params):
        if k.startswith("branch_b."):
            params[k] = params[k.replace("branch_b.", "branch_a.")]
    for k in list(bufs):
        if k.startswith("branch_b."):
            bufs[k] = bufs[k.replace("branch_b.", "branch_a.")]
    assert layer_spectral_norms(critic, params, bufs) == [pytest.approx(1.0, rel=1e-5)] * 2
    norms = gradient_norms(lambda x: functional_call(critic, {**params, **bufs}, (x,)),
                           torch.randn(32, 4))
    torch.testing.assert_close(norms, torch.full((32,), 2.0), rtol=1e-4, atol=1e-4)


def test_two_branch_relu_branches_exceed_one() -> None:
    """Hidden ReLU layer, every layer with spectral norm 1, both branches aligned on the positive
    orthant (all units active, zero biases): each branch is the linear map aᵀ/‖a‖ there, so
    each has gradient norm 1 and their sum 2 > 1."""
    critic = TwoBranchCritic(3, (3,), "relu", spectral_norm=True)
    params, bufs = state_of(critic)
    a = torch.tensor([[1.0, 2.0, 2.0]])  # ‖a‖ = 3
    for br in ("branch_a", "branch_b"):
        params[f"{br}.0.weight"] = 5.0 * torch.eye(3)
        params[f"{br}.0.bias"] = torch.zeros(3)
        params[f"{br}.2.weight"] = a.clone()
        params[f"{br}.2.bias"] = torch.zeros(1)
    bufs = power_iteration(critic, params, bufs, n_iter=50)
    assert layer_spectral_norms(critic, params, bufs) == [pytest.approx(1.0, rel=1e-5)] * 4
    x = torch.rand(16, 3) + 0.1  # positive orthant
    g = torch.func.vmap(torch.func.grad(lambda xi: functional_call(
        critic, {**params, **bufs}, (xi[None],)).sum()))(x)
    torch.testing.assert_close(g, (2 * a / 3).expand(16, 3), rtol=1e-5, atol=1e-5)
    lipschitz = float(g.norm(dim=1).max())
    assert lipschitz == pytest.approx(2.0, rel=1e-5)
