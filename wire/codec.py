"""Typed instructions and replies (`simulator.messages`) as Flower Messages, and back.

Every record name and key comes from `simulator.messages`; this module only knows how Flower
holds them (a RecordDict of one ArrayRecord, one MetricRecord, one ConfigRecord).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
from fedgan.simulator.messages import (
    ARRAYS,
    ASK_PRIVATE,
    ASK_RESTORE,
    CONFIG,
    METRICS,
    NODE_PARTITION_ID,
    PARTITION_ID,
    ConfigValue,
    EvaluateInstruction,
    EvaluateReply,
    MetricValue,
    Query,
    QueryReply,
    StepInstruction,
    StepReply,
    TrainInstruction,
    TrainReply,
    released,
)
from fedgan.wire.flwr_internals import copy_message
from fedgan.wire.records import from_record, metric_record, to_record
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

__all__ = [
    "answer_query",
    "array_bytes",
    "arrays_of",
    "config_of",
    "content",
    "evaluate_content",
    "metrics_of",
    "partition_id",
    "query_content",
    "read_evaluate",
    "read_evaluate_reply",
    "read_query",
    "read_query_reply",
    "read_step",
    "read_step_reply",
    "read_train",
    "read_train_reply",
    "reply",
    "reply_partition",
    "step_reply",
    "train_reply",
    "with_content",
]


def partition_id(context: Context) -> int:
    """The partition id of the node a ClientApp runs on."""
    return int(context.node_config[NODE_PARTITION_ID])


def content(
    arrays: ArrayRecord | None = None,
    metrics: Mapping[str, MetricValue] | None = None,
    config: Mapping[str, ConfigValue] | None = None,
) -> RecordDict:
    """A message's records: any of the arrays, the metrics and the config."""
    out = RecordDict()
    if arrays is not None:
        out[ARRAYS] = arrays
    if metrics is not None:
        out[METRICS] = metric_record(metrics)
    if config is not None:
        out[CONFIG] = ConfigRecord(dict(config))
    return out


def with_content(msg: Message, records: RecordDict) -> Message:
    """A copy of `msg` (same metadata: sender, reply-to, ...) carrying `records` instead."""
    return copy_message(msg, records)


# --- reading a message's records ---------------------------------------------------------------


def arrays_of(msg: Message) -> ArrayRecord:
    record = msg.content[ARRAYS]
    if not isinstance(record, ArrayRecord):
        raise TypeError(f"the message has no ArrayRecord {ARRAYS!r}")
    return record


def config_of(msg: Message) -> ConfigRecord:
    record = msg.content[CONFIG]
    if not isinstance(record, ConfigRecord):
        raise TypeError(f"the message has no ConfigRecord {CONFIG!r}")
    return record


def metrics_of(msg: Message) -> MetricRecord | None:
    """The reply's MetricRecord, None when it has none (or is an error)."""
    if not msg.has_content():
        return None
    return msg.content.metric_records.get(METRICS)


# --- instructions ------------------------------------------------------------------------------


def evaluate_content(
    generator: Mapping[str, np.ndarray], instruction: EvaluateInstruction
) -> RecordDict:
    """An evaluate instruction: the generator to score (empty: the client's private one)."""
    return content(arrays=to_record(generator), config=instruction.config())


def query_content(query: Query, arrays: ArrayRecord | None = None) -> RecordDict:
    """A query; `arrays`: the private state an `ask: restore` puts back."""
    out = content(config=query.config())
    if arrays is not None:
        out[ARRAYS] = arrays
    return out


def read_train(msg: Message) -> TrainInstruction:
    """A train message's instruction: its round, FedProx's μ (when sent) and whether the client
    takes critic steps only (`critic-only`, DP-FedAvg-GAN; absent: a full local round)."""
    return TrainInstruction.from_config(config_of(msg))


def read_step(msg: Message) -> StepInstruction | None:
    """The generator step a train message asks for (None: a plain fedavg train message)."""
    return StepInstruction.from_config(config_of(msg))


