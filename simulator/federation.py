"""What one federated client does, framework-free: local data, local training, local evaluation.

The Flower ClientApp (`clients/app.py`) is a thin adapter over these functions; the server loop
(`server/loop.py`) over `FederatedData` and `simulator.evaluate`. Arrays travel as flat
`prefix.name → ndarray` dicts; *what is federated* is simply which prefixes travel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.centralized import prepare_data
from simulator.data import Dataset
from simulator.faults import FaultDraw, SimulatedFault, inject
from simulator.faults import draw as draw_faults
from simulator.gan import batched
from simulator.gan.diagnostics import lipschitz_metrics
from simulator.gan.train import GAN, GANState
from simulator.metrics import expected_coverage, prdc
from simulator.metrics.small_sets import recall_coverage_terms
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
        return self._codes[idx]

    @functools.cached_property
    def _codes(self) -> np.ndarray:
        values = self.train.groups[self.group_col].to_numpy()
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
    return GAN(s.gan.config(prox_mu=prox_mu, ema=client_ema(s)), data_dim, image_shape)


def client_ema(s: Scenario) -> float:
    """Decay of the generator EMA a client keeps. Only a private generator (`federate:
    critic`) has a trajectory of its own to average; a federated generator restarts from the
    aggregate every round, so its EMA is kept on the server, over the aggregated generators
    (`ServerEMA`)."""
    if s.federation is None or s.federation.federate == "critic":
        return s.gan.ema
    return 0.0


def make_gan(s: Scenario, data: FederatedData | None = None, prox_mu: float | None = None) -> GAN:
    """The scenario's GAN template (cached); `prox_mu` (FedProx's μ, sent by the strategy)
    overrides `federation.proximal_mu`."""
    d = data or federated_data(s)
    if prox_mu is None:
        prox_mu = s.federation.proximal_mu if s.federation else 0.0
    return _gan(s.to_json(), d.train.X.shape[1], d.train.image_shape, prox_mu)


def local_steps(s: Scenario, data: FederatedData, client: int) -> int:
    """Generator steps client `client` runs each round: `federation.local_steps`, or with
    `federation.local_epochs`, enough batches for that many passes over its training points."""
    assert s.federation is not None
    f = s.federation
    if f.local_epochs is None:
        return f.local_steps
    return max(1, math.ceil(f.local_epochs * len(data.client_train[client]) / s.gan.batch_size))


class ServerEMA:
    """The EMA of the aggregated generator, kept on the server: what a federated run samples and
    evaluates when `gan.ema` > 0 (and what checkpoints store as `generator_ema.*`).

    A round moves the global generator by K local generator steps, so the per-round decay is
    `gan.ema ** K` — the same time constant, in generator steps, as the centralized twin's
    per-step EMA. K is `federation.local_steps` (with `local_epochs`, the mean over clients).
    A skipped round (no aggregation) leaves it alone. Arrays are keyed `generator.*`.
    """

    def __init__(self, decay_per_round: float, generator: dict[str, np.ndarray]) -> None:
        self.decay = decay_per_round
        self.arrays = {k: np.array(v, dtype=np.float32, copy=True) for k, v in generator.items()}

    @classmethod
    def for_scenario(
        cls, s: Scenario, data: FederatedData, generator: dict[str, np.ndarray]
    ) -> ServerEMA | None:
        """The run's server EMA from the round-0 generator, or None when the server keeps none
        (`gan.ema` = 0, or the generator is private)."""
        if not s.gan.ema or client_ema(s) or not generator:
            return None
        k = float(np.mean([local_steps(s, data, c) for c in range(data.n_clients)]))
        return cls(s.gan.ema**k, generator)

    def update(self, generator: dict[str, np.ndarray]) -> None:
        """One round: ema ← β·ema + (1 − β)·generator (β = the per-round decay)."""
        b = self.decay
        self.arrays = {
            k: (b * self.arrays[k] + (1.0 - b) * generator[k]).astype(np.float32)
            for k in self.arrays
        }

    def as_state_arrays(self) -> dict[str, np.ndarray]:
        """The EMA under the names a `GANState` gives its EMA copy (`generator_ema.*`)."""
        return {"generator_ema." + k.split(".", 1)[1]: v for k, v in self.arrays.items()}


def initial_state(s: Scenario, gan: GAN) -> GANState:
    """The round-0 state: every client and the server start from the same draw.

    Drawn once per GAN template and seed: re-initializing the modules costs more than a small
    client's whole local training. The copy shares the (never mutated) tensors, not the dicts.
    """
    st = _initial_state(gan, derive_seed(s.seed, "init"))
    return replace(st, **{k: dict(getattr(st, k)) for k in batched.STATE_GROUPS})  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def _initial_state(gan: GAN, seed: int) -> GANState:
    return gan.init_state(seed)


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
    n = len(data.client_held[client])
    fake = None
    if n > s.evaluation.k:
        fake = gan.sample(state, n, torch_generator(s.seed, "client-eval", client, round_)).numpy()
    return local_evaluation(s, data, client, fake)


def local_evaluation(
    s: Scenario, data: FederatedData, client: int, fake: np.ndarray | None
) -> LocalEvaluation:
    """`fake` [n_held, d] (None when the client holds ≤ k points) against the client's held-out
    split: PRDC totals and per-group hit counts."""
    idx = data.client_held[client]
    G = len(data.groups)
    k = s.evaluation.k
    if fake is None:  # radii need k neighbours: too few held-out points to say anything
        return LocalEvaluation(
            float("nan"),
            float("nan"),
            float("nan"),
            len(idx),
            [0] * G,
            [0] * G,
            np.bincount(data.group_codes(idx), minlength=G).tolist(),
        )
    _check_finite(fake, client)
    res = prdc(data.train.X[idx], fake, k=k)
    return _from_terms(s, data, client, res.recall_per_real, res.coverage_per_real)


def _check_finite(fake: np.ndarray, client: int) -> None:
    if not np.isfinite(fake).all():
        raise FloatingPointError(f"client {client}: the generator produced non-finite points")


def _from_terms(
    s: Scenario,
    data: FederatedData,
    client: int,
    recall_per_real: np.ndarray,
    coverage_per_real: np.ndarray,
) -> LocalEvaluation:
    """A client's evaluation from PRDC's per-real recall and coverage terms [n_held]."""
    idx = data.client_held[client]
    G = len(data.groups)
    codes = data.group_codes(idx)
    return LocalEvaluation(
        recall=float(recall_per_real.mean()),
        coverage=float(coverage_per_real.mean()),
        expected_coverage=expected_coverage(len(idx), len(idx), s.evaluation.k),
        n_real=len(idx),
        recall_hits=np.bincount(codes, weights=recall_per_real, minlength=G).astype(int).tolist(),
        coverage_hits=np.bincount(codes, weights=coverage_per_real, minlength=G)
        .astype(int)
        .tolist(),
        group_n=np.bincount(codes, minlength=G).tolist(),
    )


def _local_evaluations(
    s: Scenario,
    gan: GAN,
    data: FederatedData,
    generator: dict[str, torch.Tensor],
    requests: Sequence[TrainRequest],
    device: torch.device | str,
    dense: bool | None = None,
) -> list[LocalEvaluation | Exception]:
    """`evaluate_locally` for many clients: every client's samples from one vmapped generator
    pass on `device` (each from its own noise stream), then PRDC per client — set by set with
    k-d trees, or (`dense`, default on a GPU) all sets in one dense batch. `generator`: the
    clients' stacked generator parameters [C, ...] (the EMA ones if kept, as `GAN.sample`)."""
    k, L = s.evaluation.k, gan.config.latent_dim
    sizes = [len(data.client_held[r.client]) for r in requests]
    todo = [i for i, n in enumerate(sizes) if n > k]
    fakes: dict[int, np.ndarray] = {}
    if todo:
        z = [
            torch.randn(
                sizes[i],
                L,
                generator=torch_generator(
                    s.seed, "client-eval", requests[i].client, requests[i].round
                ),
            )
            for i in todo
        ]
        rows = torch.tensor(todo, device=next(iter(generator.values())).device)
        g = {key: v.index_select(0, rows).to(device) for key, v in generator.items()}
        with torch.no_grad():
            out = torch.func.vmap(gan.G)(g, batched.pad_data(z, device)).cpu().numpy()
        fakes = {i: out[j, : sizes[i]] for j, i in enumerate(todo)}
    results: list[LocalEvaluation | Exception] = []
    if not (torch.device(device).type != "cpu" if dense is None else dense):
        # On a CPU a k-d tree per small set beats one dense batch.
        for i, r in enumerate(requests):
            try:
                results.append(local_evaluation(s, data, r.client, fakes.get(i)))
            except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
                results.append(exc)
        return results
    # On a GPU: every client's set decided in one dense batch (identical per-point answers).
    ok: list[int] = []
    slots: dict[int, LocalEvaluation | Exception] = {}
    for i, r in enumerate(requests):
        try:
            if i in fakes:
                _check_finite(fakes[i], r.client)
                ok.append(i)
            else:
                slots[i] = local_evaluation(s, data, r.client, None)
        except Exception as exc:  # noqa: BLE001 - this client's failure, reported in its slot
            slots[i] = exc
    reals = [data.train.X[data.client_held[requests[i].client]] for i in ok]
    terms = recall_coverage_terms(reals, [fakes[i] for i in ok], k, device)
    for i, (rec, cov) in zip(ok, terms, strict=True):
        slots[i] = _from_terms(s, data, requests[i].client, rec, cov)
    return [slots[i] for i in range(len(requests))]


