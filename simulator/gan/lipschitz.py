"""Lipschitz controls for the critic: none, weight clipping, gradient penalty, spectral norm.

A control can add a penalty to the critic loss, project the critic's parameters after each
step, and/or ask for spectrally normalized critic layers. All three hooks are pure functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedgan.simulator.lazy import lazy
from fedgan.simulator.registry import Registry, RegistryError, signature, subclass_of

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:  # the schema reads this registry: torch only once a penalty is computed
    torch = lazy("torch", globals(), "torch")

Critic = Callable[["Tensor"], "Tensor"]


def input_gradients(critic: Critic, x: Tensor) -> Tensor:
    """∇ₓ v(x) for each row of x [B, d] → [B, d], differentiable (for double backward).

    Uses `torch.func.vjp` so it composes with `torch.func.grad` over the critic's parameters.
    Rows are independent, so the vector-Jacobian product with ones gives per-row gradients.
    """
    # vjp's annotation also covers has_aux=True (three values): index instead of unpacking.
    res = torch.func.vjp(critic, x)
    out, vjp_fn = res[0], res[1]
    (g,) = vjp_fn(torch.ones_like(out))
    return g


def gradient_norms(critic: Critic, x: Tensor) -> Tensor:
    """‖∇ₓ v(x)‖₂ per row, [B]; the small epsilon keeps the norm differentiable at 0."""
    g = input_gradients(critic, x).flatten(1)
    return torch.sqrt((g * g).sum(dim=1) + 1e-12)


@dataclass(frozen=True)
class LipschitzControl:
    """No control (the base class): zero penalty, identity projection, plain layers."""

    name = "none"
    spectral_norm = False

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        """Extra critic loss; `eps` [B, 1] are uniform(0,1) interpolation weights."""
        return real.new_zeros(())

    def project(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Critic parameters after an optimizer step."""
        return params

    def validate(self) -> None:
        """Raise ValueError naming a parameter that is out of range."""


LIPSCHITZ: Registry[type[LipschitzControl]] = Registry(
    "lipschitz control", check=subclass_of(LipschitzControl)
)
LIPSCHITZ.add("none", LipschitzControl)


@LIPSCHITZ.register("weight_clip")
@dataclass(frozen=True)
class WeightClip(LipschitzControl):
    """WGAN (Arjovsky et al. 2017): clamp every critic parameter to [−c, c] after each step."""

    c: float = 0.01
    name = "weight_clip"

    def project(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.clamp(-self.c, self.c) for k, v in params.items()}

    def validate(self) -> None:
        if not self.c > 0:
            raise ValueError(f"c must be > 0, got {self.c}")


GP_SAMPLING = ("interpolates", "real", "fake")


@LIPSCHITZ.register("gradient_penalty")
@dataclass(frozen=True)
class GradientPenalty(LipschitzControl):
    """λ·E(‖∇ₓv(x̂)‖ − center)² at x̂ sampled by `sampling`.

    interpolates: x̂ = εx + (1−ε)G(z), WGAN-GP (Gulrajani et al. 2017); real: on data
    (with center=0 this is R1, Mescheder et al. 2018, up to the factor ½); fake: on samples.
    """

    lam: float = 10.0
    sampling: str = "interpolates"
    center: float = 1.0
    name = "gradient_penalty"

    def points(self, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        if self.sampling == "interpolates":
            return eps * real + (1.0 - eps) * fake
        return real if self.sampling == "real" else fake

    def penalty(self, critic: Critic, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
        norms = gradient_norms(critic, self.points(real, fake, eps))
        return self.lam * ((norms - self.center) ** 2).mean()

    def validate(self) -> None:
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        if self.sampling not in GP_SAMPLING:
            raise ValueError(
                f"sampling must be one of {', '.join(GP_SAMPLING)}, got {self.sampling!r}"
            )
        if not self.center >= 0:
            raise ValueError(f"center must be >= 0, got {self.center}")


@LIPSCHITZ.register("r1")
@dataclass(frozen=True)
class R1(GradientPenalty):
    """R1 (Mescheder et al. 2018): λ·E‖∇ₓv(x)‖² on real data — the gradient penalty with
    `sampling: real`, `center: 0` (λ here is the paper's γ/2). The default control: with the
    non-saturating loss it is the recipe measured in the README (λ 0.1)."""

    lam: float = 0.1
    sampling: str = field(default="real", init=False)
    center: float = field(default=0.0, init=False)
    name = "r1"


@LIPSCHITZ.register("spectral_norm")
@dataclass(frozen=True)
class SpectralNorm(LipschitzControl):
    """SN-GAN (Miyato et al. 2018): every critic layer divided by its spectral norm,
    estimated with `n_power_iterations` power-iteration steps per critic update."""

    n_power_iterations: int = 1
    name = "spectral_norm"
    spectral_norm = True

    def validate(self) -> None:
        if self.n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {self.n_power_iterations}")


def get_control(name: str, params: dict[str, Any] | None = None) -> LipschitzControl:
    """Build the control `name` with `params`; unknown or out-of-range parameters raise
    RegistryError naming the parameter and what is allowed."""
    cls = LIPSCHITZ.get(name)
    params = dict(params or {})
    fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
    allowed = [f.name for f in fields if f.init]  # fixed fields (R1's sampling) are not knobs
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise RegistryError(
            f"lipschitz control {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )
    wrong = signature("lipschitz control", name, cls).check(params).wrong
    if wrong:
        key, msg = next(iter(wrong.items()))
        raise RegistryError(f"lipschitz control {name!r}: {key} {msg}")
    control = cls(**params)
    try:
        control.validate()
    except ValueError as exc:
        raise RegistryError(f"lipschitz control {name!r}: {exc}") from None
    return control
