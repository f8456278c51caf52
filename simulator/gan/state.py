"""What a GAN is made of, apart from its modules: the configuration (`GANConfig`, with its
optional sample-level DP-SGD for the critic, `DPSGD`), all its tensors (`GANState`) and the
pre-drawn randomness of its steps (`StepNoise`, drawn in `draw_blocks`; under DP-SGD also the
batch masks and the per-parameter Gaussian noise, see `dpsgd.py`).

Shared by the reference step (`train.py`) and the hand-batched MLP step (`fastmlp.py`), which
`train.GAN.train` dispatches to; `train.py` re-exports everything here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.optim import OptimizerSpec
from torch import Tensor

Params = dict[str, Tensor]

SCHEDULES = ("constant", "linear", "cosine")

DP_SAMPLINGS = ("poisson", "fixed")


@dataclass(frozen=True)
class DPSGD:
    """Sample-level DP-SGD for the critic's updates (Abadi et al. 2016; `simulator/gan/dpsgd.py`):
    each real sample's whole gradient contribution clipped to norm `clip` (C), Gaussian noise
    of std `noise_multiplier` · C added to the clipped sum, divided by the expected batch size.

    `sampling`: how each critic step's batch is drawn from the client's n points —
    `poisson`: every point independently with q = batch_size / n (a variable batch; accounted
    as a Poisson-subsampled Gaussian, add/remove neighbours); `fixed`: batch_size distinct
    points uniformly without replacement (replace-one neighbours: sensitivity 2C)."""

    clip: float
    noise_multiplier: float
    sampling: Literal["poisson", "fixed"] = "poisson"

    def __post_init__(self) -> None:
        if not self.clip > 0:  # NaN fails too; inf is allowed (no clipping: tests)
            raise ValueError(f"dp clip must be > 0, got {self.clip}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(f"dp noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if self.sampling not in DP_SAMPLINGS:
            raise ValueError(
                f"dp sampling must be one of {', '.join(DP_SAMPLINGS)}, got {self.sampling!r}"
            )

    @property
    def noise_std(self) -> float:
        """σ·C, the std of the noise on the clipped sum (0 without noise, even for C = ∞)."""
        return self.noise_multiplier * self.clip if self.noise_multiplier else 0.0


@dataclass(frozen=True)
class GANConfig:
    """Everything that defines local GAN training (networks, losses, optimizers, steps)."""

    latent_dim: int = 2
    generator: NetworkSpec = field(default_factory=NetworkSpec)
    critic: NetworkSpec = field(default_factory=NetworkSpec)
    objective: str = "non_saturating"
    lipschitz: str = "none"
    lipschitz_params: dict[str, Any] = field(default_factory=dict)
    n_critic: int = 1
    batch_size: int = 256
    g_opt: OptimizerSpec = field(default_factory=OptimizerSpec)
    d_opt: OptimizerSpec = field(default_factory=OptimizerSpec)
    lr_schedule: str = "constant"
    lr_final: float = 0.1
    """Learning rate at the end of the schedule, as a fraction of the base rate."""
    ema: float = 0.0
    """Decay of an exponential moving average of generator weights (0 = off), used for sampling."""
    prox_mu: float = 0.0
    """FedProx proximal weight μ: adds μ/2‖θ − θ_anchor‖² to each network's loss."""
    dp: DPSGD | None = None
    """Sample-level DP-SGD for every critic update (None: the ordinary step, unchanged)."""

    def lr_scale(self, step: int, total: int) -> float:
        """Multiplier of the base learning rate at generator step `step` of `total`."""
        if self.lr_schedule == "constant" or total <= 1:
            return 1.0
        t = min(max(step / (total - 1), 0.0), 1.0)
        if self.lr_schedule == "linear":
            return 1.0 + (self.lr_final - 1.0) * t
        return self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t))


ARRAY_GROUPS = {
    "generator": "g",
    "critic": "d",
    "critic_buffer": "d_buf",
    "generator_opt": "g_opt",
    "critic_opt": "d_opt",
    "generator_ema": "g_ema",
}
"""Key prefix of `GANState.arrays()` → the state's tensor dict it names (anchors never travel)."""