@dataclass
class ClientUpdate:
    """What a client sends back after local training, and what it keeps."""

    arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    metrics: dict[str, float]
    received: LocalEvaluation


@dataclass(frozen=True)
class TrainRequest:
    """One client's train instruction: the received arrays, its private arrays (None before its
    first round) and FedProx's μ when the strategy sent one."""

    client: int
    round: int
    global_arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray] | None = None
    prox_mu: float | None = None


@dataclass
class _Started:
    """A client's round up to its local training: its fault draw, received evaluation, data."""

    request: TrainRequest
    fault: FaultDraw
    received: LocalEvaluation
    x: torch.Tensor


def _start(
    s: Scenario, gan: GAN, data: FederatedData, r: TrainRequest
) -> tuple[_Started, GANState]:
    """A client's round before local training (its verdict on what it received) and state."""
    assert s.federation is not None
    f = s.federation
    fault = draw_faults(s, r.round, r.client)
    if fault.raise_:  # before any work: a crashing client costs the simulation nothing
        raise SimulatedFault(f"simulated fault: client {r.client} raised in round {r.round}")
    state = initial_state(s, gan)
    if r.private:
        state = state.load_arrays(r.private)
    state = state.load_arrays(r.global_arrays)
    received = evaluate_locally(s, gan, state, data, r.client, r.round)
    state.step = (r.round - 1) * local_steps(s, data, r.client)
    _anchor(gan, state, f.federate)
    x = torch.as_tensor(data.train.X[data.client_train[r.client]])
    return _Started(r, fault, received, x), state


