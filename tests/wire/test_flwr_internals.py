"""Pins each Flower internal the engines rely on: a flwr upgrade that moves one fails here."""

from __future__ import annotations

import numpy as np
from fedgan.simulator.engines.inprocess import NODE_ID_OFFSET, InProcessGrid
from fedgan.wire import flwr_internals as fi
from flwr.app import Array, ArrayRecord, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


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


def test_array_fields_are_what_array_init_writes() -> None:
    """`fill_numpy_array` writes the fields `Array(ndarray)` ends with: same dict, same bytes."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    ref = Array(a)
    assert set(vars(ref)) == {"dtype", "shape", "stype", "data", "_is_dirty"}
    got = Array.__new__(Array)
    fi.fill_numpy_array(got, ref.dtype, tuple(ref.shape), ref.data)
    assert vars(got) == vars(ref)
    assert got.deflate() == ref.deflate()
    np.testing.assert_array_equal(got.numpy(), a)


def test_check_and_log_replies_keeps_what_a_stock_strategy_aggregates() -> None:
    from flwr.app import MetricRecord
    from flwr.serverapp.strategy import FedAvg

    with fi.task_identity(run_id=3, node_id=fi.SUPERLINK_NODE_ID, task_id=1):
        ins = Message(RecordDict(), 1001, "train")
    w = ArrayRecord({"w": Array(np.ones(2))})
    good = Message(RecordDict({"arrays": w, "m": MetricRecord({"num-examples": 1})}), reply_to=ins)
    two = Message(
        RecordDict(
            {
                "a": ArrayRecord({"w": Array(np.ones(2))}),
                "b": ArrayRecord({"w": Array(np.ones(2))}),
                "m": MetricRecord({"num-examples": 1}),
            }
        ),
        reply_to=ins,
    )
    err = Message(Error(code=fi.CLIENT_APP_RAISED_EXCEPTION, reason="x"), reply_to=ins)
    import pytest

    assert fi.check_and_log_replies(FedAvg(), [good, err]) == [good]
    with pytest.raises(Exception):  # noqa: B017 - Flower's own error type for mixed records
        fi.check_and_log_replies(FedAvg(), [good, two])


def test_aggregate_arrayrecords_is_the_weighted_mean() -> None:
    from flwr.app import MetricRecord

    contents = [
        RecordDict({"a": ArrayRecord({"w": Array(np.full(2, v))}), "m": MetricRecord({"k": w})})
        for v, w in ((1.0, 1.0), (4.0, 3.0))
    ]
    out = fi.aggregate_arrayrecords(contents, "k")
    np.testing.assert_allclose(out["w"].numpy(), np.full(2, (1 * 1 + 4 * 3) / 4))
    assert issubclass(fi.AggregationError, Exception) and callable(fi.log)


def test_simulation_entry_point_and_telemetry_switch() -> None:
    import importlib.util
    import inspect

    assert hasattr(fi.telemetry_flag(), "FLWR_TELEMETRY_ENABLED")
    if importlib.util.find_spec("ray") is None:
        return  # flwr.simulation needs the ray extra
    from flwr.simulation import run_simulation

    params = inspect.signature(run_simulation).parameters
    for name in ("server_app", "client_app", "num_supernodes", "backend_name", "backend_config"):
        assert name in params


def test_flwr_is_the_pinned_version_and_pinned_once() -> None:
    """Every internal above was read off this version; the pin lives in pyproject.toml only."""
    import re
    import tomllib
    from importlib import metadata
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins = [d for d in project["dependencies"] if re.match(r"flwr\b", d)]
    assert pins == ["flwr==1.42.0"] and metadata.version("flwr") == "1.42.0"
    extras = [d for ds in project.get("optional-dependencies", {}).values() for d in ds]
    assert not [d for d in extras if re.match(r"flwr\b", d)], "no second flwr pin in the extras"
    code = [p for p in (root / "simulator").rglob("*.py") if "1.42.0" in p.read_text()]
    assert code == [], f"a flwr version written in code: {code}"
