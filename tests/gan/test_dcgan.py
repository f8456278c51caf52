"""DCGAN-style networks for 28×28 and 32×32 images: geometry, refusals, spectral norm,
penalties through conv, a step with every objective, DP-SGD, and the memory formula."""

from __future__ import annotations

import math

import pytest
import torch
from fedgan.simulator.gan import dpsgd, fastmlp
from fedgan.simulator.gan.kinds import image_problem
from fedgan.simulator.gan.lipschitz import get_control
from fedgan.simulator.gan.networks import (
    SN_LAYERS,
    DCGANCritic,
    DCGANGenerator,
    NetworkSpec,
    build_critic,
    build_generator,
    power_iteration,
)
from fedgan.simulator.gan.objectives import OBJECTIVES
from fedgan.simulator.gan.state import DPSGD
from fedgan.simulator.gan.train import GAN
from fedgan.simulator.memory import network_params, network_units
from fedgan.simulator.scenario import NetworkModel
from torch import nn
from torch.func import functional_call

from tests.gan.conftest import tiny_config

IMAGES = [(1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32)]


def _outputs(net: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shapes [C, H, W] (per sample) of every conv / up-conv / linear layer, in order."""
    shapes: list[tuple[int, ...]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    net(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("widths", [(4, 8), (4, 8, 6)])
def test_shapes_follow_the_dcgan_geometry(
    image: tuple[int, int, int], widths: tuple[int, ...]
) -> None:
    c, h, _ = image
    d, s = c * h * h, h // 4  # s: 7 for 28×28, 8 for 32×32
    spec = NetworkSpec(kind="dcgan", widths=widths)
    gen = build_generator(spec, latent_dim=5, data_dim=d, image_shape=image)
    critic = build_critic(spec, d, image)
    z = torch.randn(3, 5)
    x = gen(z).detach()
    assert x.shape == (3, d)
    assert float(x.abs().max()) <= 1.0  # tanh
    assert critic(x).shape == (3,)
    # By hand: the critic halves the side twice (4×4, stride 2, padding 1), keeps it in the
    # 3×3 convs, and its head reads w_last·s² values; the generator mirrors it.
    extra = [(w, s, s) for w in widths[2:]]
    assert _outputs(critic, x) == [(widths[0], 2 * s, 2 * s), (widths[1], s, s), *extra, (1,)]
    down = [(w, s, s) for w in widths[1:-1][::-1]]
    assert _outputs(gen, z) == [(widths[-1] * s * s,), *down, (widths[0], 2 * s, 2 * s), (c, h, h)]
    # Images travel flattened channel-major: row i of the output is image i's (C, H, W) array.
    img = gen.net(gen.fc(z).reshape(3, widths[-1], s, s))
    torch.testing.assert_close(x, img.reshape(3, -1).detach())


def test_other_sizes_and_widths_are_refused_clearly() -> None:
    spec = NetworkSpec(kind="dcgan", widths=(4, 8))
    for image in [(1, 8, 8), (3, 64, 64), (1, 28, 32)]:
        with pytest.raises(ValueError, match=r"28×28 or 32×32 images, got \d+×\d+"):
            build_critic(spec, math.prod(image), image)
        with pytest.raises(ValueError, match="28×28 or 32×32"):
            build_generator(spec, 4, math.prod(image), image)
    with pytest.raises(ValueError, match="two or more channel widths"):
        build_critic(NetworkSpec(kind="dcgan", widths=(4,)), 784, (1, 28, 28))
    with pytest.raises(ValueError, match="'dcgan' needs image data"):
        build_generator(spec, 4, 784)


@pytest.mark.parametrize("kind", ["dcgan", "conv", "mlp"])
@pytest.mark.parametrize("widths", [(4,), (4, 8), (4, 8, 6)])
@pytest.mark.parametrize("image", [None, (1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 16, 16)])
def test_the_torch_free_check_says_what_building_says(
    kind: str, widths: tuple[int, ...], image: tuple[int, int, int] | None
) -> None:
    # `kinds.image_problem` is what a preflight calls without torch: it must refuse exactly
    # what building refuses, with the same words.
    spec = NetworkSpec(kind=kind, widths=widths)
    d = math.prod(image) if image else 3
    try:
        build_critic(spec, d, image)
        build_generator(spec, 4, d, image)
        raised = None
    except ValueError as exc:
        raised = str(exc)
    assert image_problem(kind, widths, image) == raised


@pytest.mark.parametrize("sn", [False, True])
def test_spectral_norm_on_every_critic_layer_when_asked(sn: bool) -> None:
    critic = build_critic(NetworkSpec(kind="dcgan", widths=(4, 8, 6)), 784, (1, 28, 28), sn)
    layers = [m for m in critic.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 4  # two strided convs, one 3×3 conv, the head
    assert all(isinstance(m, SN_LAYERS) == sn for m in layers)
    assert sum(k.endswith(".u") for k, _ in critic.named_buffers()) == (4 if sn else 0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    if sn:  # each normalized layer's weight matrix has unit norm once the iteration converged
        params = {k: v.detach() * 3.0 for k, v in critic.named_parameters()}
        bufs = power_iteration(critic, params, dict(critic.named_buffers()), n_iter=300)
        for name, m in critic.named_modules():
            if isinstance(m, SN_LAYERS):
                w = params[f"{name}.weight"].reshape(m.weight.shape[0], -1)
                u = bufs[f"{name}.u"]
                sigma = u @ (w @ torch.nn.functional.normalize(w.t() @ u, dim=0))
                exact = torch.linalg.svdvals(w)[0]  # the reference: an SVD
                assert float(sigma) == pytest.approx(float(exact), rel=1e-3)


def test_generator_has_no_batch_statistics() -> None:
    gen = build_generator(NetworkSpec(kind="dcgan", widths=(4, 8)), 4, 784, (1, 28, 28))
    assert dpsgd.batch_statistics(gen) == [] and not list(gen.buffers())
    # Per-sample: a row's output does not depend on the rest of the batch.
    z = torch.randn(5, 4)
    torch.testing.assert_close(gen(z)[:2], gen(z[:2]))


@pytest.mark.parametrize(
    ("control", "params"),
    [("r1", {"lam": 0.5}), ("gradient_penalty", {"lam": 2.0}), ("spectral_norm", {})],
)
def test_penalties_differentiate_through_conv(control: str, params: dict[str, float]) -> None:
    # The reference: torch.autograd on the module itself (create_graph double backward), not
    # the project's torch.func path. Both must give the same finite, non-zero weight gradients.
    ctl = get_control(control, params)
    torch.manual_seed(0)
    critic = DCGANCritic((1, 28, 28), (4, 8), ctl.spectral_norm)
    p = {k: v.detach().clone() for k, v in critic.named_parameters()}
    bufs = dict(critic.named_buffers())
    real, fake = torch.rand(6, 784) * 2 - 1, torch.rand(6, 784) * 2 - 1
    eps = torch.rand(6, 1)

    def penalty(pp: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = functional_call(critic, {**pp, **bufs}, (real,)).mean()
        return loss + ctl.penalty(
            lambda x: functional_call(critic, {**pp, **bufs}, (x,)), real, fake, eps
        )

    got = torch.func.grad(penalty)(p)
    x = (eps * real + (1 - eps) * fake if control == "gradient_penalty" else real).requires_grad_()
    v = critic(x)
    (gx,) = torch.autograd.grad(v.sum(), x, create_graph=True)
    norms = gx.flatten(1).norm(dim=1)
    if control == "r1":
        pen = params["lam"] * (norms**2).mean()
    elif control == "gradient_penalty":
        pen = params["lam"] * ((norms - 1.0) ** 2).mean()
    else:
        pen = norms.new_zeros(())
    assert math.isfinite(float(pen.detach()))
    names = [k for k, _ in critic.named_parameters()]
    want = torch.autograd.grad(
        critic(real).mean() + pen, list(critic.parameters()), retain_graph=True
    )
    for k, w in zip(names, want, strict=True):
        assert torch.isfinite(got[k]).all(), k
        torch.testing.assert_close(got[k], w, rtol=1e-4, atol=1e-6, msg=k)
    if control != "spectral_norm":  # the penalty alone reaches the first conv's weights
        (g0,) = torch.autograd.grad(pen, [critic.net[0].weight])
        assert float(g0.abs().sum()) > 0


# Every registered objective, each with a Lipschitz control that applies (cycled so that each
# control runs at least once without a test per pair).
CONTROLS = [
    ("none", {}),
    ("spectral_norm", {}),
    ("r1", {"lam": 0.1}),
    ("gradient_penalty", {"lam": 1.0}),
    ("weight_clip", {"c": 0.05}),
]


@pytest.mark.parametrize("objective", OBJECTIVES.names())
def test_one_step_with_every_objective_changes_both_networks(objective: str) -> None:
    control, params = CONTROLS[OBJECTIVES.names().index(objective) % len(CONTROLS)]
    spec = NetworkSpec(kind="dcgan", widths=(4, 8))
    gan = GAN(
        tiny_config(
            latent_dim=4,
            generator=spec,
            critic=spec,
            objective=objective,
            lipschitz=control,
            lipschitz_params=params,
            batch_size=4,
        ),
        data_dim=784,
        image_shape=(1, 28, 28),
    )
    assert fastmlp.plan(gan) is None  # conv nets take the reference step (vmap when batched)
    s0 = gan.init_state(0)
    data = torch.rand(10, 784, generator=torch.Generator().manual_seed(1)) * 2 - 1
    s1, hist = gan.train(s0, data, 1, torch.Generator().manual_seed(2))
    assert all(math.isfinite(v) for v in hist[0].values())
    for group in ("g", "d"):
        before, after = getattr(s0, group), getattr(s1, group)
        assert all(torch.isfinite(v).all() for v in after.values())
        assert any(not torch.equal(before[k], after[k]) for k in before), group


@pytest.mark.parametrize("control", ["spectral_norm", "gradient_penalty"])
def test_dp_sgd_runs_on_the_dcgan_critic(control: str) -> None:
    spec = NetworkSpec(kind="dcgan", widths=(4, 8))
    config = tiny_config(
        latent_dim=4,
        generator=spec,
        critic=spec,
        lipschitz=control,
        batch_size=4,
        dp=DPSGD(clip=0.5, noise_multiplier=1.0),
    )
    assert dpsgd.dp_problems(config) == []  # a built-in per-sample critic: nothing to build
    gan = GAN(config, data_dim=784, image_shape=(1, 28, 28))
    data = torch.rand(12, 784, generator=torch.Generator().manual_seed(0)) * 2 - 1
    s0 = gan.init_state(0)
    s1, hist = gan.train(s0, data, 2, torch.Generator().manual_seed(1))
    assert all(math.isfinite(v) for row in hist for v in row.values())
    assert 0.0 <= hist[-1]["dp_clipped_fraction"] <= 1.0
    assert any(not torch.equal(s0.d[k], s1.d[k]) for k in s0.d)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("widths", [[4, 8], [64, 128], [3, 5, 7, 2]])
def test_memory_formula_counts_what_is_built(
    image: tuple[int, int, int], widths: list[int]
) -> None:
    # The built network is the independent source: its parameters' numel, and the outputs of
    # its layers (hooks) for the activation units.
    c, h, _ = image
    d, latent = c * h * h, 16
    net = NetworkModel(kind="dcgan", widths=widths)
    gen = DCGANGenerator(latent, image, widths)
    critic = DCGANCritic(image, widths, spectral_norm=True)
    assert network_params(net, latent, d, c, critic=False) == sum(
        p.numel() for p in gen.parameters()
    )
    assert network_params(net, d, 1, c, critic=True) == sum(p.numel() for p in critic.parameters())
    # Hidden units: every layer's output but the image the generator ends in and the critic's
    # one output.
    g_units = sum(math.prod(s) for s in _outputs(gen, torch.randn(1, latent))[:-1])
    d_units = sum(math.prod(s) for s in _outputs(critic, torch.zeros(1, d))[:-1])
    assert network_units(net, d, c) == g_units == d_units


def test_memory_breakdown_of_a_dcgan_scenario() -> None:
    from fedgan.simulator.memory import ACTIVATION_COPIES, memory_breakdown
    from fedgan.simulator.scenario import validate

    s = validate(
        {
            "data": {"dataset": "tests.engines.test_vectorized_conv:blobs_28", "n_samples": 100},
            "gan": {
                "latent_dim": 10,
                "generator": {"kind": "dcgan", "widths": [4, 8]},
                "critic": {"kind": "dcgan", "widths": [4, 8]},
                "batch_size": 16,
            },
        }
    )
    # By hand, 28×28×1, widths [4, 8]: generator 10→8·7·7 (3920 + 392), up-convs 8→4
    # (512 + 4) and 4→1 (64 + 1); critic convs 1→4 (64 + 4), 4→8 (512 + 8), head 392 + 1.
    g, c = 3920 + 392 + 512 + 4 + 64 + 1, 64 + 4 + 512 + 8 + 392 + 1
    parts = memory_breakdown(s)
    assert parts["models"] == (2 * g + 2 * c + 2 * g + 2 * c) * 4  # weights, grads, Adam m, v
    # Units of each net: 4 channels at 14×14 and 8 at 7×7 = 1176; plus the data and latent.
    assert parts["activations"] == 16 * (2 * 1176 + 784 + 10) * 4 * ACTIVATION_COPIES
