"""Network kinds by name: the registries the schema reads (`gan.generator.kind`,
`gan.critic.kind`), without torch.

The built-in factories live in `simulator.gan.networks` (torch's nn.Modules); each is
registered here by `module:attr`, imported when a network is first built, so validating a
scenario never pays torch's import.
Plug-ins register or are named (`module:attr`) as before: a callable returning an nn.Module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


DCGAN_SIZES = (28, 32)
"""Image sides the DCGAN-style nets are built for: two stride-2 steps, 28→14→7 and 32→16→8."""


def dcgan_geometry(image_shape: tuple[int, int, int], widths: Sequence[int]) -> tuple[int, int]:
    """(channels C, lowest side s = H/4) of a DCGAN-style net, or ValueError naming what is
    allowed: square 28×28 or 32×32 images (any C) and two or more channel widths."""
    c, h, w = image_shape
    if h != w or h not in DCGAN_SIZES:
        allowed = " or ".join(f"{n}×{n}" for n in DCGAN_SIZES)
        raise ValueError(f"dcgan nets are built for {allowed} images, got {h}×{w}")
    if len(widths) < 2:
        raise ValueError(
            "dcgan nets take two or more channel widths (two stride-2 convs, then 3×3 convs at "
            f"the lowest resolution), got {list(widths)}"
        )
    return c, h // 4


def image_problem(
    kind: str, widths: Sequence[int], image_shape: tuple[int, int, int] | None
) -> str | None:
    """Why a built-in image network (conv, dcgan) cannot be built on data of `image_shape`
    (None: the data are not images), or None (fine, or not a built-in image kind). Torch-free,
    for a preflight that has built the data: the same checks the networks make when built."""
    if kind not in ("conv", "dcgan"):
        return None
    if image_shape is None:
        return f"network kind {kind!r} needs image data (the dataset has no image_shape)"
    if kind == "dcgan":
        try:
            dcgan_geometry(image_shape, widths)
        except ValueError as exc:
            return str(exc)
        return None
    h, w = image_shape[1:]
    if h != 8 or w != 8:
        return f"conv nets are built for 8×8 images, got {h}×{w}"
    if len(widths) != 2:
        return f"conv nets take exactly two channel widths, got {list(widths)}"
    return None


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
