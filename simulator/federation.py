"""What one federated client does, framework-free: local data, local training, local evaluation.

The Flower ClientApp (`clients/app.py`) is a thin adapter over these functions; the server loop
(`server/loop.py`) over `FederatedData` and `simulator.evaluate`. Arrays travel as flat
`prefix.name → ndarray` dicts (prefixes in `simulator.messages`); *what is federated* is simply
which prefixes travel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.centralized import prepare_data
from simulator.data import Dataset
from simulator.data.base import Modes
from simulator.faults import FaultDraw, SimulatedFault, inject
from simulator.faults import draw as draw_faults
from simulator.gan import batched
from simulator.gan.diagnostics import lipschitz_metrics
from simulator.gan.train import GAN, GANState
from simulator.messages import (
    CRITIC,
    FEDERATED,
    GENERATOR,
    ClientCoverage,
    LocalEvaluation,
    MetricValue,
    TrainReply,
    as_ema,
    generator_travels,
    split_arrays,
)
from simulator.metrics import expected_coverage, prdc
from simulator.metrics.forgetting import coverage_against
from simulator.metrics.groups import group_labels, group_sort_key, grouping_name
from simulator.metrics.small_sets import recall_coverage_terms
from simulator.partition import Partition, partition
from simulator.scenario import Scenario
from simulator.seeding import derive_seed, numpy_rng, torch_generator


@dataclass(frozen=True)
class CountGrouping:
    """An evaluation grouping besides the partition column whose per-group counts travel:
    its `group_by` name ("region", "sex|region"), every group in list order, and the
    position of each training point's group in that list (`codes` [n_train])."""

    name: str
    groups: list[Any]
    codes: np.ndarray


@dataclass(frozen=True)
class FederatedData:
    """The pooled split and each client's share.

    `train`/`held`: pooled training and held-out sets (the server evaluates on `held`);
    `client_train[c]`/`client_held[c]`: row indices into `train` for client c;
    `group_col`/`groups`: the group column and every group value, in the fixed order of the
    per-group count lists that clients send; `others`: every other grouping of
    `evaluation.group_by` (columns, intersections), whose counts travel in the `local.other_*`
    lists, concatenated in this order (none when the partition column is the only grouping).
    """

    train: Dataset
    held: Dataset
    partition: Partition
    client_train: list[np.ndarray]
    client_held: list[np.ndarray]
    group_col: str
    groups: list[Any]
    others: tuple[CountGrouping, ...] = field(default=())

    @property
    def n_clients(self) -> int:
        return len(self.client_train)

    def counts(
        self, idx: np.ndarray, weights: np.ndarray | None = None
    ) -> tuple[list[int], list[int]]:
        """Per-group sums of `weights` [len(idx)] (default: 1, i.e. points) over points `idx`
        of `train`: (over `groups`, over every grouping of `others` concatenated)."""

        def count(codes: np.ndarray, n: int) -> list[int]:
            return np.bincount(codes, weights=weights, minlength=n).astype(int).tolist()

        first = count(self.group_codes(idx), len(self.groups))
        rest = [v for o in self.others for v in count(o.codes[idx], len(o.groups))]
        return first, rest

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
    groups = sorted(pd.unique(train.groups[col]).tolist(), key=group_sort_key)
    others = []
    for grouping in s.evaluation.group_by or [str(c) for c in train.groups.columns]:
        name = grouping_name(grouping)
        if name == col:
            continue
        labels = group_labels(train.groups, grouping).to_numpy()
        values = sorted(pd.unique(labels).tolist(), key=group_sort_key)
        lookup = {g: i for i, g in enumerate(values)}
        codes = np.array([lookup[v] for v in labels], dtype=np.int64)
        others.append(CountGrouping(name, values, codes))
    return FederatedData(train, held, part, client_train, client_held, col, groups, tuple(others))


