"""`fedavg` (FedGAN): clients take local G and D steps from the global networks; a Flower
strategy (`strategy.*`, any built-in, ours or a plug-in) aggregates what travels.

One exchange per round: the strategy's `configure_train` (shown only the round's clients,
through `SampledGrid`) builds the instructions, its `aggregate_train` combines the replies.
The server also keeps the EMA of the aggregated generator when `gan.ema` > 0 (`ServerEMA`).
State for checkpoints: the global arrays, the EMA, and every data attribute of the strategy
(FedAdam's moments, the fair strategies' weights, `critic_swap`'s critics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from fedgan.server.protocols.base import Expect, Protocol, ProtocolState, Reply, Round, Setup
from fedgan.server.strategies import STRATEGIES, build_strategy, check_strategy
from fedgan.server.strategies.critic_swap import CriticSwapFedAvg
from fedgan.server.strategies.per_network import PerNetwork
from fedgan.server.strategies.strategy_state import (
    load_strategy_state,
    rebind_nodes,
    strategy_state,
)
from fedgan.simulator.cohorts import expected_cohort
from fedgan.simulator.messages import (
    GENERATOR,
    NUM_EXAMPLES,
    TRAIN_REPLY_KEYS,
    as_ema,
    select,
    split_arrays,
)
from fedgan.simulator.prepare import FederatedData, client_ema, local_steps
from fedgan.simulator.privacy.aggregate import Adaptive, DPAggregator, update_noise_multiplier
from fedgan.simulator.privacy.budget import noise_multiplier
from fedgan.simulator.scenario import Scenario
from fedgan.wire.records import from_record, to_record
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi


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


class FedAvgProtocol(Protocol):
    """Local GAN steps on the clients, a Flower strategy's aggregation on the server."""

    uses_strategy = True

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        s = setup.scenario
        assert s.federation is not None
        arrays, _ = split_arrays(setup.initial, s.federation.federate)
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        self.record = to_record(arrays)
        self.ema = ServerEMA.for_scenario(s, setup.data, select(arrays, GENERATOR))
        strategy: Any = build_strategy(s.strategy.name, dict(s.strategy.params))
        if s.strategy.critic is not None:
            critic = build_strategy(s.strategy.critic.name, dict(s.strategy.critic.params))
            strategy = PerNetwork(strategy, critic)
        self.strategy = strategy
        self.dp = user_level_aggregator(s)
        """User-level DP (`privacy.level: user`): our seeded DP aggregator takes the strategy's
        aggregation (clip every update as one vector, uniform mean over the expected cohort,
        noise); None otherwise."""
        self._clipped: list[float] = []

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        """The strategy (and a critic strategy) and their parameters; what they need."""
        problems = check_strategy(s.strategy.name, dict(s.strategy.params))
        # Looked up only once check_strategy found the name: an unknown name or a broken
        # plug-in is a problem reported above, not an exception here.
        strategy = None if problems else STRATEGIES.get(s.strategy.name)
        needs = getattr(strategy, "requires_federate", None)
        if needs and s.federation and s.federation.federate != needs:
            problems.append(f"strategy.name: {s.strategy.name} needs federation.federate: {needs}")
        critic = s.strategy.critic
        if critic is not None:
            problems += check_strategy(critic.name, dict(critic.params), path="strategy.critic")
            if s.federation is not None and s.federation.federate != "both":
                problems.append(
                    "strategy.critic: a critic strategy needs federation.federate: both"
                )
        return problems

    def instructions(self, r: Round, step: int) -> list[Message]:
        return list(self.strategy.configure_train(r.number, self.record, ConfigRecord({}), r.grid))

    def expect(self, r: Round, step: int) -> Expect:
        f = self.setup.scenario.federation
        bounded = f is not None and f.max_update_norm is not None
        return Expect(self.shapes, TRAIN_REPLY_KEYS, from_record(self.record) if bounded else None)

    def combine(self, r: Round, step: int, replies: Sequence[Reply]) -> None:
        if self.dp is not None:
            out = self.dp.combine(
                from_record(self.record), [rep.arrays() for rep in replies], r.number, step
            )
            self._clipped.append(out.clipped_fraction)
            new: ArrayRecord | None = to_record(out.mean)
        else:
            # Flower's QFedAvg collects garbage once per reply: cheap, since the run's rounds
            # have the heap from before them frozen (server/heap.py).
            new, _ = self.strategy.aggregate_train(r.number, [rep.message for rep in replies])
        if new is not None:
            self.record = new
            if self.ema is not None:
                self.ema.update(_generator(new))

    def shares(self, r: Round, step: int, replies: Sequence[Reply]) -> dict[int, float]:
        """Each client's share in the mean the strategy just took (the `fed.weight` rows).

        In order: what the strategy declares — its `weights(server_round, replies)` hook, whose
        None means "not a weighted mean" —, a reweighting strategy's `last_weights` (the fair
        rules: their weights; AFL: λ over the round's clients), the num-examples shares for a
        strategy that averages by them (`averages_by_examples`); else none — a median, Krum,
        q-FedAvg, a plug-in with its own `aggregate_train` and no hook — whose weights, if
        any, only they know."""
        pids = {rep.partition_id for rep in replies}
        if self.dp is not None:  # the uniform mean over the expected cohort
            return {p: 1.0 / self.dp.expected_cohort for p in pids}
        hook = getattr(self.strategy, "weights", None)
        if callable(hook):
            return declared_shares(hook(r.number, [rep.message for rep in replies]), pids, hook)
        last = getattr(self.strategy, "last_weights", None)
        if isinstance(last, dict) and set(last) == pids:
            return {int(k): float(v) for k, v in last.items()}
        if averages_by_examples(self.strategy):
            return super().shares(r, step, replies)
        return {}

    def round_metrics(self) -> dict[str, float]:
        """Under user-level DP: the share of updates the clip scaled down, and the clip."""
        if self.dp is None or not self._clipped:
            return {}
        out = {"privacy.clipped_fraction": float(np.mean(self._clipped))}
        if self.dp.adaptive is not None:
            out["privacy.clip"] = self.dp.clip
        self._clipped = []
        return out

    def generator(self) -> dict[str, np.ndarray]:
        return self.ema.arrays if self.ema is not None else _generator(self.record)

    def snapshot(self) -> dict[str, np.ndarray]:
        ema = self.ema.as_state_arrays() if self.ema is not None else {}
        return from_record(self.record) | ema

    def state(self) -> ProtocolState:
        data, skipped = strategy_state(self.strategy)
        if self.dp is not None:
            data = {**data, DP_STATE: self.dp.to_data()}
        server = dict(self.ema.arrays) if self.ema is not None else {}
        return ProtocolState(from_record(self.record), server, data, skipped)

    def load_state(self, state: ProtocolState) -> None:
        self.record = to_record(state.arrays)
        data = dict(state.data)
        dp = data.pop(DP_STATE, None)
        if self.dp is not None and dp is not None:
            self.dp.load_data(dp)
        load_strategy_state(self.strategy, data)
        rebind_nodes(self.strategy, self.setup.nodes)
        if self.ema is not None:
            self.ema.arrays = dict(state.server)

    def nodes_changed(self, node_pid: Mapping[int, int]) -> None:
        rebind_nodes(self.strategy, dict(node_pid))


