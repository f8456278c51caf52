"""Shared tiny-GAN factory for the gan tests (small widths and batches keep them fast)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from fedgan.simulator.gan import fastmlp
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.optim import OptimizerSpec
from fedgan.simulator.gan.train import GAN, GANConfig


def tiny_config(**overrides: Any) -> GANConfig:
    """A 2-D GAN with one hidden layer of 8 units on both sides and batches of 16."""
    base: dict[str, Any] = dict(
        latent_dim=2,
        generator=NetworkSpec(widths=(8,)),
        critic=NetworkSpec(widths=(8,)),
        batch_size=16,
        g_opt=OptimizerSpec(lr=1e-2),
        d_opt=OptimizerSpec(lr=1e-2),
    )
    base.update(overrides)
    return GANConfig(**base)


@pytest.fixture
def make_config() -> Callable[..., GANConfig]:
    return tiny_config


@pytest.fixture
def make_gan() -> Callable[..., GAN]:
    def make(data_dim: int = 2, **overrides: Any) -> GAN:
        return GAN(tiny_config(**overrides), data_dim=data_dim)

    return make


@pytest.fixture
def data() -> torch.Tensor:
    """64 points of a 2-D Gaussian centered at (1, −1)."""
    gen = torch.Generator().manual_seed(123)
    return torch.randn(64, 2, generator=gen) + torch.tensor([1.0, -1.0])


@pytest.fixture
def reference() -> Iterator[Callable[[bool], None]]:
    """`reference(False)`: the reference step everywhere (`GAN.step` through torch.func, the
    hand-batched MLP step off: the oracle); `reference(True)`: the default. On afterwards."""

    def use(fast: bool) -> None:
        fastmlp.ENABLED = fast

    yield use
    fastmlp.ENABLED = True


@pytest.fixture
def float64() -> Iterator[None]:
    """Tensors made during the test default to float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
