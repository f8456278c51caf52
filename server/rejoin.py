"""A SuperNode that comes back: a killed and restarted node has a new node id and an empty
`context.state` (its private critic and optimizer moments are gone).

Before every round the server lists the grid's node ids; a node id it does not know is asked
its partition id (one bounded query; a node that does not answer is asked again at the next
rounds, at most `MAX_ASKS` times). A known partition on a new node takes the new node id — the
old one is never sent anything again — and gets back its private state of the last checkpoint
through `ask: restore`. An event `client_rejoined` says what happened to that state:
`restored` (as of round `from_round`: its updates since are lost), `lost` (a checkpoint held it
but the node did not confirm) or `none` (no checkpoint holds private state of this client: the
protocol keeps none, or none was checkpointed yet). A node that answers with no partition of
this run is recorded (`node_unknown`) and ignored. In-process, vectorized and Ray grids never
change their nodes, so this costs one `get_node_ids()` a round there.
"""

from __future__ import annotations

from fedgan.server.nodes import ask_partitions, restore_private
from fedgan.server.run import Run

MAX_ASKS = 3
"""Rounds in which a new node id that does not answer is asked its partition again."""


def rejoin(run: Run, rnd: int) -> None:
    """Take up nodes that joined since the last round (see the module); before round `rnd`."""
    assert run.s.federation is not None
    timeout = run.s.federation.timeout
    new = [
        n
        for n in run.grid.get_node_ids()
        if n not in run.node_pid and run.asked.get(n, 0) < MAX_ASKS
    ]
    if not new:
        return
    answers = ask_partitions(run.grid, new, timeout)
    changed = False
    for node in new:
        pid = answers.get(node)
        if pid is None:
            run.asked[node] = run.asked.get(node, 0) + 1
            continue
        if not 0 <= pid < run.data.n_clients:
            run.asked[node] = MAX_ASKS
            run.store.event(
                "node_unknown", round=rnd, node=node, detail=f"reports partition id {pid}"
            )
            continue
        run.asked.pop(node, None)
        old = run.pid_node.get(pid)
        if old is not None:
            del run.node_pid[old]
        run.node_pid[node] = pid
        run.pid_node[pid] = node
        changed = True
        private = run.private.get(pid)
        if private is None:
            run.store.event("client_rejoined", round=rnd, client=pid, node=node, private="none")
            continue
        failed = restore_private(run.grid, {pid: node}, {pid: private}, timeout)
        run.store.event(
            "client_rejoined",
            round=rnd,
            client=pid,
            node=node,
            private="lost" if failed else "restored",
            from_round=run.private_round.get(pid, 0),
        )
    if changed:
        run.protocol.nodes_changed(run.node_pid)