def _anchor(gan: GAN, state: GANState, federate: str) -> None:
    """FedProx: anchor each federated network at what was received (a single or stacked state),
    so the proximal term pulls local training toward it."""
    if not gan.config.prox_mu:
        return
    travelling = FEDERATED_PREFIXES[federate]
    if "generator" in travelling:
        state.g_anchor = {k: v.clone() for k, v in state.g.items()}
    if "critic" in travelling:
        state.d_anchor = {k: v.clone() for k, v in state.d.items()}


def _finish(
    s: Scenario,
    c: _Started,
    state_arrays: dict[str, np.ndarray],
    train: dict[str, float],
    lip: dict[str, float],
) -> ClientUpdate:
    """The reply of a client whose local training ended in `state_arrays`
    (`GANState.arrays()`), with its statistics."""
    assert s.federation is not None
    r, received = c.request, c.received
    arrays, private_out = split_arrays(state_arrays, s.federation.federate)
    # Only the reply is faulty: the client's private state keeps its honest training.
    arrays = inject(s, c.fault, arrays, r.global_arrays)
    metrics = {f"train.{k}": v for k, v in train.items()}
    metrics.update({f"train.lipschitz.{k}": v for k, v in lip.items()})
    # A positive quality loss (q-FedAvg raises it to a fractional power): 1 − local coverage.
    cov = received.coverage if np.isfinite(received.coverage) else 0.0
    metrics.update(
        {
            "num-examples": float(len(c.x)),
            "partition-id": float(r.client),
            "local.recall": received.recall,
            "local.coverage": received.coverage,
            "local.expected_coverage": received.expected_coverage,
            "train_loss": 1.0 - cov + 1e-3,
            # Shortfall of local coverage below what two same-distribution samples reach
            # (positive; 0 when the received generator covers this client's data fully).
            "local.quality_loss": max(received.expected_coverage - cov, 0.0)
            if np.isfinite(received.expected_coverage)
            else 0.0,
            "bytes.received": float(sum(v.nbytes for v in r.global_arrays.values())),
            "bytes.sent": float(sum(v.nbytes for v in arrays.values())),
        }
    )
    return ClientUpdate(arrays, private_out, metrics, received)


def client_train(
    s: Scenario,
    client: int,
    round_: int,
    global_arrays: dict[str, np.ndarray],
    private: dict[str, np.ndarray] | None,
    prox_mu: float | None = None,
) -> ClientUpdate:
    """One round on client `client`: evaluate the received generator on local held-out data,
    run its local GAN steps (`local_steps`) from the received networks (private ones from
    `private`), and return the travelling arrays, the private ones and the statistics."""
    assert s.federation is not None
    f = s.federation
    data = federated_data(s)
    gan = make_gan(s, data, prox_mu)
    c, state = _start(s, gan, data, TrainRequest(client, round_, global_arrays, private, prox_mu))
    n_steps = local_steps(s, data, client)
    state, history = gan.train(
        state,
        c.x,
        n_steps,
        torch_generator(s.seed, "train", client, round_),
        total_steps=f.rounds * n_steps,
    )
    means = {str(k): float(v) for k, v in pd.DataFrame(history).mean().items()}
    lip = lipschitz_metrics(gan, state, c.x, torch_generator(s.seed, "lipschitz", client, round_))
    return _finish(s, c, state.arrays(), means, {k.split(".", 1)[1]: v for k, v in lip.items()})


