"""In-process engine: a Flower `Grid` that calls the `ClientApp` directly, one `Context` per node.

Why: Flower's Ray simulation costs seconds to start and milliseconds per message, and aggregates
in arrival order; calling the ClientApp in this process costs well under a millisecond per message
and is deterministic. The ServerApp and ClientApp are the very objects the Ray and Deployment
engines run.

What it mirrors from Flower 1.42 (simulation and deployment runtimes):
- One virtual node per partition, its `node_config` holding its partition id p and their number
  n (`simulator.messages.NODE_PARTITION_ID`, `NODE_NUM_PARTITIONS`), one
  persistent `context.state` per node, a copy of the same `run_config` for every node.
- Messages cross "the wire" as copies: the ClientApp gets its own copy of the instruction and the
  server its own copy of the reply, so neither side can alias the other's records.
- The ClientApp runs on a copy of its node's Context; the state is kept only when the ClientApp
  returns (Flower discards the context of a ClientApp that raised).
- An exception in the ClientApp becomes an error reply (`ErrorCode.CLIENT_APP_RAISED_EXCEPTION`,
  reason `"<class 'ValueError'>:<'text'>"`, as a SuperNode writes it); the server carries on.
- A ClientApp that changes `context.run_config` gets an error reply, as in Flower's simulation.
- Instructions with a malformed id/TTL raise `ValueError` (as `InMemoryGrid` does); instructions
  to an unknown node, from a source other than the SuperLink or for another run are logged and
  dropped (as Flower's LinkState does), so no reply comes back for them.

Where it differs, on purpose:
- Node ids are `NODE_ID_OFFSET + partition_id`, listed in partition order (Flower draws them
  from os.urandom). The offset keeps clear of `SUPERLINK_NODE_ID == 1` and of 0 ("unset").
- `push_messages` runs the ClientApps at once, in node-id order, so `send_and_receive` always
  returns every reply; `timeout` is accepted and never needed. Replies come back sorted by node
  id (= partition id), so stock strategies aggregate in a fixed order even though Flower's
  `sample_nodes` shuffles the nodes with the global `random`.
- Message ids are a per-grid counter (Flower: uuid4 or content hashes).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedgan.simulator.messages import NODE_NUM_PARTITIONS, NODE_PARTITION_ID
from fedgan.wire import flwr_internals as fi
from fedgan.wire.flwr_internals import Run
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

__all__ = [
    "DEFAULT_RUN_ID",
    "NODE_ID_OFFSET",
    "ClientCall",
    "InProcessGrid",
    "copy_recorddict",
    "node_id_of",
    "partition_id_of",
    "run_inprocess",
    "run_serverapp",
]

log = logging.getLogger(__name__)

RunConfigValue = bool | int | float | str
RunConfig = Mapping[str, RunConfigValue]

NODE_ID_OFFSET = 1000
DEFAULT_RUN_ID = 1
_SERVER_TASK_ID = 1  # what flwr.simulation.run_simulation uses for its ServerApp task

# Flower's TaskIdentity is process-global, so two ServerApps in one process would overwrite
# each other's identity: allow one in-process run at a time, and fail fast otherwise.
_RUN_LOCK = threading.Lock()


def node_id_of(partition_id: int) -> int:
    """Node id of the virtual node that holds `partition_id`."""
    if partition_id < 0:
        raise ValueError(f"partition id must be >= 0, got {partition_id}")
    return NODE_ID_OFFSET + partition_id


def partition_id_of(node_id: int) -> int:
    """Partition id held by the virtual node `node_id` (inverse of `node_id_of`)."""
    if node_id < NODE_ID_OFFSET:
        raise ValueError(f"{node_id} is not an in-process node id (they start at {NODE_ID_OFFSET})")
    return node_id - NODE_ID_OFFSET


def _check_run_config(run_config: RunConfig) -> dict[str, RunConfigValue]:
    """A plain copy of `run_config`, refusing what Flower's run_config can't hold (flat scalars)."""
    out: dict[str, RunConfigValue] = {}
    for key, value in run_config.items():
        if not isinstance(key, str) or not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"run_config[{key!r}] = {value!r}: Flower's run_config holds only str keys and "
                "bool/int/float/str values (pass richer config as a JSON string)"
            )
        out[key] = value
    return out


def copy_recorddict(records: RecordDict) -> RecordDict:
    """A copy of `records` sharing no mutable object with it (array bytes are shared: immutable).

    Cheaper than `copy.deepcopy` and safe where deepcopy is not: once Flower has computed an
    Array's object id it caches memoryview chunks, which cannot be deep-copied.
    """
    out = RecordDict()
    for key, record in records.items():
        if isinstance(record, ArrayRecord):
            out[key] = ArrayRecord(
                {k: Array(a.dtype, tuple(a.shape), a.stype, a.data) for k, a in record.items()}
            )
        elif isinstance(record, MetricRecord):
            out[key] = MetricRecord(
                {k: copy.copy(v) if isinstance(v, list) else v for k, v in record.items()}
            )
        elif isinstance(record, ConfigRecord):
            out[key] = ConfigRecord(
                {k: copy.copy(v) if isinstance(v, list) else v for k, v in record.items()}
            )
        else:  # a record type newer than this code: fall back to the generic copy
            out[key] = copy.deepcopy(record)
    return out


def _error_reason(ex: BaseException) -> str:
    """The reason text a Flower SuperNode writes for a ClientApp exception."""
    return str(type(ex)) + ":<'" + str(ex) + "'>"


@dataclass(frozen=True)
class ClientCall:
    """Wall time of one ClientApp call (kept apart from metrics: wall times aren't reproducible)."""

    partition_id: int
    message_type: str
    group_id: str
    seconds: float
    ok: bool


class _BadReply(Exception):
    """The ClientApp returned something that is not a reply to the message it got."""


class InProcessGrid(Grid):
    """A Grid whose nodes are virtual: each message runs the ClientApp in this process."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: RunConfig,
        *,
        run_id: int = DEFAULT_RUN_ID,
        states: Mapping[int, RecordDict] | None = None,
    ) -> None:
        """Build `num_nodes` virtual nodes; `states` seeds `context.state` by partition id."""
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        config = _check_run_config(run_config)
        states = states or {}
        unknown = sorted(set(states) - set(range(num_nodes)))
        if unknown:
            raise ValueError(f"states given for partitions {unknown}, outside 0..{num_nodes - 1}")
        self._client_app = client_app
        self._run_id = run_id
        self._run: Run = fi.make_run(run_id, config)
        self._run_config = config
        self._node_ids = [node_id_of(p) for p in range(num_nodes)]
        self._contexts: dict[int, Context] = {
            node_id_of(p): Context(
                run_id=run_id,
                node_id=node_id_of(p),
                node_config={NODE_PARTITION_ID: p, NODE_NUM_PARTITIONS: num_nodes},
                state=copy_recorddict(states[p]) if p in states else RecordDict(),
                run_config=dict(config),
            )
            for p in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}  # instruction id -> its reply, until pulled
        self._seq = 0
        self._lock = threading.RLock()
        self.calls: list[ClientCall] = []

    # --- Grid API -------------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        """Set the run; it must be the run the nodes' Contexts were built for."""
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        if run.run_id != self._run_id:
            raise ValueError(f"this grid serves run {self._run_id}, not {run.run_id}")
        self._run = copy.copy(run)

    @property
    def run(self) -> Run:
        """A copy of the run record."""
        return copy.copy(self._run)

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build an instruction (deprecated in Flower: prefer the `Message` constructor)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Node ids in partition-id order."""
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver `messages` now, in node-id order; return their ids in the order given."""
        with self._lock:
            accepted: list[Message] = []
            ids: list[str] = []
            for msg in messages:
                self._check_instruction(msg)
                fi.set_message_id(msg, self._next_id())
                if self._accepts(msg):
                    accepted.append(msg)
                    ids.append(msg.metadata.message_id)
            # Stable sort: one node's messages still run in the order they were pushed.
            self._deliver_all(sorted(accepted, key=lambda m: m.metadata.dst_node_id))
            return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """Hand over (once) the replies to `message_ids`, sorted by node id."""
        with self._lock:
            found = [self._replies.pop(i) for i in set(message_ids) if i in self._replies]
        # Ids are zero-padded counters, so they sort in push order within a node.
        return sorted(found, key=lambda r: (r.metadata.src_node_id, r.metadata.message_id))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        """Push and pull: every accepted message has its reply by now, so `timeout` never bites."""
        del timeout
        return self.pull_messages(self.push_messages(messages))

    # --- beyond the Grid API ----------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        """Number of virtual nodes."""
        return len(self._node_ids)

    def context_of(self, partition_id: int) -> Context:
        """The live Context of the node holding `partition_id` (its `state` is the client state)."""
        return self._contexts[node_id_of(partition_id)]

    def states(self) -> dict[int, RecordDict]:
        """Copies of every node's `context.state`, by partition id (for checkpoints)."""
        return {partition_id_of(n): copy_recorddict(c.state) for n, c in self._contexts.items()}

    # --- internals ------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._seq:032x}"

    @staticmethod
    def _check_instruction(msg: Message) -> None:
        """Refuse malformed instructions loudly, as Flower's `InMemoryGrid._check_message` does."""
        md = msg.metadata
        if md.reply_to_message_id != "" or md.ttl <= 0 or md.delivered_at != "":
            raise ValueError(f"Invalid message: {msg}")

    def _accepts(self, msg: Message) -> bool:
        """Whether Flower's LinkState would store `msg`; it logs and drops the others."""
        md = msg.metadata
        problem = None
        if not msg.has_content():
            problem = "an instruction must carry content"
        elif md.src_node_id != fi.SUPERLINK_NODE_ID:
            problem = f"source node {md.src_node_id} is not the SuperLink"
        elif md.run_id != self._run_id:
            problem = f"run id {md.run_id} is not this grid's run {self._run_id}"
        elif md.dst_node_id not in self._contexts:
            problem = f"no node with id {md.dst_node_id}"
        if problem is not None:
            log.error("Message dropped (no reply will come): %s", problem)
            return False
        return True

    def _deliver_all(self, messages: list[Message]) -> None:
        """Run every accepted instruction (in node-id order) and keep its reply until pulled."""
        for msg in messages:
            self._replies[msg.metadata.message_id] = self._deliver(msg)

    def _error_reply(self, msg: Message, ex: BaseException) -> Message:
        """The error reply a SuperNode sends when its ClientApp raised `ex`."""
        return Message(
            Error(code=fi.CLIENT_APP_RAISED_EXCEPTION, reason=_error_reason(ex)), reply_to=msg
        )

    def _deliver(self, msg: Message) -> Message:
        """Run the ClientApp on a copy of `msg` and of its node's Context; return the reply."""
        node_id = msg.metadata.dst_node_id
        stored = self._contexts[node_id]
        work = Context(
            run_id=stored.run_id,
            node_id=node_id,
            node_config=dict(stored.node_config),
            state=copy_recorddict(stored.state),
            run_config=dict(stored.run_config),
        )
        delivered = fi.copy_message(msg, copy_recorddict(msg.content))
        start = time.perf_counter()
        reply: Message
        try:
            try:
                # A node's own identity while its ClientApp runs, as in a SuperNode's process.
                with fi.task_identity(self._run_id, node_id, task_id=node_id):
                    out = self._client_app(message=delivered, context=work)
            except Exception as ex:  # any ClientApp failure becomes an error reply, as in Flower
                log.error("ClientApp raised on node %s", node_id, exc_info=ex)
                reply = self._error_reply(msg, ex)
                ok = False
            else:
                reply = self._checked_reply(out, msg, work)
                stored.state = work.state
                ok = True
        except _BadReply as ex:
            log.error("ClientApp on node %s: %s", node_id, ex)
            reply = Message(Error(code=fi.UNKNOWN_ERROR, reason=_error_reason(ex)), reply_to=msg)
            ok = False
        seconds = time.perf_counter() - start
        self.calls.append(
            ClientCall(
                partition_id=partition_id_of(node_id),
                message_type=msg.metadata.message_type,
                group_id=msg.metadata.group_id,
                seconds=seconds,
                ok=ok,
            )
        )
        fi.set_message_id(reply, self._next_id())
        return reply

    def _checked_reply(self, out: object, msg: Message, work: Context) -> Message:
        """A private copy of `out`, or `_BadReply` where Flower would drop or refuse it."""
        if not isinstance(out, Message):
            raise _BadReply(f"the ClientApp returned {type(out).__name__}, not a Message")
        md = out.metadata
        if md.reply_to_message_id != msg.metadata.message_id or md.dst_node_id != (
            msg.metadata.src_node_id
        ):
            raise _BadReply("the ClientApp's Message is not a reply to the message it received")
        if out.has_content() == out.has_error():
            raise _BadReply("a reply must carry either content or an error")
        if work.run_config != self._run_config:
            # Flower's simulation refuses such a Context (DeprecatedRunInfoStore.update_context).
            raise _BadReply("The `run_config` field of the `Context` object cannot be modified")
        return fi.copy_message(out, copy_recorddict(out.content) if out.has_content() else None)


def run_serverapp(
    server_app: ServerApp, grid: InProcessGrid, run_config: RunConfig | None = None
) -> Context:
    """Run `server_app` on `grid` as Flower does (`ServerApp.__call__(grid=, context=)`).

    The server sees `run_config` (default: the grid's). Returns the server's Context after the run.
    """
    run = grid.run
    context = Context(
        run_id=run.run_id,
        node_id=fi.SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=_check_run_config(run.override_config if run_config is None else run_config),
    )
    if not _RUN_LOCK.acquire(blocking=False):
        raise RuntimeError(
            "another in-process run is active in this process (Flower's task identity is "
            "process-global): run them one after another or in separate processes"
        )
    try:
        with fi.task_identity(context.run_id, fi.SUPERLINK_NODE_ID, _SERVER_TASK_ID):
            # The same call flwr.server.run_serverapp.run makes for every runtime.
            server_app(grid=grid, context=context)
    finally:
        _RUN_LOCK.release()
    return context


def run_inprocess(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    run_config: dict[str, bool | int | float | str],
    *,
    run_id: int = DEFAULT_RUN_ID,
) -> None:
    """Run the apps on `num_nodes` virtual nodes in this process; both apps see `run_config`."""
    run_serverapp(server_app, InProcessGrid(client_app, num_nodes, run_config, run_id=run_id))
