"""The requests a client answers: one train instruction of one client, as the ClientApp and the
vectorized engine hand it to `clients.training` (and `clients.scoring`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainRequest:
    """One client's train instruction: the received arrays, its private arrays (None before its
    first round) and FedProx's μ when the strategy sent one."""

    client: int
    round: int
    global_arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray] | None = None
    prox_mu: float | None = None
