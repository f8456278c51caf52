"""Shared fixtures: tiny scenarios that train in well under a second per round."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from simulator.scenario import Scenario, validate


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # Tiny layers gain nothing from threads; on a loaded 2-core machine extra threads spin.
    torch.set_num_threads(1)


def tiny_raw(**sections: Any) -> dict[str, Any]:
    """A federated 8-ring scenario small enough for unit tests (sections override)."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "dataset": "ring",
            "n_samples": 800,
            "params": {"minority_modes": [0], "minority_weight": 0.05},
        },
        "gan": {
            "generator": {"widths": [16, 16]},
            "critic": {"widths": [16, 16]},
            "batch_size": 32,
        },
        "partition": {"name": "dirichlet", "params": {"alpha": 1.0}, "n_clients": 4},
        "federation": {"rounds": 2, "local_steps": 3},
        "evaluation": {"every": 1, "n_samples": 200, "min_group_size": 5},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def tiny(**sections: Any) -> Scenario:
    return validate(tiny_raw(**sections))
