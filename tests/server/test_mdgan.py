"""Critic swapping (MD-GAN): each client trains, next round, on another client's critic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.clients.app import app as real_client_app
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import check_scenario
from fedgan.simulator.scenario import resolved_yaml
from fedgan.simulator.store import RunStore
from fedgan.wire.records import RUN_CONFIG_KEY, from_record
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from tests.conftest import tiny

KEY = "critic.net.0.weight"


def test_critics_rotate_between_clients(tmp_path: Path) -> None:
    received: dict[tuple[int, int], np.ndarray] = {}
    sent: dict[tuple[int, int], np.ndarray] = {}
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        received[pid, rnd] = from_record(msg.content["arrays"])[KEY]
        reply = real_client_app(msg, context)
        sent[pid, rnd] = from_record(reply.content["arrays"])[KEY]
        return reply

    app.evaluate()(lambda m, c: real_client_app(m, c))
    app.query()(lambda m, c: real_client_app(m, c))
    s = tiny(strategy={"name": "critic_swap", "params": {"seed": 5}}, federation={"rounds": 3})
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    run_serverapp(
        server_app,
        InProcessGrid(app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}),
    )
    # Round 1: everybody starts from the same global critic.
    assert all(np.array_equal(received[p, 1], received[0, 1]) for p in range(4))
    for rnd in (2, 3):
        sources = []
        for p in range(4):
            match = [q for q in range(4) if np.array_equal(received[p, rnd], sent[q, rnd - 1])]
            assert len(match) == 1, "each client gets exactly one client's last critic"
            sources.append(match[0])
        assert sorted(sources) == [0, 1, 2, 3], "a permutation of the clients' critics"
        assert all(src != p for p, src in enumerate(sources)), "never its own critic back"


def test_critic_swap_needs_the_critics_to_travel() -> None:
    s = tiny(strategy={"name": "critic_swap"}, federation={"federate": "generator"})
    assert any("federate: both" in p for p in check_scenario(s))