@dataclass
class GANState:
    """All tensors of one GAN: generator `g`, critic `d`, critic buffers (spectral-norm vectors),
    optimizer states, the generator EMA and the anchors of the proximal term."""

    g: Params
    d: Params
    d_buf: Params
    g_opt: Params
    d_opt: Params
    g_ema: Params
    g_anchor: Params = field(default_factory=dict)
    d_anchor: Params = field(default_factory=dict)
    step: int = 0

    def array_keys(self) -> set[str]:
        """The keys `arrays()` would give, without converting any tensor."""
        return {f"{prefix}.{k}" for prefix, group in self._groups().items() for k in group}

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat `prefix.name → array` view (prefixes: generator, critic, critic_buffer, ...)."""
        out: dict[str, np.ndarray] = {}
        for prefix, group in self._groups().items():
            for k, v in group.items():
                out[f"{prefix}.{k}"] = v.detach().cpu().numpy()
        return out

    def _groups(self) -> dict[str, Params]:
        return {prefix: getattr(self, name) for prefix, name in ARRAY_GROUPS.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> GANState:
        """A copy with the groups named in `arrays` replaced (missing keys are kept)."""
        groups = {p: dict(g) for p, g in self._groups().items()}
        for key, value in arrays.items():
            prefix, _, name = key.partition(".")
            if prefix not in groups or name not in groups[prefix]:
                raise KeyError(f"unexpected array {key!r}")
            old = groups[prefix][name]
            groups[prefix][name] = torch.as_tensor(np.array(value, copy=True), dtype=old.dtype)
        return replace(
            self,
            g=groups["generator"],
            d=groups["critic"],
            d_buf=groups["critic_buffer"],
            g_opt=groups["generator_opt"],
            d_opt=groups["critic_opt"],
            g_ema=groups["generator_ema"],
        )


@dataclass(frozen=True)
class StepNoise:
    """Randomness of one generator step: indices into the data [n_critic, B], latent codes for
    the critic steps [n_critic, B, latent] and the generator step [B, latent], and
    interpolation weights [n_critic, B, 1] for the gradient penalty.

    Under DP-SGD (`GANConfig.dp`) the real batch of a critic step has M rows, a fixed shape
    that holds the drawn batch: idx [n_critic, M] (M = B for `fixed` sampling, the block's
    largest Poisson batch for `poisson`), `mask` [n_critic, M] (bool: the row is in the batch;
    the others are padding), eps [n_critic, M, 1], and `dp_noise` [n_critic, P]: standard
    normals, one per critic parameter (in `dpsgd.layout` order), scaled by σC in the step.
    Without DP both are None and nothing else is drawn."""

    idx: Tensor
    z_d: Tensor
    z_g: Tensor
    eps: Tensor
    mask: Tensor | None = None
    dp_noise: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        """The fields that are set, by name (None fields left out: vmap takes no None)."""
        out = {"idx": self.idx, "z_d": self.z_d, "z_g": self.z_g, "eps": self.eps}
        if self.mask is not None:
            out["mask"] = self.mask
        if self.dp_noise is not None:
            out["dp_noise"] = self.dp_noise
        return out

    def map(self, fn: Callable[[str, Tensor], Tensor]) -> StepNoise:
        """`fn(name, tensor)` applied to every field that is set."""
        return StepNoise(**{k: fn(k, v) for k, v in self.tensors().items()})

    def at(self, t: int) -> StepNoise:
        """Step `t` of noise drawn with a leading step axis (`GAN.draw_steps`)."""
        return self.map(lambda _, v: v[t])


DRAW_BLOCK = 64
"""Generator steps whose noise is drawn together (`draw_blocks`): bounds the memory of pre-drawn
noise in long centralized runs; a federated round's local steps up to this many are one block."""


def draw_blocks(n_steps: int) -> list[int]:
    """Sizes of the noise blocks of an `n_steps` loop: [64, 64, ..., rest]. Every path that must
    reproduce a client's random stream (sequential or batched) draws in exactly these blocks."""
    full, rest = divmod(n_steps, DRAW_BLOCK)
    return [DRAW_BLOCK] * full + ([rest] if rest else [])
