"""Seeds spawned from one scenario seed, one independent stream per purpose (and client)."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
from fedgan.simulator.lazy import lazy

if TYPE_CHECKING:
    import torch
else:  # the data's seeds are numpy's: a scenario's preflight never needs torch
    torch = lazy("torch", globals(), "torch")


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for (`purpose`, keys…) under the scenario `seed`; stable across runs."""
    tag = zlib.crc32(purpose.encode())
    ss = np.random.SeedSequence([seed, tag, *keys])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *keys))


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, *keys))
