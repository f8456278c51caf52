"""Every Flower internal the project touches, one small function per concern (flwr 1.42.0).

These names are not part of Flower's public API and move between releases. Each one is pinned by
`tests/wire/test_flwr_internals.py`, so an upgrade of flwr fails there first, naming what moved.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flwr.app import Array, Error, Message, Metadata, RecordDict
from flwr.app.message.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID as _SUPERLINK_NODE_ID
from flwr.common.constant import ErrorCode, SType
from flwr.common.logger import log
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "CLIENT_APP_RAISED_EXCEPTION",
    "SUPERLINK_NODE_ID",
    "UNKNOWN_ERROR",
    "AggregationError",
    "Run",
    "aggregate_arrayrecords",
    "check_and_log_replies",
    "copy_message",
    "fill_numpy_array",
    "log",
    "make_run",
    "run_simulation",
    "set_message_id",
    "task_identity",
    "telemetry_flag",
]

# Flower's logger, the error its strategies raise on bad replies, and its weighted mean of
# ArrayRecords (`strategy_utils` is not re-exported by `flwr.serverapp.strategy`): our fair
# strategies aggregate exactly as FedAvg does.

# Node id of the SuperLink: every instruction must come from it (the LinkState's validator rejects
# others) and no SuperNode may use it. flwr 1.42: `flwr.common.constant.SUPERLINK_NODE_ID == 1`.
SUPERLINK_NODE_ID: int = _SUPERLINK_NODE_ID

# Error codes of the error replies Flower's runtimes build (flwr.common.constant.ErrorCode).
CLIENT_APP_RAISED_EXCEPTION: int = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
UNKNOWN_ERROR: int = ErrorCode.UNKNOWN


@contextmanager
def task_identity(run_id: int, node_id: int, task_id: int) -> Iterator[None]:
    """Set Flower's process-global task identity for the block, then restore what was there.

    Why: `Message(content, dst_node_id, message_type)` reads `run_id`, `node_id` (its source) and
    `task_id` from `flwr.supercore.task_identity.TaskIdentity`; Flower's runtimes set them when a
    task starts. The private `_run_id`/`_node_id`/`_task_id` class attributes are used because the
    public properties raise while unset, so the previous (possibly unset) value can't be read back.
    """
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = run_id, node_id, task_id
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def set_message_id(message: Message, message_id: str) -> None:
    """Give a pushed message its id, as Flower's grids do on push (there is no public setter)."""
    message.metadata.__dict__["_message_id"] = message_id


def copy_message(message: Message, content: RecordDict | None) -> Message:
    """A new Message with a copy of `message`'s metadata and `content` (or `message`'s error).

    Why: a delivered message must not alias the sender's objects, as it cannot across a network;
    building a Message from given metadata goes through Flower's internal `make_message`. The
    metadata is copied whole (every field, including any a later Flower adds), not rebuilt
    from a list of names.
    """
    metadata: Metadata = copy.copy(message.metadata)
    if message.has_error():
        error = message.error
        return make_message(metadata=metadata, error=Error(code=error.code, reason=error.reason))
    return make_message(metadata=metadata, content=content)


def make_run(run_id: int, override_config: Mapping[str, bool | int | float | str]) -> Run:
    """The run record a Grid reports through `Grid.run` (`flwr.supercore.run.Run`).

    Why: `Grid.set_run`/`Grid.run` are typed with this internal dataclass; Flower's legacy
    compatibility path reads `grid.run.run_id`.
    """
    run = Run.create_empty(run_id=run_id)
    run.override_config = dict(override_config)
    return run


def check_and_log_replies(strategy: Strategy, replies: Iterable[Message]) -> list[Message]:
    """The train replies a stock strategy would aggregate (errors and replies without exactly
    one ArrayRecord and one MetricRecord dropped, and logged), through Flower's own check —
    the private `Strategy._check_and_log_replies` (flwr 1.42: returns (valid, errors))."""
    valid, _ = strategy._check_and_log_replies(replies, is_train=True)  # type: ignore[attr-defined]
    return list(valid)


NUMPY_STYPE = SType.NUMPY
"""`Array.stype` of an array serialized with `np.save` (`Array(ndarray)`)."""


def fill_numpy_array(array: Array, dtype: str, shape: tuple[int, ...], data: bytes) -> None:
    """Set the fields of a NumPy-serialized `Array` (`array` made with `Array.__new__` or a
    subclass that skips `Array.__init__`) as `Array(ndarray)` ends with them.

    Why: `Array.__init__` parses its arguments and runs per-field hooks, costing more than the
    copy for the thousand small arrays of a vectorized round; flwr 1.42's `Array` keeps four
    fields and a dirty flag (`_is_dirty`, True for a fresh object) in its `__dict__`.
    """
    array.__dict__.update(dtype=dtype, shape=shape, stype=SType.NUMPY, data=data, _is_dirty=True)


def telemetry_flag() -> Any:
    """Flower's module that holds the driver's telemetry switch (`FLWR_TELEMETRY_ENABLED`)."""
    from flwr.supercore import telemetry

    return telemetry


def run_simulation(**kwargs: Any) -> None:
    """`flwr.simulation.run_simulation` — deprecated in 1.42 with no Python successor (only the
    `flwr run` CLI); the Ray engine needs a Python call, so it stays behind this seam."""
    from flwr.simulation import run_simulation as _run_simulation

    _run_simulation(**kwargs)