def mixture_holdout(data: FederatedData, pi: np.ndarray, seed: int) -> tuple[Dataset, np.ndarray]:
    """The π-mixture Σ_k π_k p_k of the clients' distributions as a held-out set, and its group
    weights m [G] (over `data.groups`).

    Clients are split by group, so within a group every client's points come from the same
    distribution and the mixture is a reweighting of groups: m_g = Σ_k π_k s_kg, s_kg the share
    of client k's training points in group g. The set is the largest subsample of the pooled
    held-out set with those group proportions (the first points of one fixed, seeded
    permutation per group, so mixtures of nearby π share their points); a mixture dataset's
    mode weights become m (when its groups are its modes), so mode mass ratios are measured
    against the mixture. pi [N]: weights over all clients (normalised here).
    """
    G = len(data.groups)
    w = np.asarray(pi, dtype=np.float64)
    w = w / w.sum()
    shares = np.stack(
        [
            np.bincount(data.group_codes(ix), minlength=G) / max(len(ix), 1)
            for ix in data.client_train
        ]
    )
    mass = w @ shares
    mass = mass / mass.sum()
    held_codes = _held_codes(data)
    counts = np.bincount(held_codes, minlength=G)
    size = min(len(held_codes), int(min(counts[g] / mass[g] for g in range(G) if mass[g] > 0)))
    rng = numpy_rng(seed, "mixture")
    take = []
    for g in range(G):
        members = rng.permutation(np.flatnonzero(held_codes == g))
        take.append(members[: min(int(round(size * mass[g])), len(members))])
    out = data.held.subset(np.sort(np.concatenate(take)))
    modes = out.modes
    first = data.held.groups.columns[0]
    if modes is not None and data.group_col == first and data.groups == list(range(modes.n_modes)):
        out = replace(out, modes=Modes(modes.means, modes.sigma, mass))
    return out, mass


def _held_codes(data: FederatedData) -> np.ndarray:
    """Position in `data.groups` of each pooled held-out point's group."""
    lookup = {g: i for i, g in enumerate(data.groups)}
    return np.array([lookup[v] for v in data.held.groups[data.group_col]], dtype=np.int64)


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
    if s.federation is None or not generator_travels(s.federation.federate):
        return s.gan.ema
    return 0.0


def data_problems(s: Scenario) -> list[str]:
    """The scenario's data at full size — the dataset (digits weights that need more images
    than exist, say), the held-out split and, federated, the partition — as 'path: message'
    problems (empty: fine). Built once: the run reuses the cached result."""
    from simulator.data import DataError
    from simulator.partition import PartitionError

    try:
        federated_data(s) if s.federated else prepare_data(s)
    except PartitionError as exc:
        return [f"partition: {exc}"]
    except (DataError, ValueError) as exc:
        return [f"data: {exc}"]
    return []


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
        return as_ema(self.arrays)


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


def evaluate_locally(
    s: Scenario, gan: GAN, state: GANState, data: FederatedData, client: int, round_: int
) -> LocalEvaluation:
    """Global generator vs client `client`'s held-out split, k-NN radii from those points."""
    n = len(data.client_held[client])
    fake = None
    if n > s.evaluation.k:
        fake = gan.sample(state, n, torch_generator(s.seed, "client-eval", client, round_)).numpy()
    return local_evaluation(s, data, client, fake)


@dataclass(frozen=True)
class PooledReference:
    """The pooled held-out set as the clients' coverage scores use it: its points in the space
    PRDC runs in (`held` [N, d]) and the map into that space (None: data space)."""

    held: np.ndarray
    features: Callable[[np.ndarray], np.ndarray] | None

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self.features(x) if self.features is not None else x


@functools.lru_cache(maxsize=8)
def _pooled_reference(scenario_json: str) -> PooledReference:
    from simulator.evaluate import image_labeller

    data = _federated_data(scenario_json)
    features, _ = image_labeller(data.held)
    held = features(data.held.X) if features is not None else data.held.X
    return PooledReference(np.asarray(held, dtype=np.float64), features)


def served_coverage(
    s: Scenario, gan: GAN, state: GANState, data: FederatedData, client: int, round_: int
) -> ClientCoverage:
    """The evaluate message's answer: `client_coverage` of the samples the global evaluation
    scores at `round_` (`simulator.evaluate.generated`: `state`'s generator, same count, same
    noise stream)."""
    from simulator.evaluate import generated

    fake = generated(s, gan, state, round_)
    _check_finite(fake, client)
    return client_coverage(s, data, client, fake)


def client_coverage(
    s: Scenario, data: FederatedData, client: int, fake: np.ndarray
) -> ClientCoverage:
    """`fake` [M, d] against client `client`'s held-out points, each with its k-NN radius
    among the pooled held-out set (`simulator.metrics.forgetting.coverage_against`), in the
    space the global evaluation uses; per-group counts."""
    idx = data.client_held[client]
    ref = _pooled_reference(s.to_json())
    covered = coverage_against(
        ref.held, ref.embed(data.train.X[idx]), ref.embed(fake), s.evaluation.k
    )
    hits, other_hits = data.counts(idx, covered.astype(np.float64))
    group_n, other_n = data.counts(idx)
    return ClientCoverage(
        coverage=float(covered.mean()) if len(idx) else float("nan"),
        n_real=len(idx),
        coverage_hits=hits,
        group_n=group_n,
        other_coverage_hits=other_hits,
        other_group_n=other_n,
    )


