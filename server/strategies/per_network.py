"""One Flower strategy per network: e.g. FedAvg for the generator, FedMedian for the critic.

Each strategy sees only its own arrays (its state — FedAdam's moments, FedAvgM's momentum —
covers only them); clients receive and send one ArrayRecord with every federated array, so
the ClientApp is the same as with a single strategy.
"""

from __future__ import annotations

from collections.abc import Iterable

from fedgan.simulator.messages import ARRAYS, CONFIG, CRITIC_PREFIXES, METRICS
from fedgan.wire.codec import arrays_of, config_of, with_content
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


def _split(record: ArrayRecord) -> tuple[ArrayRecord, ArrayRecord]:
    gen = ArrayRecord(
        array_dict={k: v for k, v in record.items() if not k.startswith(CRITIC_PREFIXES)}
    )
    crit = ArrayRecord(
        array_dict={k: v for k, v in record.items() if k.startswith(CRITIC_PREFIXES)}
    )
    return gen, crit


def _with_arrays(reply: Message, arrays: ArrayRecord) -> Message:
    return with_content(reply, RecordDict({ARRAYS: arrays, METRICS: reply.content[METRICS]}))


class PerNetwork:
    """Drive `generator` on generator.* arrays and `critic` on critic.* arrays.

    Offers the two calls the round loop makes (`configure_train`, `aggregate_train`) with the
    same signatures as a Flower `Strategy`.
    """

    def __init__(self, generator: Strategy, critic: Strategy) -> None:
        self.generator = generator
        self.critic = critic

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        gen, crit = _split(arrays)
        g_msgs = list(
            self.generator.configure_train(server_round, gen, ConfigRecord(dict(config)), grid)
        )
        c_msgs = list(
            self.critic.configure_train(server_round, crit, ConfigRecord(dict(config)), grid)
        )
        merged = ConfigRecord(
            {
                **(dict(config_of(c_msgs[0])) if c_msgs else {}),
                **(dict(config_of(g_msgs[0])) if g_msgs else {}),
            }
        )
        content = RecordDict({ARRAYS: arrays, CONFIG: merged})
        return [
            Message(
                content, dst_node_id=m.metadata.dst_node_id, message_type=m.metadata.message_type
            )
            for m in g_msgs
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, None]:
        replies = list(replies)
        parts = [_split(arrays_of(r)) for r in replies]
        gen, _ = self.generator.aggregate_train(
            server_round, [_with_arrays(r, p[0]) for r, p in zip(replies, parts, strict=True)]
        )
        crit, _ = self.critic.aggregate_train(
            server_round, [_with_arrays(r, p[1]) for r, p in zip(replies, parts, strict=True)]
        )
        if gen is None or crit is None:
            return None, None
        return ArrayRecord(array_dict={**dict(gen.items()), **dict(crit.items())}), None
