"""`fedavg` (FedGAN): clients take local G and D steps from the global networks; a Flower
strategy (`strategy.*`, any built-in, ours or a plug-in) aggregates what travels.

One exchange per round: the strategy's `configure_train` (shown only the round's clients,
through `SampledGrid`) builds the instructions, its `aggregate_train` combines the replies.
The server also keeps the EMA of the aggregated generator when `gan.ema` > 0 (`ServerEMA`).
State for checkpoints: the global arrays, the EMA, and every data attribute of the strategy
(FedAdam's moments, the fair strategies' weights, `critic_swap`'s critics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi

from server.heap import young_heap_only
from server.protocols.base import Expect, Protocol, ProtocolState, Reply, Round, Setup
from server.strategies import STRATEGIES, build_strategy, check_strategy
from server.strategies.mdgan import CriticSwapFedAvg
from server.strategies.per_network import PerNetwork
from server.strategies.state import load_strategy_state, rebind_nodes, strategy_state
from simulator.federation import ServerEMA
from simulator.messages import GENERATOR, NUM_EXAMPLES, TRAIN_REPLY_KEYS, select, split_arrays
from simulator.scenario import Scenario
from wire.records import from_record, to_record


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
        with young_heap_only():  # Flower's QFedAvg collects garbage once per reply
            new, _ = self.strategy.aggregate_train(r.number, [rep.message for rep in replies])
        if new is not None:
            self.record = new
            if self.ema is not None:
                self.ema.update(_generator(new))

    def shares(self, r: Round, step: int, replies: Sequence[Reply]) -> dict[int, float]:
        """A reweighting strategy's `last_weights` (the fair rules: their weights; AFL: λ over
        the round's clients), else the num-examples shares for a strategy that averages by
        them (`averages_by_examples`); none for the others — a median, Krum, q-FedAvg, a
        plug-in without `last_weights` — whose weights only they know."""
        last = getattr(self.strategy, "last_weights", None)
        if isinstance(last, dict) and set(last) == {rep.partition_id for rep in replies}:
            return {int(k): float(v) for k, v in last.items()}
        if averages_by_examples(self.strategy):
            return super().shares(r, step, replies)
        return {}

    def generator(self) -> dict[str, np.ndarray]:
        return self.ema.arrays if self.ema is not None else _generator(self.record)

    def snapshot(self) -> dict[str, np.ndarray]:
        ema = self.ema.as_state_arrays() if self.ema is not None else {}
        return from_record(self.record) | ema

    def state(self) -> ProtocolState:
        data, skipped = strategy_state(self.strategy)
        server = dict(self.ema.arrays) if self.ema is not None else {}
        return ProtocolState(from_record(self.record), server, data, skipped)

    def load_state(self, state: ProtocolState) -> None:
        self.record = to_record(state.arrays)
        load_strategy_state(self.strategy, state.data)
        rebind_nodes(self.strategy, self.setup.nodes)
        if self.ema is not None:
            self.ema.arrays = dict(state.server)

    def nodes_changed(self, node_pid: Mapping[int, int]) -> None:
        rebind_nodes(self.strategy, dict(node_pid))


def averages_by_examples(strategy: object) -> bool:
    """Whether `strategy` combines the replies by their `num-examples` shares: the
    `aggregate_train` it runs is FedAvg's (FedProx), a server optimizer's on FedAvg's mean
    (FedAvgM, FedAdam, FedAdagrad, FedYogi) or `critic_swap`'s, weighted by `num-examples`.
    A plug-in's own `aggregate_train` is taken to weigh as the strategy it extends (one that
    weighs otherwise says so in `last_weights`); a median, Krum or q-FedAvg does not."""
    averaging = (FedAvg, FedAvgM, FedAdam, FedAdagrad, FedYogi, CriticSwapFedAvg)
    for c in type(strategy).__mro__:
        if "aggregate_train" in vars(c) and c.__module__.startswith(("flwr.", "server.")):
            return c in averaging and getattr(strategy, "weighted_by_key", None) == NUM_EXAMPLES
    return False


def _generator(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The `generator.*` arrays of a record (decoding only those)."""
    return {k: a.numpy() for k, a in select(record, GENERATOR).items()}
