"""Vectorized engine: the in-process engine, with each round's local training batched.

Flower's Ray simulation runs clients one by one (seconds to start, milliseconds per message), and
even calling the ClientApp in process leaves a round of a hundred small GANs to a hundred rounds
of tiny matrix products and Python overhead. Here the train instructions of one push — every
sampled client of a round — run as *one* computation: `clients.training.clients_train`
stacks the clients' tensors and runs the one `GAN.step` under `torch.func.vmap`
(`simulator.gan.batched`).

A server-held generator's step instructions (mdgan, uagan: a train message per client and
generator step) are batched the same way: the addressed clients' private critics are stacked
from the store and stepped, and their answers computed, as one vmapped computation
(`clients.answers.clients_step`).

Everything Flower-facing is unchanged: the server loop and any strategy see the same `Grid`
API and get the very replies the ClientApp would send (read and built with the same
`wire.codec` functions), one per client, in node order; a client that fails gives an
error reply and the round goes on. Evaluation and query messages still run the ClientApp, one
node at a time, as in the in-process engine.

Private state (a private critic, optimizer moments) lives in a `PrivateStore` — one stacked array
per key for all clients, spilled to memory-mapped files beyond `engine.private_memory_gb` — not
in each node's `context.state`. The checkpoint's and the resume's queries (`ask: private`,
`ask: restore`) are answered from the store, following the ClientApp's query protocol; the
state is copied into the node's context state only while the ClientApp evaluates a private
generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fedgan.clients.answers import StepRequest, StepUpdate, clients_step
from fedgan.clients.instrumentation import keep
from fedgan.clients.requests import TrainRequest
from fedgan.clients.training import ClientUpdate, clients_train
from fedgan.simulator.devices import resolve_device
from fedgan.simulator.engines.inprocess import (
    DEFAULT_RUN_ID,
    ClientCall,
    InProcessGrid,
    RunConfig,
    partition_id_of,
    run_serverapp,
)
from fedgan.simulator.messages import ASK_PRIVATE, ASK_RESTORE, generator_travels
from fedgan.simulator.private_store import PrivateStore
from fedgan.wire import flwr_internals as fi
from fedgan.wire.codec import (
    answer_query,
    arrays_of,
    read_query,
    read_step,
    read_train,
    step_reply,
    train_reply,
)
from fedgan.wire.records import (
    PRIVATE_STATE,
    from_record,
    scenario_from,
    to_decoded_record,
    to_record,
)
from flwr.app import Message, MessageType
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

__all__ = ["VectorizedGrid", "run_vectorized"]


class VectorizedGrid(InProcessGrid):
    """In-process virtual nodes whose train instructions of one push run as one batch."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: RunConfig,
        *,
        run_id: int = DEFAULT_RUN_ID,
        spill_dir: str | Path | None = None,
    ) -> None:
        """`spill_dir`: where private state goes once it outgrows `engine.private_memory_gb`."""
        super().__init__(client_app, num_nodes, run_config, run_id=run_id)
        self.scenario = scenario_from(run_config)
        self.device = resolve_device(self.scenario.device)
        budget = int(self.scenario.engine.private_memory_gb * 2**30)
        self.private = PrivateStore(num_nodes, budget, spill_dir)
        federate = self.scenario.federation.federate if self.scenario.federation else "both"
        self._generator_private = not generator_travels(federate)

    def _deliver_all(self, messages: list[Message]) -> None:
        """Non-train instructions one by one (in node order), then all train ones as a batch."""
        train: list[Message] = []
        for msg in messages:
            if msg.metadata.message_type == MessageType.TRAIN:
                train.append(msg)
            else:
                reply = self._private_query(msg) or self._deliver_with_private(msg)
                self._replies[msg.metadata.message_id] = reply
        if train:
            steps = [m for m in train if read_step(m) is not None]
            if steps:  # a server-held generator's step: every client's critic at once
                self._step(steps)
            if len(steps) < len(train):
                self._train([m for m in train if read_step(m) is None])

    def _private_query(self, msg: Message) -> Message | None:
        """Answer a checkpoint's `ask: private` / a resume's `ask: restore` from the store itself
        (the ClientApp's query protocol, without copying every client's state into a context
        and back: at 1,000 clients that took seconds per checkpoint). None for other messages."""
        if msg.metadata.message_type != MessageType.QUERY:
            return None
        try:
            ask = read_query(msg).ask
        except ValueError:
            return None  # the ClientApp answers an unknown ask with its error reply
        if ask not in (ASK_PRIVATE, ASK_RESTORE):
            return None
        node = msg.metadata.dst_node_id
        pid = partition_id_of(node)

        def keep(arrays: dict[str, np.ndarray]) -> None:
            if arrays:  # an empty restore leaves the store as it is
                self.private.put(pid, arrays)

        with fi.task_identity(self._run_id, node, task_id=node):
            answer = answer_query(msg, pid, lambda: self.private.get(pid), keep, to_decoded_record)
        fi.set_message_id(answer, self._next_id())
        return answer

    def _deliver_with_private(self, msg: Message) -> Message:
        """Run the ClientApp; when it evaluates a private generator, with the node's private
        state in its context (the one place outside training where the ClientApp reads it)."""
        node = msg.metadata.dst_node_id
        reads = msg.metadata.message_type == MessageType.EVALUATE and self._generator_private
        arrays = self.private.get(partition_id_of(node)) if reads else None
        if arrays is None:
            return self._deliver(msg)
        context = self._contexts[node]
        context.state[PRIVATE_STATE] = to_record(arrays)
        try:
            return self._deliver(msg)
        finally:  # one copy only: the store's
            if PRIVATE_STATE in context.state:
                del context.state[PRIVATE_STATE]

    def _train(self, messages: list[Message]) -> None:
        """One FedAvg-style round on every addressed client as one batched computation."""

        def request(pid: int, msg: Message, received: dict[str, np.ndarray]) -> TrainRequest:
            ins = read_train(msg)
            return TrainRequest(
                pid, ins.round, received, self.private.get(pid), ins.proximal_mu, ins.critic_only
            )

        self._batched(messages, request, clients_train)

    def _step(self, messages: list[Message]) -> None:
        """One generator step of a server-held generator on every addressed client: their
        critics (from the store) stacked, stepped and answered as one batched computation."""

        def request(pid: int, msg: Message, received: dict[str, np.ndarray]) -> StepRequest:
            ins = read_step(msg)
            assert ins is not None
            return StepRequest(pid, ins, received, self.private.get(pid))

        self._batched(messages, request, clients_step)

    def _batched(
        self,
        messages: list[Message],
        request: Callable[[int, Message, dict[str, np.ndarray]], Any],
        compute: Callable[..., Sequence[ClientUpdate | StepUpdate | Exception]],
    ) -> None:
        """Build each message's request (`request(partition id, message, received arrays)`),
        run them all as one `compute(scenario, requests, device)`, store the clients' private
        state and reply. A malformed instruction gets an error reply, as a node gives."""
        t0 = time.perf_counter()
        requests: list[Any] = []
        ready: list[Message] = []
        decoded: dict[int, dict[str, np.ndarray]] = {}
        for msg in messages:
            pid = partition_id_of(msg.metadata.dst_node_id)
            try:
                record = arrays_of(msg)
                # A strategy (and UA-GAN) sends every node the same record object: decode it
                # once, not C times (clients only read the received arrays).
                if id(record) not in decoded:
                    decoded[id(record)] = from_record(record)
                requests.append(request(pid, msg, decoded[id(record)]))
                ready.append(msg)
            except Exception as ex:  # a malformed instruction: an error reply, as a node gives
                self._reply(msg, ex, 0.0)
        results = compute(self.scenario, requests, self.device) if requests else []
        seconds = (time.perf_counter() - t0) / max(len(messages), 1)
        for msg, res in zip(ready, results, strict=True):
            if not isinstance(res, Exception):
                self.private.put(partition_id_of(msg.metadata.dst_node_id), res.private)
            self._reply(msg, res, seconds)

    def _reply(
        self, msg: Message, result: ClientUpdate | StepUpdate | Exception, seconds: float
    ) -> None:
        node = msg.metadata.dst_node_id
        ok = not isinstance(result, Exception)
        # Replies are made under the node's identity, as its ClientApp would make them.
        private = self.scenario.privacy is not None
        if private and isinstance(result, ClientUpdate | StepUpdate):
            # Under privacy the statistics stay with the client (its instrumentation file).
            ins = read_train(msg) if isinstance(result, ClientUpdate) else read_step(msg)
            assert ins is not None
            kind = "train" if isinstance(result, ClientUpdate) else "step"
            keep(self._run_config, partition_id_of(node), ins.round, kind, result.reply.metrics())
        with fi.task_identity(self._run_id, node, task_id=node):
            if isinstance(result, ClientUpdate):
                arrays = to_decoded_record(result.arrays)
                answer = train_reply(msg, result.reply, arrays, seconds, withhold=private)
            elif isinstance(result, StepUpdate):
                arrays = to_decoded_record(result.arrays)
                answer = step_reply(msg, result.reply, arrays, seconds, withhold=private)
            else:
                answer = self._error_reply(msg, result)
        self.calls.append(
            ClientCall(
                partition_id_of(node), msg.metadata.message_type, msg.metadata.group_id, seconds, ok
            )
        )
        fi.set_message_id(answer, self._next_id())
        self._replies[msg.metadata.message_id] = answer


def run_vectorized(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    run_config: dict[str, bool | int | float | str],
    *,
    spill_dir: str | Path | None = None,
) -> None:
    """Run the apps on `num_nodes` batched virtual nodes in this process."""
    grid = VectorizedGrid(client_app, num_nodes, run_config, spill_dir=spill_dir)
    try:
        run_serverapp(server_app, grid)
    finally:
        grid.private.close()
