"""What a protocol is: what one round sends, what comes back, how the server combines it, and
what it keeps for checkpoints. The round loop (`server/loop.py`) does the rest.

A round, for every protocol: the loop samples the round's clients (seeded, over partition
ids) and draws their faults (dropouts are never sent anything); then, `exchanges` times, it
asks the protocol for the round's `instructions`, sends them (bounded wait, stragglers past
the deadline discarded), passes every reply through the gate against what the protocol
`expect`s and, with at least `federation.min_replies` replies left, hands them to `combine`;
then it records the clients' statistics (averaged over the round's exchanges), evaluates the
`generator` every `evaluation.every` rounds and checkpoints the protocol's `state` with the
clients' private state. Evaluation, checkpoints, faults and client statistics are per round.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from fedgan.simulator.messages import TRAIN_REPLY_KEYS, TrainReply
from fedgan.simulator.scenario import Scenario
from fedgan.wire.codec import arrays_of, read_train_reply
from fedgan.wire.flwr_internals import Run
from fedgan.wire.records import from_record
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

if TYPE_CHECKING:  # torch's; a protocol's checks (the preflight) do not need them
    from fedgan.simulator.gan.train import GAN
    from fedgan.simulator.prepare import FederatedData


@dataclass(frozen=True)
class Setup:
    """What a protocol is built from.

    `initial`: the round-0 state's arrays (`GANState.arrays()`: networks, optimizer moments,
    every prefix), the same draw every client starts from; `nodes`: node id → partition id
    (Flower's node ids are random; a resumed run gets new ones).
    """

    scenario: Scenario
    data: FederatedData
    gan: GAN
    initial: dict[str, np.ndarray]
    nodes: dict[int, int]


@dataclass(frozen=True)
class Expect:
    """What the gate checks in each reply of an exchange: exactly the `arrays` keys and shapes
    (None: no arrays expected), the `metrics` keys, and — when `federation.max_update_norm` is
    set — the distance of the arrays from `reference`."""

    arrays: dict[str, tuple[int, ...]] | None
    metrics: tuple[str, ...] = TRAIN_REPLY_KEYS
    reference: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Reply:
    """A reply that passed the gate, from client `partition_id`."""

    partition_id: int
    message: Message

    def arrays(self) -> dict[str, np.ndarray]:
        """The reply's arrays, decoded."""
        return from_record(arrays_of(self.message))

    def stats(self) -> TrainReply:
        """A train reply's statistics (`simulator.messages.TrainReply`)."""
        return read_train_reply(self.message)


@dataclass
class ProtocolState:
    """What a protocol keeps from one round to the next, as a checkpoint stores it.

    `arrays`: the global model after the round (what the next round starts from); `server`:
    other arrays the server holds (an EMA, a server-side generator's optimizer moments);
    `data`: anything else, as plain data (a strategy's attributes, a weighting's λ) — it is
    pickled with a restricted unpickler (numpy arrays, Flower records, plain values only);
    `skipped`: what could not be saved (logged as `checkpoint_incomplete`).
    """

    arrays: dict[str, np.ndarray]
    server: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class SampledGrid(Grid):
    """A view of a Grid that lists only this round's sampled nodes, so a stock strategy's own
    sampling (`fraction_train=1.0`) selects exactly them; everything else is delegated."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    # Grid's abstract methods, delegated.
    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


@dataclass(frozen=True)
class Round:
    """One round as the loop hands it to a protocol.

    `clients`: partition ids sent this round (sampled, minus dropouts), sorted; `node_of`:
    their node ids; `grid`: the run's Grid, listing only their nodes.
    """

    number: int
    clients: list[int]
    node_of: dict[int, int]
    grid: Grid

    def send(
        self, records: RecordDict | Mapping[int, RecordDict], kind: str = MessageType.TRAIN
    ) -> list[Message]:
        """One instruction of `kind` per client of the round: the same `records` for all (one
        object: an engine decodes it once), or each client's own (partition id → records)."""
        return [
            Message(
                records if isinstance(records, RecordDict) else records[p],
                dst_node_id=self.node_of[p],
                message_type=kind,
            )
            for p in self.clients
        ]


class Protocol(ABC):
    """A federated protocol: what one round sends, expects back and combines (see the module).

    Subclasses are built as `cls(setup, **federation.protocol_params)` — parameters checked
    against the constructor's signature — and may refuse a scenario in `check`. A protocol
    can exchange several times a round (`exchanges`; e.g. one exchange per generator step);
    client statistics are then averaged over the round and `fed.replies` is the mean number
    of accepted replies per exchange.
    """

    exchanges: int = 1
    """Exchanges (instructions → replies → combine) per round."""
    uses_strategy: ClassVar[bool] = False
    """Whether `strategy.*` configures it (a protocol that ignores it refuses a non-default
    strategy in `check`)."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        """Problems with scenario `s` for this protocol, as 'yaml.path: message' (default:
        none)."""
        return []

    @abstractmethod
    def instructions(self, r: Round, step: int) -> list[Message]:
        """The messages of exchange `step` (0-based) of round `r` (`r.send` builds them)."""

    @abstractmethod
    def expect(self, r: Round, step: int) -> Expect:
        """What every reply of exchange `step` must hold (the gate drops the others)."""

    @abstractmethod
    def combine(self, r: Round, step: int, replies: Sequence[Reply]) -> None:
        """Update the server's model from the accepted replies (sorted by partition id; at
        least `federation.min_replies` of them: a shorter exchange is skipped)."""

    @abstractmethod
    def generator(self) -> dict[str, np.ndarray]:
        """The generator the server evaluates and clients score (`generator.*` arrays); empty
        when every client keeps its own (clients then score their private one)."""

    def snapshot(self) -> dict[str, np.ndarray]:
        """What `checkpoints/round-<r>.npz` holds: the global model (default: `state().arrays`)."""
        return self.state().arrays

    @abstractmethod
    def state(self) -> ProtocolState:
        """Everything the next round depends on (the resume checkpoint stores it)."""

    @abstractmethod
    def load_state(self, state: ProtocolState) -> None:
        """Take up a checkpointed `state` (on a protocol built from the same scenario)."""

    def nodes_changed(self, node_pid: Mapping[int, int]) -> None:
        """A client rejoined on a new node id (`server/rejoin.py`); `node_pid`: node id →
        partition id from now on. Protocols that keep state by node id update it (default:
        nothing)."""
        return None

    def weights(self, r: Round, replies: Sequence[Reply]) -> np.ndarray:
        """One weight ≥ 0 per reply, for protocols that combine replies with client weights
        (default: FedAvg's, the clients' training points; under privacy, where sizes are
        withheld, equal weights)."""
        if self.setup.scenario.privacy is not None:
            return np.ones(len(replies), dtype=np.float64)
        return np.array([rep.stats().num_examples for rep in replies], dtype=np.float64)

    def shares(self, r: Round, step: int, replies: Sequence[Reply]) -> dict[int, float]:
        """Each client's share in the combination `combine` just made of `replies` (partition
        id → weight, summing to 1): the loop records their mean over the round's exchanges as
        the per-client `fed.weight` rows. Default: `weights`, normalised."""
        w = self.weights(r, replies)
        total = float(w.sum())
        if not replies or total <= 0:
            return {}
        return {rep.partition_id: float(v) / total for rep, v in zip(replies, w, strict=True)}

    def targets(self) -> dict[str, np.ndarray]:
        """Other distributions the generator aims at, as client weights over all partition ids
        [N] by evaluation scope: the evaluation also scores the generator against each such
        mixture Σ_k π_k p_k of the clients' data (UA-GAN's `mixture`). Default: none."""
        return {}

    def round_metrics(self) -> dict[str, float]:
        """The server's own statistics of the round just played (global rows; e.g. a
        server-held generator's loss), then reset. Default: none."""
        return {}
