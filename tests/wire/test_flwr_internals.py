"""Pins each Flower internal the engines rely on: a flwr upgrade that moves one fails here."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from simulator.engines.inprocess import NODE_ID_OFFSET, InProcessGrid
from wire import flwr_internals as fi


def test_task_identity_feeds_message_metadata_and_is_restored() -> None:
    before = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    with fi.task_identity(run_id=77, node_id=fi.SUPERLINK_NODE_ID, task_id=5):
        msg = Message(RecordDict(), 1234, "train")
        with fi.task_identity(run_id=77, node_id=1234, task_id=9):
            assert TaskIdentity.node_id == 1234
        assert TaskIdentity.node_id == fi.SUPERLINK_NODE_ID
    assert (msg.metadata.run_id, msg.metadata.src_node_id) == (77, fi.SUPERLINK_NODE_ID)
    assert msg.metadata.src_task_id == 5 and msg.metadata.dst_node_id == 1234
    assert (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id) == before


def test_set_message_id_and_reply_linkage() -> None:
    with fi.task_identity(run_id=3, node_id=fi.SUPERLINK_NODE_ID, task_id=1):
        msg = Message(RecordDict(), 1001, "train")
    assert msg.metadata.message_id == ""
    fi.set_message_id(msg, "abc")
    assert msg.metadata.message_id == "abc"
    assert Message(RecordDict(), reply_to=msg).metadata.reply_to_message_id == "abc"


def test_copy_message_copies_metadata_and_keeps_content_or_error() -> None:
    with fi.task_identity(run_id=3, node_id=fi.SUPERLINK_NODE_ID, task_id=1):
        msg = Message(
            RecordDict({"a": ArrayRecord({"w": Array(np.ones(2))})}), 1001, "train.x", group_id="4"
        )
    fi.set_message_id(msg, "m1")
    content = RecordDict()
    dup = fi.copy_message(msg, content)
    assert dup.metadata == msg.metadata and dup.metadata is not msg.metadata
    assert dup.content is content
    err = Message(Error(code=fi.CLIENT_APP_RAISED_EXCEPTION, reason="r"), reply_to=msg)
    err_dup = fi.copy_message(err, None)
    assert err_dup.has_error() and err_dup.error == err.error
    assert err_dup.metadata.reply_to_message_id == "m1"


def test_make_run_is_what_grids_accept() -> None:
    run = fi.make_run(42, {"a": 1})
    assert isinstance(run, Run) and run.run_id == 42 and run.override_config == {"a": 1}
    grid = InProcessGrid(ClientApp(), 1, {}, run_id=42)
    grid.set_run(run)
    assert grid.run == run


def test_constants_the_engine_depends_on() -> None:
    # Virtual node ids must never collide with the SuperLink's own id nor 0 ("unset").
    assert 0 < fi.SUPERLINK_NODE_ID < NODE_ID_OFFSET
    assert fi.CLIENT_APP_RAISED_EXCEPTION == 2 and fi.UNKNOWN_ERROR == 0