DP_STATE = "__dp_aggregator__"
"""The key of the DP aggregator's state (the adaptive clip) among the protocol's data."""


def user_level_aggregator(s: Scenario) -> DPAggregator | None:
    """The seeded DP-FedAvg aggregator of a `privacy.level: user` scenario (None otherwise):
    the clip, the update's noise multiplier (σ, or under adaptive clipping the share of σ left
    to the update), the expected cohort as divisor."""
    p = s.privacy
    if p is None or p.level != "user":
        return None
    sigma = noise_multiplier(s)
    cohort = float(expected_cohort(s))
    adaptive = None
    if p.adaptive is not None:
        a = p.adaptive
        count_noise = a.count_noise if a.count_noise is not None else cohort / 20.0
        adaptive = Adaptive(a.target_quantile, a.lr, count_noise)
        sigma = update_noise_multiplier(sigma, count_noise)
    return DPAggregator(p.clip, sigma, cohort, s.seed, adaptive)


def averages_by_examples(strategy: object) -> bool:
    """Whether `strategy` combines the replies by their `num-examples` shares: the
    `aggregate_train` it runs is FedAvg's (FedProx), a server optimizer's on FedAvg's mean
    (FedAvgM, FedAdam, FedAdagrad, FedYogi) or `critic_swap`'s, weighted by `num-examples`.
    A plug-in that subclasses one of them but defines its own `aggregate_train` does not
    count: it may aggregate any way at all (a trimmed mean), and says how in a `weights`
    hook; a median, Krum or q-FedAvg does not average by them either."""
    averaging = (FedAvg, FedAvgM, FedAdam, FedAdagrad, FedYogi, CriticSwapFedAvg)
    for c in type(strategy).__mro__:
        if "aggregate_train" in vars(c):
            return c in averaging and getattr(strategy, "weighted_by_key", None) == NUM_EXAMPLES
    return False


def declared_shares(
    stated: object, pids: set[int], hook: Callable[..., object]
) -> dict[int, float]:
    """A strategy's `weights` hook's answer as shares: None → none (not a weighted mean); a
    mapping partition id → weight ≥ 0 over exactly the round's clients → normalised to sum to 1.
    Anything else is the plug-in's bug, named: a ValueError (the run fails, recorded)."""
    if stated is None:
        return {}
    where = f"{getattr(hook, '__qualname__', 'weights')}(server_round, replies)"
    if not isinstance(stated, Mapping):
        raise ValueError(
            f"{where} returned {type(stated).__name__}: expected None (not a weighted mean) or "
            "{partition id: weight} over the round's clients"
        )
    try:
        w = {int(k): float(v) for k, v in stated.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: weights must be numbers by partition id: {exc}") from None
    if set(w) != pids:
        raise ValueError(
            f"{where} weighs clients {sorted(w)}; the round's clients are {sorted(pids)}"
        )
    total = sum(w.values())
    if not all(math.isfinite(v) and v >= 0 for v in w.values()) or not total > 0:
        raise ValueError(f"{where}: weights must be finite, ≥ 0 and not all 0, got {w}")
    return {k: v / total for k, v in w.items()}


def _generator(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The `generator.*` arrays of a record (decoding only those)."""
    return {k: a.numpy() for k, a in select(record, GENERATOR).items()}
