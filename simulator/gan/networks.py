"""Generator and critic networks: MLPs, conv nets for 8×8 and (DCGAN-style) 28×28 / 32×32
images, a two-branch critic.

Spectral normalization is written functionally: each normalized layer keeps its power-iteration
vector `u` as a buffer that the forward pass only reads; `power_iteration(...)` returns the
updated buffers. That keeps the forward pure (no in-place buffer update), so the same network
works under `torch.func.functional_call` and `vmap`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Defined with the registries the schema reads without torch; re-exported from here.
from fedgan.simulator.gan.kinds import CRITICS as CRITICS
from fedgan.simulator.gan.kinds import DCGAN_SIZES as DCGAN_SIZES
from fedgan.simulator.gan.kinds import GENERATORS as GENERATORS
from fedgan.simulator.gan.kinds import NetworkSpec as NetworkSpec
from fedgan.simulator.gan.kinds import dcgan_geometry
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def _normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    return x / (x.norm() + eps)


def _sigma(weight: Tensor, u: Tensor) -> Tensor:
    """σ̂(W) = uᵀ W v, v = normalize(Wᵀu), for W reshaped to [out, rest]; u and v are detached
    so the gradient flows through W only, as in SN-GAN."""
    w = weight.reshape(weight.shape[0], -1)
    u = u.detach()
    v = _normalize(w.detach().t() @ u)
    return u @ (w @ v)


class SNLinear(nn.Linear):
    """Linear layer divided by its largest singular value (Miyato et al. 2018).

    σ(W) is estimated as uᵀ W v with v = normalize(Wᵀu), u and v held fixed (detached): the
    gradient flows through W only, as in SN-GAN. `u` (shape [out]) is a buffer.
    """

    u: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("u", _normalize(torch.randn(out_features)))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight / _sigma(self.weight, self.u), self.bias)


class SNConv2d(nn.Conv2d):
    """Conv layer whose [out, in·kh·kw] weight matrix is spectrally normalized (see SNLinear)."""

    u: Tensor

    def __init__(self, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.register_buffer("u", _normalize(torch.randn(self.out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight / _sigma(self.weight, self.u), self.bias)


SN_LAYERS = (SNLinear, SNConv2d)


def power_iteration(
    module: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], n_iter: int = 1
) -> dict[str, Tensor]:
    """One (or `n_iter`) power-iteration step for every spectrally normalized layer.

    Pure: reads weights from `params` and `u` vectors from `buffers`, returns new buffers.
    """
    new = dict(buffers)
    for name, layer in module.named_modules():
        if not isinstance(layer, SN_LAYERS):
            continue
        prefix = f"{name}." if name else ""
        w = params[prefix + "weight"].detach()
        w = w.reshape(w.shape[0], -1)
        u = buffers[prefix + "u"]
        for _ in range(n_iter):
            v = _normalize(w.t() @ u)
            u = _normalize(w @ v)
        new[prefix + "u"] = u
    return new


def _linear(i: int, o: int, sn: bool) -> nn.Linear:
    return SNLinear(i, o) if sn else nn.Linear(i, o)


def mlp(
    in_dim: int,
    out_dim: int,
    widths: Sequence[int],
    activation: str,
    spectral_norm: bool = False,
    output: str = "linear",
) -> nn.Sequential:
    """A plain MLP in_dim → widths… → out_dim; `output` is 'linear' or 'tanh'."""
    layers: list[nn.Module] = []
    prev = in_dim
    for w in widths:
        layers += [_linear(prev, w, spectral_norm), _activation(activation)]
        prev = w
    layers.append(_linear(prev, out_dim, spectral_norm))
    if output == "tanh":
        layers.append(nn.Tanh())
    elif output != "linear":
        raise ValueError(f"unknown output {output!r}; allowed: linear, tanh")
    return nn.Sequential(*layers)


class MLPCritic(nn.Module):
    """x [B, d] → critic output v [B] (a logit for probabilistic objectives)."""

    def __init__(
        self, in_dim: int, widths: Sequence[int], activation: str, spectral_norm: bool
    ) -> None:
        super().__init__()
        self.net = mlp(in_dim, 1, widths, activation, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


class TwoBranchCritic(nn.Module):
    """v(x) = f₁(x) + f₂(x), two parallel MLP branches summed.

    With per-layer spectral norm each branch is 1-Lipschitz but the sum is only bounded by 2:
    the case where per-layer normalization does *not* bound the whole network by 1.
    """

    def __init__(
        self, in_dim: int, widths: Sequence[int], activation: str, spectral_norm: bool
    ) -> None:
        super().__init__()
        self.branch_a = mlp(in_dim, 1, widths, activation, spectral_norm)
        self.branch_b = mlp(in_dim, 1, widths, activation, spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        return (self.branch_a(x) + self.branch_b(x)).squeeze(-1)


class MLPGenerator(nn.Module):
    """z [B, latent] → x [B, d]."""

    def __init__(
        self, latent_dim: int, out_dim: int, widths: Sequence[int], activation: str, output: str
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = mlp(latent_dim, out_dim, widths, activation, output=output)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _two_channels(channels: Sequence[int]) -> tuple[int, int]:
    if len(channels) != 2:
        raise ValueError(f"conv nets take exactly two channel widths, got {list(channels)}")
    return channels[0], channels[1]


def _conv(i: int, o: int, k: int, s: int, p: int, sn: bool) -> nn.Conv2d:
    return SNConv2d(i, o, k, s, p) if sn else nn.Conv2d(i, o, k, s, p)


class ConvCritic(nn.Module):
    """Images flattened [B, C·8·8] → v [B]: two 4×4 stride-2 convs (8→4→2) and a linear head."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: Sequence[int],
        activation: str,
        spectral_norm: bool,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if h != 8 or w != 8:
            raise ValueError(f"conv nets are built for 8×8 images, got {h}×{w}")
        c1, c2 = _two_channels(channels)
        self.image_shape = image_shape
        self.net = nn.Sequential(
            _conv(c, c1, 4, 2, 1, spectral_norm),
            _activation(activation),
            _conv(c1, c2, 4, 2, 1, spectral_norm),
            _activation(activation),
            nn.Flatten(),
            _linear(c2 * 2 * 2, 1, spectral_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.image_shape)).squeeze(-1)