def read_evaluate(msg: Message) -> EvaluateInstruction:
    return EvaluateInstruction.from_config(config_of(msg))


def read_query(msg: Message) -> Query:
    """The query's ask (ValueError naming the allowed ones when unknown)."""
    return Query.from_config(msg.content.config_records.get(CONFIG))


# --- replies -----------------------------------------------------------------------------------


def reply(
    msg: Message, metrics: Mapping[str, MetricValue], arrays: ArrayRecord | None = None
) -> Message:
    """The reply to instruction `msg`: `arrays` (if any), then the metrics."""
    return Message(content(arrays=arrays, metrics=metrics), reply_to=msg)


def answer_query(
    msg: Message,
    partition: int,
    load: Callable[[], Mapping[str, np.ndarray] | None],
    keep: Callable[[dict[str, np.ndarray]], None],
    make_record: Callable[[Mapping[str, np.ndarray]], ArrayRecord] = to_record,
) -> Message:
    """The answer to query `msg` from the node holding `partition` — the one query protocol,
    wherever the node's private state lives: `load()` gives it (None: it has none), `keep`
    takes what a restore sends. ValueError names the allowed asks."""
    ask = read_query(msg).ask
    if ask == ASK_PRIVATE:
        private = load()
        # A fresh record: the reply must not alias the state the node keeps.
        arrays = make_record(private) if private is not None else ArrayRecord()
        return reply(msg, QueryReply(partition, private is not None).metrics(), arrays)
    if ask == ASK_RESTORE:
        sent = msg.content.array_records.get(ARRAYS)
        keep(from_record(sent) if sent is not None else {})
    return reply(msg, QueryReply(partition).metrics())


def train_reply(
    msg: Message, stats: TrainReply, arrays: ArrayRecord, seconds: float, withhold: bool = False
) -> Message:
    """The reply to train instruction `msg`: the client's arrays and `stats`, with the wall time
    `seconds` (a `time.` key: the server keeps it out of the metrics table). `withhold`
    (under privacy): only the `released` metrics."""
    m = replace(stats, seconds=seconds).metrics()
    return reply(msg, released(m) if withhold else m, arrays)


def step_reply(
    msg: Message, stats: StepReply, arrays: ArrayRecord, seconds: float, withhold: bool = False
) -> Message:
    """The reply to step instruction `msg`: the client's answer `arrays` and `stats`, with the
    wall time `seconds` (kept out of the metrics table); `withhold`: as `train_reply`."""
    m = replace(stats, seconds=seconds).metrics()
    return reply(msg, released(m) if withhold else m, arrays)


def array_bytes(msg: Message) -> int:
    """Bytes of a message's arrays as they travel (Flower's serialized buffers, npy headers
    included; metrics and config records are not counted). 0 for an error reply."""
    if not msg.has_content():
        return 0
    return sum(len(a.data) for rec in msg.content.array_records.values() for a in rec.values())


def reply_partition(msg: Message) -> int:
    """The partition id a reply says it comes from (KeyError when it says none)."""
    return int(_metrics(msg)[PARTITION_ID])  # type: ignore[arg-type]


def read_train_reply(msg: Message) -> TrainReply:
    return TrainReply.from_metrics(_metrics(msg))


def read_step_reply(msg: Message) -> StepReply:
    return StepReply.from_metrics(_metrics(msg))


def read_evaluate_reply(msg: Message) -> EvaluateReply:
    return EvaluateReply.from_metrics(_metrics(msg))


def read_query_reply(msg: Message) -> QueryReply | None:
    """The answer, None when the reply is an error or carries no partition id."""
    met = metrics_of(msg)
    try:
        return QueryReply.from_metrics(met) if met is not None else None
    except (KeyError, TypeError):
        return None


def _metrics(msg: Message) -> MetricRecord:
    met = metrics_of(msg)
    if met is None:
        raise TypeError(f"the reply has no MetricRecord {METRICS!r}")
    return met
