"""The requests a client answers: one train instruction of one client, as the ClientApp and the
vectorized engine hand it to `clients.training` (and `clients.scoring`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainRequest:
    """One client's train instruction: the received arrays, its private arrays (None before its
    first round), FedProx's μ when the strategy sent one, and `critic_only` (the instruction's
    `critic-only`: critic steps only, against the received generator held fixed; the reply
    carries the critic alone — DP-FedAvg-GAN's client round)."""

    client: int
    round: int
    global_arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray] | None = None
    prox_mu: float | None = None
    critic_only: bool = False
