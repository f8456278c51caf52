"""Network kinds by name: the registries the schema reads (`gan.generator.kind`,
`gan.critic.kind`), without torch.

The built-in factories live in `simulator.gan.networks` (torch's nn.Modules); each is
registered here by `module:attr`, imported when a network is first built, so validating a
scenario never pays torch's import.
Plug-ins register or are named (`module:attr`) as before: a callable returning an nn.Module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedgan.simulator.registry import Registry


@dataclass(frozen=True)
class NetworkSpec:
    """What a network looks like. `kind`: mlp | conv (8×8 images) | dcgan (28×28 / 32×32
    images) | two_branch (critic only).

    `widths`: hidden widths (MLP) or channels from the image side (conv: exactly two; dcgan:
    two stride-2 convs, then a 3×3 conv for each further width — see `networks.DCGANCritic`).
    `output`: generator output layer (MLPs; the image generators end in tanh).
    """

    kind: str = "mlp"
    widths: tuple[int, ...] = (128, 128)
    activation: str = "relu"
    output: str = "linear"


def _callable(obj: object) -> str | None:
    """A network plug-in is a factory: a callable returning an nn.Module."""
    return None if callable(obj) else f"expected a callable that builds an nn.Module, got {obj!r}"


GENERATORS: Registry[Callable[..., Any]] = Registry("generator network", check=_callable)
CRITICS: Registry[Callable[..., Any]] = Registry("critic network", check=_callable)


# The built-ins by `module:attr`, imported when a network is first built: the schema reads
# their names without torch, and `simulator.gan.networks` (which imports this module) stays
# the one place that builds them.
for _kind in ("mlp", "conv", "dcgan"):
    GENERATORS.add_lazy(_kind, f"fedgan.simulator.gan.networks:{_kind}_generator")
for _kind in ("mlp", "two_branch", "conv", "dcgan"):
    CRITICS.add_lazy(_kind, f"fedgan.simulator.gan.networks:{_kind}_critic")
