"""The in-process grid runs real Flower apps: FedAvg rounds, per-node state, errors, determinism."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fedgan.simulator.engines.inprocess import (
    NODE_ID_OFFSET,
    InProcessGrid,
    node_id_of,
    partition_id_of,
    run_inprocess,
    run_serverapp,
)
from fedgan.wire import flwr_internals as fi
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

W0 = np.array([0.5, -1.25, 3.0, 7.75], dtype=np.float32)
NUM_NODES = 5
NUM_ROUNDS = 3
BASE_CONFIG: dict[str, bool | int | float | str] = {"scale": 2.5, "tag": "toy", "flag": True}


@dataclass
class RoundLog:
    """What the server saw in one round."""

    sent: np.ndarray
    replies: list[Message]
    aggregated: np.ndarray
    metrics: MetricRecord | None


@dataclass
class ServerLog:
    """What the server saw in one run."""

    run_config: dict[str, Any] = field(default_factory=dict)
    rounds: list[RoundLog] = field(default_factory=list)


def make_server_app(
    log: ServerLog, num_rounds: int = NUM_ROUNDS, size: int | None = None
) -> ServerApp:
    """A ServerApp whose loop calls a stock FedAvg's configure_train/aggregate_train."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        log.run_config = dict(context.run_config)
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=1)
        w = W0 if size is None else np.linspace(-1, 1, size, dtype=np.float32)
        arrays = ArrayRecord({"w": Array(w)})
        for rnd in range(1, num_rounds + 1):
            messages = strategy.configure_train(rnd, arrays, ConfigRecord({"lr": 0.1}), grid)
            replies = list(grid.send_and_receive(messages))
            new_arrays, metrics = strategy.aggregate_train(rnd, replies)
            assert new_arrays is not None
            log.rounds.append(
                RoundLog(arrays["w"].numpy(), replies, new_arrays["w"].numpy(), metrics)
            )
            arrays = new_arrays

    return app


