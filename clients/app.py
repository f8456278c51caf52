"""The Flower ClientApp: local GAN training and local evaluation on one partition.

A thin adapter over `simulator.federation`. What is not federated (a private critic, both
optimizers' moments) stays in `context.state["private"]` across rounds.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from clients.records import from_record, metric_record, scenario_from, to_record
from simulator.federation import client_train, evaluate_locally, federated_data, initial_state, make_gan

app = ClientApp()

PRIVATE = "private"


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Receive the global networks, train locally, reply with the federated ones."""
    s = scenario_from(context.run_config)
    pid = _partition_id(context)
    config = msg.content["config"]
    round_ = int(config["server-round"])
    private = from_record(context.state[PRIVATE]) if PRIVATE in context.state else None
    mu = config.get("proximal-mu")
    update = client_train(
        s, pid, round_, from_record(msg.content["arrays"]), private,
        prox_mu=float(mu) if mu is not None else None,
    )
    context.state[PRIVATE] = to_record(update.private) if update.private else ArrayRecord()
    rec = update.received
    metrics = {**update.metrics, "local.recall_hits": rec.recall_hits,
               "local.coverage_hits": rec.coverage_hits, "local.group_n": rec.group_n}
    return Message(RecordDict({"arrays": to_record(update.arrays),
                               "metrics": metric_record(metrics)}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global generator against this client's held-out split (counts per group)."""
    s = scenario_from(context.run_config)
    pid = _partition_id(context)
    round_ = int(msg.content["config"]["server-round"])
    data = federated_data(s)
    gan = make_gan(s, data)
    state = initial_state(s, gan).load_arrays(from_record(msg.content["arrays"]))
    ev = evaluate_locally(s, gan, state, data, pid, round_)
    metrics = {
        "partition-id": float(pid), "num-examples": float(ev.n_real), "recall": ev.recall,
        "coverage": ev.coverage, "expected_coverage": ev.expected_coverage,
        "recall_hits": ev.recall_hits, "coverage_hits": ev.coverage_hits, "group_n": ev.group_n,
    }
    return Message(RecordDict({"metrics": metric_record(metrics)}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server this node's partition id (Flower's node ids are random)."""
    from flwr.app import MetricRecord

    return Message(RecordDict({"metrics": MetricRecord(
        {"partition-id": _partition_id(context)})}), reply_to=msg)
