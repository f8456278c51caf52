"""What one federated client does, framework-free: local data, local training, local evaluation.

The Flower ClientApp (`clients/app.py`) is a thin adapter over these functions; the server loop
(`server/loop.py`) over `FederatedData` and `simulator.evaluate`. Arrays travel as flat
`prefix.name → ndarray` dicts; *what is federated* is simply which prefixes travel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.centralized import prepare_data
from simulator.data import Dataset
from simulator.faults import SimulatedFault, inject
from simulator.faults import draw as draw_faults
from simulator.gan.diagnostics import lipschitz_metrics
from simulator.gan.train import GAN, GANState
from simulator.metrics import expected_coverage, prdc
from simulator.partition import Partition, partition
from simulator.scenario import Scenario
from simulator.seeding import derive_seed, numpy_rng, torch_generator

FEDERATED_PREFIXES: dict[str, tuple[str, ...]] = {
    "both": ("generator", "critic", "critic_buffer"),
    "generator": ("generator",),
    "critic": ("critic", "critic_buffer"),
}
"""Array groups that travel for each `federation.federate`; the rest stays on the client."""


@dataclass(frozen=True)
class FederatedData:
    """The pooled split and each client's share.

    `train`/`held`: pooled training and held-out sets (the server evaluates on `held`);
    `client_train[c]`/`client_held[c]`: row indices into `train` for client c;
    `group_col`/`groups`: the group column and every group value, in the fixed order of the
    per-group count lists that clients send.
    """

    train: Dataset
    held: Dataset
    partition: Partition
    client_train: list[np.ndarray]
    client_held: list[np.ndarray]
    group_col: str
    groups: list[Any]

    @property
    def n_clients(self) -> int:
        return len(self.client_train)

    def group_codes(self, idx: np.ndarray) -> np.ndarray:
        """Position of each point's group in `groups`, for points `idx` of `train`."""
        values = self.train.groups[self.group_col].to_numpy()[idx]
        lookup = {g: i for i, g in enumerate(self.groups)}
        return np.array([lookup[v] for v in values], dtype=np.int64)


@functools.lru_cache(maxsize=8)
def _federated_data(scenario_json: str) -> FederatedData:
    s = Scenario.model_validate_json(scenario_json)
    train, held = prepare_data(s)
    col = s.partition.group_by or train.groups.columns[0]
    if col not in train.groups.columns:
        raise ValueError(
            f"partition.group_by {col!r} is not a group column; the dataset has "
            f"{list(train.groups.columns)}"
        )
    part = partition(
        train.groups[col],
        s.partition.n_clients,
        derive_seed(s.seed, "partition"),
        s.partition.name,
        s.partition.params,
    )
    rng = numpy_rng(s.seed, "client-holdout")
    client_train, client_held = [], []
    for idx in part.indices:
        idx = rng.permutation(idx)
        n_held = int(round(s.partition.client_holdout * len(idx)))
        if s.partition.client_holdout > 0 and len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        client_held.append(np.sort(idx[:n_held]))
        client_train.append(np.sort(idx[n_held:]))
    groups = sorted(pd.unique(train.groups[col]).tolist(), key=lambda v: (str(type(v)), v))
    return FederatedData(train, held, part, client_train, client_held, col, groups)


def federated_data(s: Scenario) -> FederatedData:
    """The scenario's pooled split and partition (cached per scenario in this process)."""
    return _federated_data(s.to_json())


@functools.lru_cache(maxsize=8)
def _gan(
    scenario_json: str, data_dim: int, image_shape: tuple[int, int, int] | None, prox_mu: float
) -> GAN:
    s = Scenario.model_validate_json(scenario_json)
    return GAN(s.gan.config(prox_mu=prox_mu), data_dim, image_shape)


def make_gan(s: Scenario, data: FederatedData | None = None, prox_mu: float | None = None) -> GAN:
    """The scenario's GAN template (cached); `prox_mu` (FedProx's μ, sent by the strategy)
    overrides `federation.proximal_mu`."""
    d = data or federated_data(s)
    if prox_mu is None:
        prox_mu = s.federation.proximal_mu if s.federation else 0.0
    return _gan(s.to_json(), d.train.X.shape[1], d.train.image_shape, prox_mu)


def initial_state(s: Scenario, gan: GAN) -> GANState:
    """The round-0 state: every client and the server start from the same draw."""
    return gan.init_state(derive_seed(s.seed, "init"))


