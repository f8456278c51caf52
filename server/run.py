"""What the steps of a federated run share (`server/loop.py` composes the steps)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fedgan.server.privacy import Account
from fedgan.server.protocols import Protocol
from fedgan.simulator.evaluate import Evaluator
from fedgan.simulator.gan.train import GAN
from fedgan.simulator.prepare import FederatedData
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.store import RunStore
from flwr.serverapp import Grid


@dataclass
class Run:
    """A federated run in progress: its scenario, folder, grid, data, evaluator, nodes and
    protocol, and what the checkpoints need to know about the clients.

    `node_pid`: node id → partition id (asked at the start, and of node ids that appear later:
    `server/rejoin.py`); `private`: every client's private state as of the last checkpoint
    (partition id → arrays), collected at round `private_round[pid]` (older than the last
    checkpoint for a client that did not answer it); `touched`: the clients sent a train message
    since (only they can have changed theirs); `asked`: node ids that have not told their
    partition yet → times asked.
    """

    s: Scenario
    store: RunStore
    grid: Grid
    data: FederatedData
    gan: GAN
    evaluator: Evaluator
    node_pid: dict[int, int]
    protocol: Protocol
    private: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    private_round: dict[int, int] = field(default_factory=dict)
    asked: dict[int, int] = field(default_factory=dict)
    pid_node: dict[int, int] = field(init=False)
    """partition id → node id."""
    account: Account | None = None
    """The privacy account (`privacy:` runs): ε rows after every round."""
    phase: str = "start"
    """The step the loop is in (sample, exchange, combine, record, evaluate, checkpoint): where
    a failure happened, for its `run_failed` event."""

    def __post_init__(self) -> None:
        self.pid_node = {p: n for n, p in self.node_pid.items()}