def make_client_app() -> ClientApp:
    """Adds its partition id to the array; weight = partition id + 1; counts its calls in state."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        counter = int(context.state["counter"]["n"]) if "counter" in context.state else 0
        # Written before a possible failure: a failed call must not keep it.
        context.state["counter"] = MetricRecord({"n": counter + 1})
        if pid == context.run_config.get("fail-partition", -1):
            raise ValueError(f"boom on partition {pid}")
        w = msg.content["arrays"]["w"].numpy()
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(w + np.float32(pid))}),
                "metrics": MetricRecord(
                    {
                        "num-examples": pid + 1,
                        "counter": counter,
                        "scale": float(context.run_config["scale"]),
                        "num-partitions": int(context.node_config["num-partitions"]),
                        "server-round": int(msg.content["config"]["server-round"]),
                    }
                ),
            }
        )
        return Message(content, reply_to=msg)

    return app


def expected_mean(prev: np.ndarray, partitions: list[int]) -> np.ndarray:
    """FedAvg by hand: mean of (prev + p) weighted by p + 1."""
    weights = np.array([p + 1 for p in partitions], dtype=np.float64)
    stacked = np.stack([prev.astype(np.float64) + p for p in partitions])
    return np.average(stacked, axis=0, weights=weights)


def run(run_config: dict[str, bool | int | float | str] | None = None) -> ServerLog:
    log = ServerLog()
    config = dict(BASE_CONFIG if run_config is None else run_config)
    run_inprocess(make_server_app(log), make_client_app(), NUM_NODES, config)
    return log


def metric(reply: Message, key: str) -> float:
    return float(reply.content["metrics"][key])  # type: ignore[arg-type]


def test_node_ids_follow_partition_order() -> None:
    grid = InProcessGrid(make_client_app(), NUM_NODES, BASE_CONFIG)
    ids = grid.get_node_ids()
    assert ids == [node_id_of(p) for p in range(NUM_NODES)] == sorted(ids)
    assert [partition_id_of(n) for n in ids] == list(range(NUM_NODES))
    assert fi.SUPERLINK_NODE_ID not in ids and 0 not in ids
    assert [n.node_id for n in grid.get_nodes()] == ids
    with pytest.raises(ValueError):
        partition_id_of(NODE_ID_OFFSET - 1)
    for p in range(NUM_NODES):
        assert grid.context_of(p).node_config == {"partition-id": p, "num-partitions": NUM_NODES}


def test_fedavg_rounds_match_hand_computed_weighted_mean() -> None:
    log = run()
    assert len(log.rounds) == NUM_ROUNDS
    prev = W0.astype(np.float64)
    for rnd, r in enumerate(log.rounds, start=1):
        assert [partition_id_of(m.metadata.src_node_id) for m in r.replies] == list(range(5))
        assert all(metric(m, "server-round") == rnd for m in r.replies)
        want = expected_mean(prev, list(range(NUM_NODES)))
        np.testing.assert_allclose(r.aggregated, want, rtol=1e-6)
        prev = want
    # Each round adds sum p(p+1) / sum(p+1) = 40/15.
    np.testing.assert_allclose(log.rounds[-1].aggregated, W0 + 3 * 40 / 15, rtol=1e-6)


def test_state_persists_per_node_across_rounds() -> None:
    log = ServerLog()
    grid = InProcessGrid(make_client_app(), NUM_NODES, BASE_CONFIG)
    run_serverapp(make_server_app(log), grid, BASE_CONFIG)
    for rnd, r in enumerate(log.rounds):
        assert [metric(m, "counter") for m in r.replies] == [rnd] * NUM_NODES
    for p in range(NUM_NODES):
        assert grid.context_of(p).state["counter"]["n"] == NUM_ROUNDS
    assert len(grid.calls) == NUM_NODES * NUM_ROUNDS and all(c.ok for c in grid.calls)


def test_run_config_reaches_both_apps() -> None:
    log = run()
    assert log.run_config == BASE_CONFIG
    for r in log.rounds:
        assert all(metric(m, "scale") == 2.5 for m in r.replies)
        assert all(metric(m, "num-partitions") == NUM_NODES for m in r.replies)


def test_client_exception_is_an_error_reply_for_that_node_only() -> None:
    log = ServerLog()
    config = {**BASE_CONFIG, "fail-partition": 2}
    grid = InProcessGrid(make_client_app(), NUM_NODES, config)
    run_serverapp(make_server_app(log), grid, config)
    prev = W0.astype(np.float64)
    for r in log.rounds:
        errors = [m for m in r.replies if m.has_error()]
        assert len(r.replies) == NUM_NODES and len(errors) == 1
        assert partition_id_of(errors[0].metadata.src_node_id) == 2
        assert errors[0].error.code == fi.CLIENT_APP_RAISED_EXCEPTION
        assert errors[0].error.reason == "<class 'ValueError'>:<'boom on partition 2'>"
        want = expected_mean(prev, [0, 1, 3, 4])
        np.testing.assert_allclose(r.aggregated, want, rtol=1e-6)
        prev = want
    # The failed calls' state changes were discarded, as Flower discards them.
    assert "counter" not in grid.context_of(2).state
    assert grid.context_of(3).state["counter"]["n"] == NUM_ROUNDS
    assert [c.ok for c in grid.calls].count(False) == NUM_ROUNDS


def test_flowers_own_strategy_loop_runs_on_the_grid() -> None:
    out: dict[str, np.ndarray] = {}
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=NUM_NODES)
        result = strategy.start(grid, ArrayRecord({"w": Array(W0)}), num_rounds=2)
        out["w"] = result.arrays["w"].numpy()

    run_inprocess(app, make_client_app(), NUM_NODES, BASE_CONFIG)
    np.testing.assert_allclose(out["w"], W0 + 2 * 40 / 15, rtol=1e-6)


def test_two_runs_are_bit_identical() -> None:
    # FedAvg's sample_nodes shuffles with the global `random`: different seeds, same result.
    random.seed(1)
    a = run()
    random.seed(2)
    b = run()
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        assert ra.aggregated.tobytes() == rb.aggregated.tobytes()
        assert [m.metadata.message_id for m in ra.replies] == [
            m.metadata.message_id for m in rb.replies
        ]
        assert ra.metrics == rb.metrics


def test_messages_do_not_alias_between_nodes_or_sides() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        # FedAvg sends one RecordDict to every node: this must not reach the next node.
        assert "config" in msg.content
        del msg.content["config"]
        context.state["kept"] = msg.content["arrays"]
        return Message(RecordDict({"arrays": context.state["kept"]}), reply_to=msg)

    grid = InProcessGrid(app, 3, {})
    with fi.task_identity(grid.run.run_id, fi.SUPERLINK_NODE_ID, 1):
        content = RecordDict({"arrays": ArrayRecord({"w": Array(W0)}), "config": ConfigRecord()})
        replies = grid.send_and_receive([Message(content, n, "train") for n in grid.get_node_ids()])
    assert all(not m.has_error() for m in replies) and "config" in content
    replies[0].content["arrays"]["w"] = Array(np.zeros(4, dtype=np.float32))
    np.testing.assert_array_equal(grid.context_of(0).state["kept"]["w"].numpy(), W0)


def test_push_pull_semantics_and_dropped_messages(caplog: pytest.LogCaptureFixture) -> None:
    grid = InProcessGrid(make_client_app(), 3, BASE_CONFIG)
    with fi.task_identity(grid.run.run_id, fi.SUPERLINK_NODE_ID, 1):
        content = RecordDict(
            {"arrays": ArrayRecord({"w": Array(W0)}), "config": ConfigRecord({"server-round": 1})}
        )
        msgs = [Message(content, n, "train") for n in reversed(grid.get_node_ids())]
        msgs.append(Message(content, 999, "train"))
        with caplog.at_level(logging.ERROR):
            ids = grid.push_messages(msgs)
        assert "no node with id 999" in caplog.text
        assert ids == [m.metadata.message_id for m in msgs[:3]]
        # Executed in node-id order whatever the push order.
        assert [c.partition_id for c in grid.calls] == [0, 1, 2]
        replies = grid.pull_messages(ids)
        assert [partition_id_of(r.metadata.src_node_id) for r in replies] == [0, 1, 2]
        assert {r.metadata.reply_to_message_id for r in replies} == set(ids)
        assert grid.pull_messages(ids) == []  # handed over once, as Flower does
        with pytest.raises(ValueError, match="Invalid message"):
            grid.push_messages([Message(RecordDict(), reply_to=msgs[0])])
        created = grid.create_message(content, "train", grid.get_node_ids()[0], "7")
        assert created.metadata.group_id == "7" and created.metadata.run_id == grid.run.run_id


def test_bad_replies_and_run_config_changes_become_error_replies() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = context.node_config["partition-id"]
        if pid == 0:
            return Message(RecordDict(), context.node_id, "train")  # not a reply
        if pid == 1:
            context.run_config["x"] = 1
        return Message(RecordDict(), reply_to=msg)

    grid = InProcessGrid(app, 3, {"x": 0})
    with fi.task_identity(grid.run.run_id, fi.SUPERLINK_NODE_ID, 1):
        replies = grid.send_and_receive(
            [Message(RecordDict(), n, "train") for n in grid.get_node_ids()]
        )
    assert [m.has_error() for m in replies] == [True, True, False]
    assert "not a reply" in str(replies[0].error.reason)
    assert "run_config" in str(replies[1].error.reason)
    assert all(m.error.code == fi.UNKNOWN_ERROR for m in replies[:2])


def test_grid_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="run_config"):
        InProcessGrid(make_client_app(), 2, {"nested": {"a": 1}})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        InProcessGrid(make_client_app(), 0, {})
    with pytest.raises(ValueError, match="partitions"):
        InProcessGrid(make_client_app(), 2, {}, states={5: RecordDict()})
    seed = RecordDict({"counter": MetricRecord({"n": 10})})
    grid = InProcessGrid(make_client_app(), 2, {}, run_id=42, states={1: seed})
    assert grid.context_of(1).state["counter"]["n"] == 10
    assert grid.context_of(1).state is not seed and "counter" not in grid.context_of(0).state
    assert grid.states()[1]["counter"]["n"] == 10
    assert grid.run.run_id == 42 and grid.context_of(0).run_id == 42
    with pytest.raises(ValueError):
        grid.set_run(fi.make_run(43, {}))
    grid.set_run(fi.make_run(42, {}))


def test_one_inprocess_run_at_a_time() -> None:
    inner = ServerApp()

    @inner.main()
    def inner_main(grid: Grid, context: Context) -> None:
        run_inprocess(ServerApp(), make_client_app(), 1, {})

    with pytest.raises(RuntimeError, match="another in-process run"):
        run_inprocess(inner, make_client_app(), 1, {})


@pytest.mark.parametrize("size", [4, 100_000])
def test_time_per_message(size: int) -> None:
    nodes, rounds = 100, 3
    log = ServerLog()
    grid = InProcessGrid(make_client_app(), nodes, BASE_CONFIG)
    start = time.perf_counter()
    run_serverapp(make_server_app(log, rounds, size=size), grid, BASE_CONFIG)
    wall = time.perf_counter() - start
    per_msg = wall / (nodes * rounds)
    client = sum(c.seconds for c in grid.calls) / len(grid.calls)
    print(
        f"\n{nodes} nodes x {rounds} rounds, {size} float32: {wall:.3f} s in all, "
        f"{per_msg * 1e3:.3f} ms per message (ClientApp call incl. copies {client * 1e3:.3f} ms)"
    )
    assert len(grid.calls) == nodes * rounds
    assert per_msg < 0.05  # loose: shared, busy CPUs