def split_arrays(
    arrays: dict[str, np.ndarray], federate: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(travelling, private) parts of a state's arrays for `federate`."""
    keep = FEDERATED_PREFIXES[federate]
    out: dict[str, np.ndarray] = {}
    private: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        (out if k.split(".", 1)[0] in keep else private)[k] = v
    return out, private


@dataclass
class LocalEvaluation:
    """A generator against one client's held-out points (as many generated points).

    Per-group lists follow `FederatedData.groups`: hits and point counts, pooled exactly by
    summing over clients.
    """

    recall: float
    coverage: float
    expected_coverage: float
    n_real: int
    recall_hits: list[int]
    coverage_hits: list[int]
    group_n: list[int]


def evaluate_locally(
    s: Scenario, gan: GAN, state: GANState, data: FederatedData, client: int, round_: int
) -> LocalEvaluation:
    """Global generator vs client `client`'s held-out split, k-NN radii from those points."""
    idx = data.client_held[client]
    G = len(data.groups)
    k = s.evaluation.k
    if len(idx) <= k:  # radii need k neighbours: too few held-out points to say anything
        return LocalEvaluation(
            float("nan"),
            float("nan"),
            float("nan"),
            len(idx),
            [0] * G,
            [0] * G,
            np.bincount(data.group_codes(idx), minlength=G).tolist(),
        )
    real = data.train.X[idx]
    fake = gan.sample(
        state, len(idx), torch_generator(s.seed, "client-eval", client, round_)
    ).numpy()
    if not np.isfinite(fake).all():
        raise FloatingPointError(f"client {client}: the generator produced non-finite points")
    res = prdc(real, fake, k=k)
    codes = data.group_codes(idx)
    return LocalEvaluation(
        recall=float(res.recall),
        coverage=float(res.coverage),
        expected_coverage=expected_coverage(len(idx), len(idx), k),
        n_real=len(idx),
        recall_hits=np.bincount(codes, weights=res.recall_per_real, minlength=G)
        .astype(int)
        .tolist(),
        coverage_hits=np.bincount(codes, weights=res.coverage_per_real, minlength=G)
        .astype(int)
        .tolist(),
        group_n=np.bincount(codes, minlength=G).tolist(),
    )


@dataclass
class ClientUpdate:
    """What a client sends back after local training, and what it keeps."""

    arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    metrics: dict[str, float]
    received: LocalEvaluation


def client_train(
    s: Scenario,
    client: int,
    round_: int,
    global_arrays: dict[str, np.ndarray],
    private: dict[str, np.ndarray] | None,
    prox_mu: float | None = None,
) -> ClientUpdate:
    """One round on client `client`: evaluate the received generator on local held-out data,
    run `federation.local_steps` GAN steps from the received networks (private ones from
    `private`), and return the travelling arrays, the private ones and the statistics."""
    assert s.federation is not None
    f = s.federation
    fault = draw_faults(s, round_, client)
    if fault.raise_:  # before any work: a crashing client costs the simulation nothing
        raise SimulatedFault(f"simulated fault: client {client} raised in round {round_}")
    data = federated_data(s)
    gan = make_gan(s, data, prox_mu)
    state = initial_state(s, gan)
    if private:
        state = state.load_arrays(private)
    state = state.load_arrays(global_arrays)
    received = evaluate_locally(s, gan, state, data, client, round_)
    state.step = (round_ - 1) * f.local_steps
    if gan.config.prox_mu:  # FedProx: pull each federated network toward what was received
        travelling = FEDERATED_PREFIXES[f.federate]
        if "generator" in travelling:
            state.g_anchor = {k: v.clone() for k, v in state.g.items()}
        if "critic" in travelling:
            state.d_anchor = {k: v.clone() for k, v in state.d.items()}
    x = torch.as_tensor(data.train.X[data.client_train[client]])
    state, history = gan.train(
        state,
        x,
        f.local_steps,
        torch_generator(s.seed, "train", client, round_),
        total_steps=f.rounds * f.local_steps,
    )
    arrays, private_out = split_arrays(state.arrays(), f.federate)
    # Only the reply is faulty: the client's private state keeps its honest training.
    arrays = inject(s, fault, arrays, global_arrays)
    metrics = {f"train.{k}": float(v) for k, v in pd.DataFrame(history).mean().items()}
    lip = lipschitz_metrics(gan, state, x, torch_generator(s.seed, "lipschitz", client, round_))
    metrics.update({f"train.{k}": v for k, v in lip.items()})
    # A positive quality loss (q-FedAvg raises it to a fractional power): 1 − local coverage.
    cov = received.coverage if np.isfinite(received.coverage) else 0.0
    metrics.update(
        {
            "num-examples": float(len(x)),
            "partition-id": float(client),
            "local.recall": received.recall,
            "local.coverage": received.coverage,
            "local.expected_coverage": received.expected_coverage,
            "train_loss": 1.0 - cov + 1e-3,
            # Shortfall of local coverage below what two same-distribution samples reach
            # (positive; 0 when the received generator covers this client's data fully).
            "local.quality_loss": max(received.expected_coverage - cov, 0.0)
            if np.isfinite(received.expected_coverage)
            else 0.0,
            "bytes.received": float(sum(v.nbytes for v in global_arrays.values())),
            "bytes.sent": float(sum(v.nbytes for v in arrays.values())),
        }
    )
    return ClientUpdate(arrays, private_out, metrics, received)
