"""The Flower ClientApp: local GAN training and local evaluation on one partition.

A thin adapter over `simulator.federation`. What is not federated (a private critic, both
optimizers' moments) stays in `context.state["private"]` across rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.records import from_record, metric_record, scenario_from, to_record
from simulator.federation import (
    ClientUpdate,
    TrainRequest,
    client_train,
    evaluate_locally,
    federated_data,
    initial_state,
    make_gan,
)

app = ClientApp()

PRIVATE = "private"


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _arrays(msg: Message) -> ArrayRecord:
    record = msg.content["arrays"]
    if not isinstance(record, ArrayRecord):
        raise TypeError("the message has no ArrayRecord 'arrays'")
    return record


def _config(msg: Message) -> ConfigRecord:
    record = msg.content["config"]
    if not isinstance(record, ConfigRecord):
        raise TypeError("the message has no ConfigRecord 'config'")
    return record


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Receive the global networks, train locally, reply with the federated ones."""
    t0 = time.perf_counter()
    s = scenario_from(context.run_config)
    stored = context.state.get(PRIVATE)
    private = from_record(stored) if isinstance(stored, ArrayRecord) else None
    r = train_request(msg, _partition_id(context), private)
    update = client_train(s, r.client, r.round, r.global_arrays, r.private, prox_mu=r.prox_mu)
    context.state[PRIVATE] = to_record(update.private) if update.private else ArrayRecord()
    return train_reply(msg, update, time.perf_counter() - t0)


def train_request(
    msg: Message,
    partition_id: int,
    private: dict[str, np.ndarray] | None,
    decode: Callable[[ArrayRecord], dict[str, np.ndarray]] = from_record,
) -> TrainRequest:
    """What a train instruction asks of client `partition_id` (engines that batch clients read
    instructions with this same function; `decode` lets them decode a shared record once)."""
    config = _config(msg)
    mu = config.get("proximal-mu")
    return TrainRequest(
        client=partition_id,
        round=int(config["server-round"]),  # type: ignore[arg-type]
        global_arrays=decode(_arrays(msg)),
        private=private,
        prox_mu=float(mu) if isinstance(mu, int | float) else None,
    )


def train_reply(
    msg: Message,
    update: ClientUpdate,
    seconds: float,
    make_record: Callable[[Mapping[str, np.ndarray]], ArrayRecord] = to_record,
) -> Message:
    """The reply to train instruction `msg`: travelling arrays, metrics, wall time `seconds`."""
    rec = update.received
    metrics = {
        **update.metrics,
        "local.recall_hits": rec.recall_hits,
        "local.coverage_hits": rec.coverage_hits,
        "local.group_n": rec.group_n,
        # Wall time: the server moves `time.*` keys to timings.csv, out of the metrics table.
        "time.client_train": seconds,
    }
    return Message(
        RecordDict({"arrays": make_record(update.arrays), "metrics": metric_record(metrics)}),
        reply_to=msg,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global generator against this client's held-out split (counts per group)."""
    s = scenario_from(context.run_config)
    pid = _partition_id(context)
    round_ = int(_config(msg)["server-round"])  # type: ignore[arg-type]
    data = federated_data(s)
    gan = make_gan(s, data)
    state = initial_state(s, gan)
    received = from_record(_arrays(msg))
    stored = context.state.get(PRIVATE)
    if not received and isinstance(stored, ArrayRecord):  # the generator is private here
        state = state.load_arrays(from_record(stored))
    state = state.load_arrays(received)
    ev = evaluate_locally(s, gan, state, data, pid, round_)
    metrics = {
        "partition-id": float(pid),
        "num-examples": float(ev.n_real),
        "recall": ev.recall,
        "coverage": ev.coverage,
        "expected_coverage": ev.expected_coverage,
        "recall_hits": ev.recall_hits,
        "coverage_hits": ev.coverage_hits,
        "group_n": ev.group_n,
    }
    return Message(RecordDict({"metrics": metric_record(metrics)}), reply_to=msg)


ASK_PARTITION = "partition-id"
ASK_PRIVATE = "private"
ASK_RESTORE = "restore"
QUERIES = (ASK_PARTITION, ASK_PRIVATE, ASK_RESTORE)
"""What a QUERY's `config["ask"]` may be (absent: the partition id)."""


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer the server: this node's partition id (Flower's node ids are random), its private
    state for a checkpoint (`ask: private`) or put a checkpointed one back (`ask: restore`).

    The one place private state crosses to the server: an engine that keeps it elsewhere syncs
    it into `context.state["private"]` around this handler.
    """
    config = msg.content.config_records.get("config")
    ask = config.get("ask", ASK_PARTITION) if config is not None else ASK_PARTITION
    pid = _partition_id(context)
    content = RecordDict()
    if ask == ASK_PRIVATE:
        stored = context.state.get(PRIVATE)
        has = isinstance(stored, ArrayRecord)
        # A copy: the reply must not alias the state the node keeps.
        content["arrays"] = (
            to_record(from_record(stored)) if isinstance(stored, ArrayRecord) else ArrayRecord()
        )
        content["metrics"] = MetricRecord({"partition-id": pid, "has-private": int(has)})
    elif ask == ASK_RESTORE:
        context.state[PRIVATE] = to_record(from_record(_arrays(msg)))
        content["metrics"] = MetricRecord({"partition-id": pid})
    elif ask == ASK_PARTITION:
        content["metrics"] = MetricRecord({"partition-id": pid})
    else:
        raise ValueError(f"unknown query ask={ask!r}; allowed: {', '.join(QUERIES)}")
    return Message(content, reply_to=msg)
