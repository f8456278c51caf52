"""`critic_swap`: FedAvg of locally trained generators, plus critics rotated between clients.

This is **not MD-GAN** (`federation.protocol: mdgan`, `server/protocols/mdgan.py`): MD-GAN keeps
one generator on the server and steps it from the clients' error feedback, every generator
step. Here every client still trains a whole GAN locally for `federation.local_steps` steps
(fedavg's round), the server averages the generators (FedAvg over the replies), and borrows one
idea of MD-GAN's: each client's critic parameters travel back to the server and are handed to
*another* client next round (a seeded rotation of last round's holders, so no client gets its
own critic back when two or more are held), so that a critic sees more of the data than one
non-IID shard. Optimizer moments stay private. Needs `federation.federate: both` (the critics
must travel).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from fedgan.simulator.messages import ARRAYS, CONFIG, CRITIC_PREFIXES, select
from fedgan.wire.codec import arrays_of, config_of, reply_partition
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class CriticSwapFedAvg(FedAvg):
    """FedAvg of the generator; critics rotated between clients every round (not MD-GAN).

    Parameters
    ----------
    seed : int
        Seeds the rotation (a fresh offset each round).
    **kwargs
        FedAvg's arguments (the simulator's round loop sets the sampling ones).

    Attributes
    ----------
    critics : dict[int, dict[str, Array]]
        The last critic each client sent, by partition id: part of the run's state.
    """

    requires_federate = "both"
    """The critics must travel for the server to swap them (checked before a run)."""

    def __init__(
        self,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {seed!r}")
        self.seed = seed
        self.critics: dict[int, dict[str, Array]] = {}
        self.partition_of: dict[int, int] = {}

    def rebind_nodes(self, node_pid: dict[int, int]) -> None:
        """After a resume: this run's node ids for the partitions it knew (node ids are new
        when a run restarts; the critics are kept by partition id and need no re-keying)."""
        if self.partition_of:
            seen = set(self.partition_of.values())
            self.partition_of = {n: p for n, p in node_pid.items() if p in seen}

    def sources(self, server_round: int, receivers: list[int]) -> dict[int, int]:
        """receiver partition id → the partition id whose stored critic it gets."""
        holders = sorted(self.critics)
        if not holders:
            return {}
        rng = np.random.default_rng([self.seed, server_round])
        shift = int(rng.integers(1, len(holders))) if len(holders) > 1 else 0
        rotated = {h: holders[(i + shift) % len(holders)] for i, h in enumerate(holders)}
        return {r: rotated.get(r, holders[int(rng.integers(len(holders)))]) for r in receivers}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        receivers = {
            m.metadata.dst_node_id: self.partition_of.get(m.metadata.dst_node_id) for m in messages
        }
        known = [p for p in receivers.values() if p is not None]
        source = self.sources(server_round, known)
        out = []
        for m in messages:
            pid = receivers[m.metadata.dst_node_id]
            if pid is None or pid not in source:
                out.append(m)  # first round, or a node never heard from: the global critic
                continue
            rest = {k: v for k, v in arrays.items() if not k.startswith(CRITIC_PREFIXES)}
            record = ArrayRecord(array_dict={**rest, **self.critics[source[pid]]})
            records = RecordDict({ARRAYS: record, CONFIG: config_of(m)})
            out.append(
                Message(
                    records,
                    dst_node_id=m.metadata.dst_node_id,
                    message_type=m.metadata.message_type,
                )
            )
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        for r in replies:
            if r.has_error():
                continue
            pid = reply_partition(r)
            self.partition_of[r.metadata.src_node_id] = pid
            self.critics[pid] = select(arrays_of(r), CRITIC_PREFIXES)
        return super().aggregate_train(server_round, replies)