def local_evaluation(
    s: Scenario, data: FederatedData, client: int, fake: np.ndarray | None
) -> LocalEvaluation:
    """`fake` [n_held, d] (None when the client holds ≤ k points) against the client's held-out
    split: PRDC totals and per-group hit counts."""
    idx = data.client_held[client]
    k = s.evaluation.k
    if fake is None:  # radii need k neighbours: too few held-out points to say anything
        n, other_n = data.counts(idx)
        return LocalEvaluation(
            float("nan"),
            float("nan"),
            float("nan"),
            len(idx),
            [0] * len(n),
            [0] * len(n),
            n,
            [0] * len(other_n),
            [0] * len(other_n),
            other_n,
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
    recall_hits, other_recall_hits = data.counts(idx, recall_per_real)
    coverage_hits, other_coverage_hits = data.counts(idx, coverage_per_real)
    group_n, other_group_n = data.counts(idx)
    return LocalEvaluation(
        recall=float(recall_per_real.mean()),
        coverage=float(coverage_per_real.mean()),
        expected_coverage=expected_coverage(len(idx), len(idx), s.evaluation.k),
        n_real=len(idx),
        recall_hits=recall_hits,
        coverage_hits=coverage_hits,
        group_n=group_n,
        other_recall_hits=other_recall_hits,
        other_coverage_hits=other_coverage_hits,
        other_group_n=other_group_n,
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
    """What a client sends back after local training (`arrays`, `reply`), and what it keeps."""

    arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    reply: TrainReply

    @property
    def metrics(self) -> dict[str, MetricValue]:
        """The reply's metrics, as the ClientApp sends them (without its wall time)."""
        return self.reply.metrics()

    @property
    def received(self) -> LocalEvaluation:
        """The received generator on the client's held-out split."""
        return self.reply.received


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


def _anchor(gan: GAN, state: GANState, federate: str) -> None:
    """FedProx: anchor each federated network at what was received (a single or stacked state),
    so the proximal term pulls local training toward it."""
    if not gan.config.prox_mu:
        return
    travelling = FEDERATED[federate]
    if GENERATOR in travelling:
        state.g_anchor = {k: v.clone() for k, v in state.g.items()}
    if CRITIC in travelling:
        state.d_anchor = {k: v.clone() for k, v in state.d.items()}


def _finish(
    s: Scenario,
    c: _Started,
    state_arrays: dict[str, np.ndarray],
    train: dict[str, float],
    lip: dict[str, float],
) -> ClientUpdate:
    """The reply of a client whose local training ended in `state_arrays`
    (`GANState.arrays()`), with its statistics (`lip`: Lipschitz estimates)."""
    assert s.federation is not None
    r = c.request
    arrays, private_out = split_arrays(state_arrays, s.federation.federate)
    # Only the reply is faulty: the client's private state keeps its honest training.
    arrays = inject(s, c.fault, arrays, r.global_arrays)
    reply = TrainReply(
        partition_id=r.client,
        num_examples=len(c.x),
        train={**train, **{f"lipschitz.{k}": v for k, v in lip.items()}},
        received=c.received,
        bytes_received=float(sum(v.nbytes for v in r.global_arrays.values())),
        bytes_sent=float(sum(v.nbytes for v in arrays.values())),
    )
    return ClientUpdate(arrays, private_out, reply)


def client_train(
    s: Scenario,
    client: int,
    round_: int,
    global_arrays: dict[str, np.ndarray],
    private: dict[str, np.ndarray] | None,
    prox_mu: float | None = None,
) -> ClientUpdate:
    """One round on client `client` (`clients_train` of one client, unbatched): raises what
    the client's training raised."""
    request = TrainRequest(client, round_, global_arrays, private, prox_mu)
    (out,) = clients_train(s, [request], batched=False)
    if isinstance(out, Exception):
        raise out
    return out


def clients_train(
    s: Scenario,
    requests: Sequence[TrainRequest],
    device: torch.device | str = "cpu",
    batched: bool = True,
) -> list[ClientUpdate | Exception]:
    """One round on each requested client: evaluate the received generator on its held-out
    data, run its local GAN steps (`local_steps`) from the received networks (private ones from
    the request) and return the travelling arrays, the private ones and the statistics.

    `batched`: the clients' samples, local training and Lipschitz estimates run in lockstep as
    vmapped computations on `device` (`simulator.gan.batched`), their state stacked straight
    from the arrays; otherwise one client after another through the plain `GAN.train` (what a
    single ClientApp does: vmap's overhead buys nothing for one client). Both paths share the
    fault draws, the checks, the random streams and the replies, so they agree to float
    rounding. A client that fails gives its exception in its slot; the others go on.
    """
    data = federated_data(s)
    out: list[ClientUpdate | Exception | None] = [None] * len(requests)
    for mu, slots in _batches(s, requests, batched):
        gan = make_gan(s, data, mu)
        live = _admit(s, gan, requests, slots, out)
        if not live:
            continue
        if batched:
            _train_stacked(s, gan, data, requests, live, out, device)
            continue
        for i, fault in live.items():
            try:
                out[i] = _train_one(s, gan, data, requests[i], fault)
            except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
                out[i] = exc
    return [o for o in out if o is not None]


def _batches(
    s: Scenario, requests: Sequence[TrainRequest], batched: bool
) -> list[tuple[float | None, list[int]]]:
    """(μ, request slots) groups: one GAN template per distinct μ and at most
    `engine.max_batch` clients a batch; unbatched, one request a group, in order."""
    if not batched:
        return [(r.prox_mu, [i]) for i, r in enumerate(requests)]
    by_mu: dict[float | None, list[int]] = {}
    for i, r in enumerate(requests):
        by_mu.setdefault(r.prox_mu, []).append(i)
    size = s.engine.max_batch or len(requests)
    return [
        (mu, slots[b : b + size]) for mu, slots in by_mu.items() for b in range(0, len(slots), size)
    ]


def _admit(
    s: Scenario,
    gan: GAN,
    requests: Sequence[TrainRequest],
    slots: list[int],
    out: list[ClientUpdate | Exception | None],
) -> dict[int, FaultDraw]:
    """The slots that go on to train, with their fault draws; the others get their exception
    in `out` (a simulated `raise`, or arrays this GAN does not have)."""
    known = initial_state(s, gan).array_keys()
    live: dict[int, FaultDraw] = {}
    for i in slots:
        r = requests[i]
        fault = draw_faults(s, r.round, r.client)
        unknown = sorted((set(r.global_arrays) | set(r.private or {})) - known)
        if fault.raise_:  # before any work: a crashing client costs the simulation nothing
            out[i] = SimulatedFault(f"simulated fault: client {r.client} raised in round {r.round}")
        elif unknown:
            out[i] = KeyError(f"unexpected array {unknown[0]!r}")
        else:
            live[i] = fault
    return live


def _train_one(
    s: Scenario, gan: GAN, data: FederatedData, r: TrainRequest, fault: FaultDraw
) -> ClientUpdate:
    """One client's round through the plain (unbatched) GAN step."""
    assert s.federation is not None
    state = initial_state(s, gan)
    if r.private:
        state = state.load_arrays(r.private)
    state = state.load_arrays(r.global_arrays)
    received = evaluate_locally(s, gan, state, data, r.client, r.round)
    n_steps = local_steps(s, data, r.client)
    state.step = (r.round - 1) * n_steps
    _anchor(gan, state, s.federation.federate)
    x = torch.as_tensor(data.train.X[data.client_train[r.client]])
    state, history = gan.train(
        state,
        x,
        n_steps,
        torch_generator(s.seed, "train", r.client, r.round),
        total_steps=s.federation.rounds * n_steps,
    )
    means = {str(k): float(v) for k, v in pd.DataFrame(history).mean().items()}
    lip = lipschitz_metrics(gan, state, x, torch_generator(s.seed, "lipschitz", r.client, r.round))
    lip = {k.split(".", 1)[1]: v for k, v in lip.items()}
    return _finish(s, _Started(r, fault, received, x), state.arrays(), means, lip)


def _train_stacked(
    s: Scenario,
    gan: GAN,
    data: FederatedData,
    requests: Sequence[TrainRequest],
    faults: dict[int, FaultDraw],
    out: list[ClientUpdate | Exception | None],
    device: torch.device | str,
) -> None:
    """The `faults` slots' round as one batched computation; results into `out`."""
    assert s.federation is not None
    f = s.federation
    live = list(faults)
    base = initial_state(s, gan)
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
        return
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


def _select(state: GANState, rows: torch.Tensor) -> GANState:
    """The clients `rows` of a stacked state."""
    return replace(
        state,
        **{  # type: ignore[arg-type]
            name: {k: v.index_select(0, rows) for k, v in getattr(state, name).items()}
            for name in batched.STATE_GROUPS
        },
    )
