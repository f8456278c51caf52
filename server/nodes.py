"""The server's queries to the nodes: which partition each holds, and their private state.

Flower's node ids are random, so the server asks every node its partition id at the start
(`discover`) and asks again of any node id that appears later (`server.rejoin`).
Clients' private state (private networks, optimizer moments) crosses to the server only in
these queries, for checkpoints (`ask: private`) and resumes (`ask: restore`); the ClientApp's
query handler answers them on every engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedgan.simulator.messages import ARRAYS, ASK_PRIVATE, ASK_RESTORE, Query
from fedgan.wire.codec import query_content, read_query_reply
from fedgan.wire.records import from_record, to_record
from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid


def ask_partitions(grid: Grid, nodes: Iterable[int], timeout: float) -> dict[int, int]:
    """node id → partition id of the `nodes` that answer within `timeout` seconds."""
    msgs = [
        Message(query_content(Query()), dst_node_id=n, message_type=MessageType.QUERY)
        for n in nodes
    ]
    out: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        answer = read_query_reply(reply)
        if answer is not None:
            out[reply.metadata.src_node_id] = answer.partition_id
    return out


def discover(grid: Grid, n_clients: int, timeout: float) -> dict[int, int]:
    """node id → partition id, asked of every node (node ids are random under Flower)."""
    out = ask_partitions(grid, grid.get_node_ids(), timeout)
    pids = sorted(out.values())
    if len(set(pids)) != len(pids) or any(p < 0 or p >= n_clients for p in pids):
        raise RuntimeError(
            f"nodes report partition ids {pids}; expected distinct ids in 0..{n_clients - 1}"
        )
    return out


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
