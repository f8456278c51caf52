"""The ClientApp on its own: query, train and evaluate replies of one real node."""

from __future__ import annotations

import numpy as np
import pytest
from fedgan.clients.app import app as client_app
from fedgan.simulator.engines.inprocess import InProcessGrid
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.wire import flwr_internals as fi
from fedgan.wire.records import PRIVATE_STATE as PRIVATE
from fedgan.wire.records import RUN_CONFIG_KEY, to_record
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from tests.conftest import tiny


def _ask(grid: InProcessGrid, content: RecordDict, kind: str) -> list[Message]:
    with fi.task_identity(grid.run.run_id, fi.SUPERLINK_NODE_ID, 1):
        msgs = [Message(content, n, kind) for n in grid.get_node_ids()]
        return list(grid.send_and_receive(msgs))


def test_train_evaluate_and_query_replies() -> None:
    s = tiny(federation={"federate": "generator"})
    data = federated_data(s)
    grid = InProcessGrid(client_app, 4, {RUN_CONFIG_KEY: s.to_json()})
    ids = _ask(grid, RecordDict({"config": ConfigRecord({})}), MessageType.QUERY)
    assert [int(r.content["metrics"]["partition-id"]) for r in ids] == [0, 1, 2, 3]

    arrays, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "generator")
    content = RecordDict({"arrays": to_record(arrays), "config": ConfigRecord({"server-round": 1})})
    replies = _ask(grid, content, MessageType.TRAIN)
    G = len(data.groups)
    for pid, reply in enumerate(replies):
        assert not reply.has_error(), reply.error
        sent = reply.content["arrays"]
        assert isinstance(sent, ArrayRecord)
        assert set(sent.keys()) == set(arrays), "only the generator travels"
        met = reply.content["metrics"]
        assert isinstance(met, MetricRecord)
        assert met["num-examples"] == len(data.client_train[pid])
        assert met["partition-id"] == pid
        assert len(met["local.recall_hits"]) == G and sum(met["local.group_n"]) == len(
            data.client_held[pid]
        )
        assert 0.0 <= met["local.expected_coverage"] <= 1.0
        private = grid.context_of(pid).state[PRIVATE]
        assert isinstance(private, ArrayRecord)
        assert "critic.net.0.weight" in private and "generator_opt.step" in private

    evals = _ask(
        grid,
        RecordDict({"arrays": to_record(arrays), "config": ConfigRecord({"server-round": 1})}),
        MessageType.EVALUATE,
    )
    for pid, reply in enumerate(evals):
        met = reply.content["metrics"]
        # Per-group counts under the same names as in train replies; coverage only (no recall
        # from the client's own few points).
        n = np.array(met["local.group_n"])
        assert n.sum() == len(data.client_held[pid]) == met["num-examples"]
        assert (np.array(met["local.coverage_hits"]) <= n).all()
        assert "local.recall_hits" not in met and "local.recall" not in met
        # Pooled hits over groups are the client's total coverage (coverage per real point).
        assert sum(met["local.coverage_hits"]) / n.sum() == pytest.approx(met["local.coverage"])
