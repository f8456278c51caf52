"""What the server saves and puts back to resume a run: strategy state and clients' private state.

Flower strategies keep their state as plain attributes (FedAdam's moments `m_t`/`v_t`, FedAvgM's
`momentum_vector`, `current_arrays`; our fair strategies' weights and λ; `critic_swap`'s
critics). `strategy_state` takes every attribute that is data — callables are construction-time
configuration, rebuilt from the scenario — and `load_strategy_state` sets them on a strategy
freshly built from the same scenario. Nested strategies (`PerNetwork`, Flower's DP wrappers)
are walked into. Clients' private state travels in QUERY messages answered by the ClientApp.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from server.strategies.per_network import PerNetwork
from simulator.checkpoint import round_trips
from simulator.messages import ARRAYS, ASK_PRIVATE, ASK_RESTORE, Query
from wire.messages import query_content, read_query_reply
from wire.records import from_record, to_record

NESTED = "__nested__"
"""Key of the sub-dict holding nested strategies' states, by attribute name."""


def strategy_state(strategy: Any, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """(the strategy's data attributes, names of attributes that could not be saved)."""
    state: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in vars(strategy).items():
        if isinstance(value, Strategy | PerNetwork):
            nested[name], more = strategy_state(value, f"{prefix}{name}.")
            skipped += more
        elif callable(value):
            continue
        elif round_trips(value):
            state[name] = value
        else:
            skipped.append(f"{prefix}{name}")
    if nested:
        state[NESTED] = nested
    return state, skipped


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Set the attributes `strategy_state` saved on `strategy` (built from the same scenario)."""
    for name, value in state.items():
        if name == NESTED:
            for attr, sub in value.items():
                load_strategy_state(getattr(strategy, attr), sub)
        else:
            setattr(strategy, name, value)


def rebind_nodes(strategy: Any, node_pid: dict[int, int]) -> None:
    """Re-key node-id state to this run's node ids (Flower draws new ones when a run restarts).

    `critic_swap` remembers which node holds which partition (`partition_of`, node id →
    partition id); the in-process engine's node ids are fixed, Ray's are not.
    """
    for value in vars(strategy).values():
        if isinstance(value, Strategy | PerNetwork):
            rebind_nodes(value, node_pid)
    known = getattr(strategy, "partition_of", None)
    if isinstance(known, dict) and known:
        seen = set(known.values())
        strategy.partition_of = {n: p for n, p in node_pid.items() if p in seen}


def _query(grid: Grid, contents: dict[int, RecordDict], timeout: float) -> dict[int, Message]:
    """Send one QUERY per node (node id → content); the successful replies by node id."""
    msgs = [
        Message(content, dst_node_id=node, message_type=MessageType.QUERY)
        for node, content in contents.items()
    ]
    replies = grid.send_and_receive(msgs, timeout=timeout)
    return {r.metadata.src_node_id: r for r in replies if not r.has_error()}


def collect_private(
    grid: Grid, pid_node: dict[int, int], pids: list[int], timeout: float
) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """Ask clients `pids` for their private arrays: ({pid: arrays} of those that have any,
    the pids that did not answer)."""
    ask = {pid_node[p]: query_content(Query(ASK_PRIVATE)) for p in pids if p in pid_node}
    replies = _query(grid, ask, timeout)
    out: dict[int, dict[str, Any]] = {}
    failed = []
    for p in pids:
        reply = replies.get(pid_node.get(p, -1))
        arrays = reply.content.array_records.get(ARRAYS) if reply is not None else None
        answer = read_query_reply(reply) if reply is not None else None
        if arrays is None or answer is None or answer.partition_id != p:
            failed.append(p)
        elif answer.has_private:
            out[p] = from_record(arrays)
    return out, failed


def restore_private(
    grid: Grid, pid_node: dict[int, int], private: dict[int, dict[str, Any]], timeout: float
) -> list[int]:
    """Put each client's checkpointed private arrays back; the pids that did not confirm."""
    contents = {}
    for p, arrays in private.items():
        if p in pid_node:
            contents[pid_node[p]] = query_content(Query(ASK_RESTORE), to_record(arrays))
    replies = _query(grid, contents, timeout)
    return sorted(p for p in private if pid_node.get(p, -1) not in replies)
