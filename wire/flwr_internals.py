"""Every Flower internal the project touches, one small function per concern (flwr 1.42.0).

These names are not part of Flower's public API and move between releases. Each one is pinned by
`tests/wire/test_flwr_internals.py`, so an upgrade of flwr fails there first, naming what moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from flwr.app import Error, Message, Metadata, RecordDict
from flwr.app.message.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID as _SUPERLINK_NODE_ID
from flwr.common.constant import ErrorCode
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

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
    building a Message from given metadata goes through Flower's internal `make_message`.
    """
    m = message.metadata
    metadata = Metadata(
        run_id=m.run_id,
        message_id=m.message_id,
        src_node_id=m.src_node_id,
        dst_node_id=m.dst_node_id,
        reply_to_message_id=m.reply_to_message_id,
        group_id=m.group_id,
        created_at=m.created_at,
        ttl=m.ttl,
        message_type=m.message_type,
        src_task_id=m.src_task_id,
        dst_task_id=m.dst_task_id,
    )
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
