"""Seeds spawned from one scenario seed, one independent stream per purpose (and client)."""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for (`purpose`, keys…) under the scenario `seed`; stable across runs."""
    tag = zlib.crc32(purpose.encode())
    ss = np.random.SeedSequence([seed, tag, *keys])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *keys))


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, purpose, *keys))
