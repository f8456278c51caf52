"""Ray is optional: a clear error without it; the run_config wrappers work on any runtime."""

from __future__ import annotations

import importlib.util

import pytest
from fedgan.simulator.engines.inprocess import run_inprocess
from fedgan.simulator.engines.ray_engine import (
    INSTALL_HINT,
    RayNotInstalledError,
    run_ray,
    with_run_config,
)
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.mark.skipif(HAS_RAY, reason="Ray is installed")
def test_missing_ray_raises_a_clear_error() -> None:
    with pytest.raises(RayNotInstalledError, match=r"pip install -e '\.\[ray\]'") as info:
        run_ray(ServerApp(), ClientApp(), 2, {"a": 1})
    assert isinstance(info.value, ImportError) and INSTALL_HINT in str(info.value)


def test_run_config_wrappers_show_config_and_leave_the_context_unchanged() -> None:
    seen: dict[str, object] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        seen["server"] = dict(context.run_config)
        msgs = [Message(RecordDict(), n, "query") for n in grid.get_node_ids()]
        seen["replies"] = list(grid.send_and_receive(msgs))

    client = ClientApp()

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"c": ConfigRecord(dict(context.run_config))}), reply_to=msg)

    config: dict[str, bool | int | float | str] = {"scenario": "{}", "seed": 3}
    wrapped_server, wrapped_client = with_run_config(server, client, config)
    # Runtime run_config is empty, as under run_simulation; the in-process grid turns any
    # change to a node's run_config into an error reply, as Flower's simulation does.
    run_inprocess(wrapped_server, wrapped_client, 2, {})
    assert seen["server"] == config
    replies = seen["replies"]
    assert isinstance(replies, list) and len(replies) == 2
    assert all(not m.has_error() and dict(m.content["c"]) == config for m in replies)
