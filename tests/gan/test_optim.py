"""Functional optimizers against torch.optim (the reference implementation)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fedgan.simulator.gan import optim
from fedgan.simulator.gan.optim import OptimizerSpec


def _reference(spec: OptimizerSpec) -> type[torch.optim.Optimizer]:
    return {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[
        spec.name
    ]


def _kwargs(spec: OptimizerSpec) -> dict[str, Any]:
    if spec.name == "adam":
        return {"betas": spec.betas, "eps": spec.eps, "weight_decay": spec.weight_decay}
    if spec.name == "rmsprop":
        return {"alpha": spec.alpha, "eps": spec.eps, "weight_decay": spec.weight_decay}
    return {"momentum": spec.momentum, "weight_decay": spec.weight_decay}


SPECS = [
    OptimizerSpec(name="adam", lr=1e-2),
    OptimizerSpec(name="adam", lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1),
    OptimizerSpec(name="rmsprop", lr=1e-2),
    OptimizerSpec(name="rmsprop", lr=5e-3, alpha=0.9, weight_decay=0.05),
    OptimizerSpec(name="sgd", lr=0.1),
    OptimizerSpec(name="sgd", lr=0.05, momentum=0.9),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.lr}")
def test_matches_torch_optim(spec: OptimizerSpec) -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
    ref = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    ref_opt = _reference(spec)(list(ref.values()), lr=spec.lr, **_kwargs(spec))
    state = optim.init_state(spec, params)
    for step in range(6):
        grads = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
        lr_scale = 1.0 if step < 3 else 0.5  # a schedule: the caller passes the scaled rate
        for g in ref_opt.param_groups:
            g["lr"] = spec.lr * lr_scale
        for k, p in ref.items():
            p.grad = grads[k].clone()
        ref_opt.step()
        params, state = optim.update(spec, params, grads, state, spec.lr * lr_scale)
        for k in params:
            torch.testing.assert_close(params[k], ref[k].detach(), rtol=1e-5, atol=1e-6)
    assert float(state["step"]) == 6


def test_update_is_pure() -> None:
    spec = OptimizerSpec(name="adam", lr=0.1)
    params = {"w": torch.ones(2)}
    state = optim.init_state(spec, params)
    snapshot = {k: v.clone() for k, v in state.items()}
    optim.update(spec, params, {"w": torch.ones(2)}, state, 0.1)
    assert torch.equal(params["w"], torch.ones(2))
    for k, v in state.items():
        assert torch.equal(v, snapshot[k])


def test_state_slots() -> None:
    p = {"w": torch.zeros(2)}
    assert set(optim.init_state(OptimizerSpec(name="adam"), p)) == {"step", "m.w", "v.w"}
    assert set(optim.init_state(OptimizerSpec(name="rmsprop"), p)) == {"step", "v.w"}
    assert set(optim.init_state(OptimizerSpec(name="sgd"), p)) == {"step"}
    assert set(optim.init_state(OptimizerSpec(name="sgd", momentum=0.5), p)) == {"step", "m.w"}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (OptimizerSpec(name="lbfgs"), "unknown optimizer"),
        (OptimizerSpec(lr=0.0), "lr must be > 0"),
        (OptimizerSpec(betas=(0.5, 1.0)), "betas"),
        (OptimizerSpec(alpha=1.0), "alpha"),
    ],
)
def test_validate(spec: OptimizerSpec, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spec.validate()
