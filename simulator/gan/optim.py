"""Functional optimizers: pure (params, grads, state, lr) → (params, state) updates.

Optimizer state is a flat dict of tensors ('step', 'm.<param>', 'v.<param>'), so it can be
checkpointed, sent as arrays, and stacked across clients for batched training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedgan.simulator.lazy import lazy

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:  # the schema reads OPTIMIZERS: torch only once a step is taken
    torch = lazy("torch", globals(), "torch")

Params = dict[str, "Tensor"]

OPTIMIZERS = ("adam", "rmsprop", "sgd")


@dataclass(frozen=True)
class OptimizerSpec:
    """Adam (betas, eps), RMSprop (alpha, eps) or SGD (momentum); `lr` is the base rate."""

    name: str = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    alpha: float = 0.99
    momentum: float = 0.0
    eps: float = 1e-8
    weight_decay: float = 0.0

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; allowed: {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {self.alpha}")


def init_state(spec: OptimizerSpec, params: Params) -> dict[str, Tensor]:
    """Zero moments for every parameter, plus a step counter."""
    state = {"step": torch.zeros(())}
    slots = {"adam": ("m", "v"), "rmsprop": ("v",), "sgd": ("m",) if spec.momentum else ()}
    for slot in slots[spec.name]:
        for k, p in params.items():
            state[f"{slot}.{k}"] = torch.zeros_like(p)
    return state


def update(
    spec: OptimizerSpec, params: Params, grads: Params, state: dict[str, Tensor], lr: float
) -> tuple[Params, dict[str, Tensor]]:
    """One step with learning rate `lr` (the schedule is applied by the caller). Pure."""
    step = state["step"] + 1
    new_state = {"step": step}
    new_params: Params = {}
    for k, p in params.items():
        g = grads[k]
        if spec.weight_decay:
            g = g + spec.weight_decay * p
        if spec.name == "adam":
            b1, b2 = spec.betas
            m = b1 * state[f"m.{k}"] + (1 - b1) * g
            v = b2 * state[f"v.{k}"] + (1 - b2) * g * g
            new_state[f"m.{k}"], new_state[f"v.{k}"] = m, v
            m_hat = m / (1 - b1**step)
            v_hat = v / (1 - b2**step)
            new_params[k] = p - lr * m_hat / (v_hat.sqrt() + spec.eps)
        elif spec.name == "rmsprop":
            v = spec.alpha * state[f"v.{k}"] + (1 - spec.alpha) * g * g
            new_state[f"v.{k}"] = v
            new_params[k] = p - lr * g / (v.sqrt() + spec.eps)
        else:
            if spec.momentum:
                m = spec.momentum * state[f"m.{k}"] + g
                new_state[f"m.{k}"] = m
                g = m
            new_params[k] = p - lr * g
    return new_params, new_state
