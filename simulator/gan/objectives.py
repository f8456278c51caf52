"""GAN objectives: critic and generator losses on critic outputs (logits), by name.

Every objective maps raw critic outputs `v` (shape [B] or [B, 1], unbounded) to two scalar
losses that are *minimized*: `critic_loss(v_real, v_fake)` and `generator_loss(v_fake)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedgan.simulator.lazy import lazy
from fedgan.simulator.registry import Registry, subclass_of

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
    from torch import Tensor
else:  # the schema reads this registry: torch only once a loss is computed
    torch = lazy("torch", globals(), "torch")
    F = lazy("torch.nn.functional", globals(), "F")


@dataclass(frozen=True)
class Objective:
    """A pair of losses; subclasses override both.

    `probabilistic` marks objectives whose critic is a classifier (D = sigmoid(v)), for which a
    Jensen-Shannon estimate from the critic loss makes sense.
    """

    name: str = "objective"
    probabilistic: bool = False

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective", check=subclass_of(Objective))


@OBJECTIVES.register("saturating")
@dataclass(frozen=True)
class Saturating(Objective):
    """Goodfellow et al. 2014 minimax: G minimizes E log(1 − D(G(z))).

    d/dv log(1 − σ(v)) = −σ(v) = −D: the gradient vanishes as the critic wins (D(G(z)) → 0).
    """

    name: str = "saturating"
    probabilistic: bool = True

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        # −log σ(v) = softplus(−v); −log(1 − σ(v)) = softplus(v)
        return F.softplus(-v_real).mean() + F.softplus(v_fake).mean()

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        # log(1 − σ(v)) = −softplus(v)
        return -F.softplus(v_fake).mean()


@OBJECTIVES.register("non_saturating")
@dataclass(frozen=True)
class NonSaturating(Saturating):
    """Goodfellow et al. 2014 heuristic: G minimizes −E log D(G(z)); d/dv = −(1 − D)."""

    name: str = "non_saturating"

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return F.softplus(-v_fake).mean()


@OBJECTIVES.register("wasserstein")
@dataclass(frozen=True)
class Wasserstein(Objective):
    """Arjovsky et al. 2017: the critic maximizes E v(x) − E v(G(z)); needs a Lipschitz control."""

    name: str = "wasserstein"

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return v_fake.mean() - v_real.mean()

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return -v_fake.mean()


@OBJECTIVES.register("hinge")
@dataclass(frozen=True)
class Hinge(Objective):
    """Lim & Ye 2017 / Miyato et al. 2018: critic hinge loss, generator −E v(G(z))."""

    name: str = "hinge"

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return F.relu(1.0 - v_real).mean() + F.relu(1.0 + v_fake).mean()

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return -v_fake.mean()


@OBJECTIVES.register("least_squares")
@dataclass(frozen=True)
class LeastSquares(Objective):
    """Mao et al. 2017 (a=0, b=c=1): critic ½E(v(x)−1)² + ½E v(G(z))², generator ½E(v(G(z))−1)²."""

    name: str = "least_squares"

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return 0.5 * ((v_real - 1.0) ** 2).mean() + 0.5 * (v_fake**2).mean()

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return 0.5 * ((v_fake - 1.0) ** 2).mean()


@OBJECTIVES.register("kl")
@dataclass(frozen=True)
class ForwardKL(Objective):
    """f-GAN (Nowozin et al. 2016) for KL(P‖Q): T = g(v) = v, f*(t) = exp(t − 1).

    The critic maximizes E_P T − E_Q f*(T); the generator minimizes the same saddle objective,
    i.e. −E_Q f*(T(G(z))). Forward KL is mode covering.
    """

    name: str = "kl"

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return -(v_real.mean() - torch.exp(v_fake - 1.0).mean())

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return -torch.exp(v_fake - 1.0).mean()


@OBJECTIVES.register("reverse_kl")
@dataclass(frozen=True)
class ReverseKL(Objective):
    """f-GAN (Nowozin et al. 2016) for KL(Q‖P): T = g(v) = −exp(−v), f*(t) = −1 − log(−t).

    With T = −exp(−v): f*(T) = −1 + v. The critic maximizes E_P T − E_Q f*(T); the generator
    minimizes −E_Q f*(T(G(z))) = −E_Q (v − 1). Reverse KL is mode seeking.
    """

    name: str = "reverse_kl"

    def critic_loss(self, v_real: Tensor, v_fake: Tensor) -> Tensor:
        return -(-torch.exp(-v_real).mean() - (v_fake - 1.0).mean())

    def generator_loss(self, v_fake: Tensor) -> Tensor:
        return -(v_fake - 1.0).mean()


def get_objective(name: str) -> Objective:
    """Instantiate the objective registered under `name` (or a `module:Class` plug-in)."""
    return OBJECTIVES.get(name)()