def clients_train(
    s: Scenario, requests: Sequence[TrainRequest], device: torch.device | str = "cpu"
) -> list[ClientUpdate | Exception]:
    """`client_train` for many clients at once: their received-generator samples, local
    training and Lipschitz estimates run in lockstep as vmapped computations on `device`
    (`simulator.gan.batched`), their state stacked straight from the arrays (no per-client
    model objects); fault draws, PRDC on each client's held-out points and the replies are per
    client. Same random streams as `client_train`, so the results agree to float rounding. A
    client that fails gives its exception in its slot; the others go on."""
    assert s.federation is not None
    f = s.federation
    data = federated_data(s)
    out: list[ClientUpdate | Exception | None] = [None] * len(requests)
    by_mu: dict[float | None, list[int]] = {}
    for i, r in enumerate(requests):
        by_mu.setdefault(r.prox_mu, []).append(i)
    size = s.engine.max_batch or len(requests)
    batches = [  # one GAN template per distinct μ; at most `engine.max_batch` clients a batch
        (mu, slots[b : b + size]) for mu, slots in by_mu.items() for b in range(0, len(slots), size)
    ]
    for mu, slots in batches:
        gan = make_gan(s, data, mu)
        base = initial_state(s, gan)
        known = base.array_keys()
        faults: dict[int, FaultDraw] = {}
        for i in slots:
            r = requests[i]
            fault = draw_faults(s, r.round, r.client)
            unknown = sorted((set(r.global_arrays) | set(r.private or {})) - known)
            if fault.raise_:  # as `client_train`: before any work
                out[i] = SimulatedFault(
                    f"simulated fault: client {r.client} raised in round {r.round}"
                )
            elif unknown:
                out[i] = KeyError(f"unexpected array {unknown[0]!r}")
            else:
                faults[i] = fault
        live = list(faults)
        if not live:
            continue
        sources = [[requests[i].private or {}, requests[i].global_arrays] for i in live]
        state = batched.stack_arrays(base, sources, device)
        received = _local_evaluations(
            s, gan, data, state.g_ema or state.g, [requests[i] for i in live], device
        )
        keep: list[int] = []
        evals: list[LocalEvaluation] = []
        for j, ev in enumerate(received):
            if isinstance(ev, Exception):
                out[live[j]] = ev
            else:
                keep.append(j)
                evals.append(ev)
        if not keep:
            continue
        if len(keep) < len(live):
            state = _select(state, torch.tensor(keep, device=device))
        live = [live[j] for j in keep]
        reqs = [requests[i] for i in live]
        steps = [local_steps(s, data, r.client) for r in reqs]
        _anchor(gan, state, f.federate)
        xs = [torch.as_tensor(data.train.X[data.client_train[r.client]]) for r in reqs]
        sizes = [len(x) for x in xs]
        x = batched.pad_data(xs, device)
        state, means = batched.train_batched(
            gan,
            state,
            x,
            sizes,
            [torch_generator(s.seed, "train", r.client, r.round) for r in reqs],
            steps,
            total_steps=[f.rounds * n for n in steps],
            start_steps=[(r.round - 1) * n for r, n in zip(reqs, steps, strict=True)],
        )
        lip = batched.lipschitz_batched(
            gan,
            state,
            x,
            sizes,
            [torch_generator(s.seed, "lipschitz", r.client, r.round) for r in reqs],
        )
        arrays = batched.numpy_arrays(state)
        means_np = {k: v.detach().cpu().numpy() for k, v in means.items()}
        lip_np = {k: v.detach().cpu().numpy() for k, v in lip.items()}
        for j, i in enumerate(live):
            started = _Started(requests[i], faults[i], evals[j], xs[j])
            out[i] = _finish(
                s,
                started,
                {k: v[j] for k, v in arrays.items()},
                {k: float(v[j]) for k, v in means_np.items()},
                {k: float(v[j]) for k, v in lip_np.items()},
            )
    return [o for o in out if o is not None]


def _select(state: GANState, rows: torch.Tensor) -> GANState:
    """The clients `rows` of a stacked state."""
    return replace(
        state,
        **{  # type: ignore[arg-type]
            name: {k: v.index_select(0, rows) for k, v in getattr(state, name).items()}
            for name in batched.STATE_GROUPS
        },
    )