class ConvGenerator(nn.Module):
    """z [B, latent] → images flattened [B, C·8·8] in [−1, 1]: linear to 2×2, two 4×4 up-convs."""

    def __init__(
        self,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        channels: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if h != 8 or w != 8:
            raise ValueError(f"conv nets are built for 8×8 images, got {h}×{w}")
        c2, c1 = _two_channels(channels)[::-1]
        self.latent_dim = latent_dim
        self.c2 = c2
        self.fc = nn.Linear(latent_dim, c2 * 2 * 2)
        self.net = nn.Sequential(
            _activation(activation),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            _activation(activation),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).reshape(z.shape[0], self.c2, 2, 2)
        return self.net(h).flatten(1)


class DCGANCritic(nn.Module):
    """Images flattened [B, C·H·W] (H = W = 28 or 32) → v [B], DCGAN's discriminator without
    BatchNorm.

    `widths` [w₁, w₂, w₃, …] are channel counts from the image side: 4×4 stride-2 convs
    C→w₁ (H/2) and w₁→w₂ (H/4: 28→14→7, 32→16→8), then a 3×3 stride-1 conv for each further
    width at H/4, LeakyReLU(0.2) after each conv (DCGAN's; `activation` is not read), and a
    linear head from w_last·(H/4)² to one output. Every layer is spectrally normalized when
    asked (SNConv2d / SNLinear).

    No BatchNorm, nor any norm across the batch: a gradient penalty, R1, DP-SGD's per-sample
    clipping and the clients' vmap all need each sample's output to depend on that sample only.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], widths: Sequence[int], spectral_norm: bool
    ) -> None:
        super().__init__()
        c, s = dcgan_geometry(image_shape, widths)
        self.image_shape = image_shape
        sn = spectral_norm
        layers: list[nn.Module] = [
            _conv(c, widths[0], 4, 2, 1, sn),
            nn.LeakyReLU(0.2),
            _conv(widths[0], widths[1], 4, 2, 1, sn),
            nn.LeakyReLU(0.2),
        ]
        for prev, w in zip(widths[1:], widths[2:], strict=False):
            layers += [_conv(prev, w, 3, 1, 1, sn), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), _linear(widths[-1] * s * s, 1, sn)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], *self.image_shape)).squeeze(-1)


class DCGANGenerator(nn.Module):
    """z [B, latent] → images flattened [B, C·H·W] in [−1, 1] (H = W = 28 or 32), DCGAN's
    generator without BatchNorm: the mirror of `DCGANCritic` for the same `widths`.

    A linear layer z → (w_last, H/4, H/4), a 3×3 stride-1 conv down the widths for each width
    past the second (w_last → … → w₂), then 4×4 stride-2 up-convolutions (ConvTranspose2d,
    padding 1: exactly ×2) w₂→w₁ (H/2) and w₁→C (H), ReLU between layers (DCGAN's;
    `activation` is not read) and tanh at the end (`output` is not read either: images are
    scaled to [−1, 1]).

    Why no BatchNorm: its batch statistics would couple the samples of a batch and its running
    statistics are state outside the pure step — the vectorized engine would have to stack,
    carry and federate them per client. Without it the step stays a pure, vmappable function of
    the parameters, like every other network here; the critics' Lipschitz controls (SN, R1, GP)
    and Adam are what stabilize training instead.
    """

    def __init__(
        self, latent_dim: int, image_shape: tuple[int, int, int], widths: Sequence[int]
    ) -> None:
        super().__init__()
        c, s = dcgan_geometry(image_shape, widths)
        self.latent_dim = latent_dim
        self.top = (widths[-1], s, s)
        self.fc = nn.Linear(latent_dim, widths[-1] * s * s)
        layers: list[nn.Module] = [nn.ReLU()]
        down = list(widths[1:])[::-1]  # w_last, …, w₂
        for prev, w in zip(down, down[1:], strict=False):
            layers += [nn.Conv2d(prev, w, 3, 1, 1), nn.ReLU()]
        layers += [
            nn.ConvTranspose2d(widths[1], widths[0], 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(widths[0], c, 4, 2, 1),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).reshape(z.shape[0], *self.top)).flatten(1)


GeneratorFactory = Callable[[NetworkSpec, int, int, "tuple[int, int, int] | None"], nn.Module]
CriticFactory = Callable[[NetworkSpec, int, "tuple[int, int, int] | None", bool], nn.Module]


def _need_image(kind: str, image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    if image_shape is None:
        raise ValueError(f"network kind {kind!r} needs image data (the dataset has no image_shape)")
    return image_shape


# The built-in kinds, registered by `module:attr` in `simulator.gan.kinds` (which the schema
# reads without torch).


def mlp_generator(
    s: NetworkSpec, latent: int, d: int, img: tuple[int, int, int] | None
) -> nn.Module:
    return MLPGenerator(latent, d, s.widths, s.activation, s.output)


def conv_generator(
    s: NetworkSpec, latent: int, d: int, img: tuple[int, int, int] | None
) -> nn.Module:
    return ConvGenerator(latent, _need_image("conv", img), s.widths, s.activation)


def dcgan_generator(
    s: NetworkSpec, latent: int, d: int, img: tuple[int, int, int] | None
) -> nn.Module:
    return DCGANGenerator(latent, _need_image("dcgan", img), s.widths)


def mlp_critic(s: NetworkSpec, d: int, img: tuple[int, int, int] | None, sn: bool) -> nn.Module:
    return MLPCritic(d, s.widths, s.activation, sn)


def two_branch_critic(
    s: NetworkSpec, d: int, img: tuple[int, int, int] | None, sn: bool
) -> nn.Module:
    return TwoBranchCritic(d, s.widths, s.activation, sn)


def conv_critic(s: NetworkSpec, d: int, img: tuple[int, int, int] | None, sn: bool) -> nn.Module:
    return ConvCritic(_need_image("conv", img), s.widths, s.activation, sn)


def dcgan_critic(s: NetworkSpec, d: int, img: tuple[int, int, int] | None, sn: bool) -> nn.Module:
    return DCGANCritic(_need_image("dcgan", img), s.widths, sn)


def build_generator(
    spec: NetworkSpec,
    latent_dim: int,
    data_dim: int,
    image_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """Generator mapping z [B, latent_dim] → x [B, data_dim]."""
    net: nn.Module = GENERATORS.get(spec.kind)(spec, latent_dim, data_dim, image_shape)
    return net


def build_critic(
    spec: NetworkSpec,
    data_dim: int,
    image_shape: tuple[int, int, int] | None = None,
    spectral_norm: bool = False,
) -> nn.Module:
    """Critic mapping x [B, data_dim] → v [B]; every layer spectrally normalized if asked."""
    net: nn.Module = CRITICS.get(spec.kind)(spec, data_dim, image_shape, spectral_norm)
    return net


def layer_spectral_norms(
    module: nn.Module,
    params: dict[str, Tensor] | None = None,
    buffers: dict[str, Tensor] | None = None,
) -> list[float]:
    """Exact largest singular value of every linear/conv weight matrix, after normalization.

    For SN layers the effective weight W/σ̂ is used, so an SN critic's entries are ≈ 1. The
    product is an upper bound on the Lipschitz constant of a chain with 1-Lipschitz
    activations (for convs, of the reshaped matrix: a heuristic, as in SN-GAN).

    `buffers` are the power-iteration vectors `u` that go with `params` (e.g. a GANState's
    `d_buf`); the module's own buffers are only the template's, stale once training ran.
    """
    params = params if params is not None else dict(module.named_parameters())
    buffers = buffers if buffers is not None else dict(module.named_buffers())
    return [float(v) for v in layer_spectral_norm_tensors(module, params, buffers)]


def layer_spectral_norm_tensors(
    module: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]
) -> list[Tensor]:
    """`layer_spectral_norms` as 0-d tensors, in module order (vmap-able over stacked clients)."""
    out: list[Tensor] = []
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d):
            continue
        prefix = f"{name}." if name else ""
        w = params[prefix + "weight"].detach().reshape(layer.weight.shape[0], -1)
        if isinstance(layer, SN_LAYERS):
            w = w / _sigma(w, buffers[prefix + "u"])
        # A diverged critic (NaN/inf weights) gets NaN, not an SVD error: no branch on values,
        # so one diverged client does not stop a batch of them.
        finite = torch.isfinite(w).all()
        norm = torch.linalg.matrix_norm(torch.where(finite, w, torch.zeros_like(w)), ord=2)
        out.append(torch.where(finite, norm, torch.full_like(norm, float("nan"))))
    return out


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
