"""The protocol registry and the round loop's steps, with protocols other than fedavg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedgan.clients.app import app as real_client_app
from fedgan.simulator.engines.runner import check_scenario, run_federated
from fedgan.simulator.store import load_run
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from tests.conftest import tiny

TWICE = '''
import numpy as np
from fedgan.server.protocols import Expect, Protocol, ProtocolState
from fedgan.simulator.messages import GENERATOR, TrainInstruction, select, split_arrays
from fedgan.wire.codec import content
from fedgan.wire.records import to_record

STEPS = []


class Twice(Protocol):
    """Two exchanges a round, each the plain mean of the replies; state: arrays and a count."""

    exchanges = 2

    def __init__(self, setup, label: str = "x"):
        super().__init__(setup)
        self.arrays, _ = split_arrays(setup.initial, setup.scenario.federation.federate)
        self.combined = 0

    def instructions(self, r, step):
        STEPS.append((r.number, step, tuple(r.clients)))
        config = TrainInstruction(r.number).config()
        return r.send(content(arrays=to_record(self.arrays), config=config))

    def expect(self, r, step):
        return Expect({k: v.shape for k, v in self.arrays.items()})

    def combine(self, r, step, replies):
        got = [rep.arrays() for rep in replies]
        self.arrays = {k: np.mean([a[k] for a in got], axis=0) for k in self.arrays}
        self.combined += 1

    def generator(self):
        return select(self.arrays, GENERATOR)

    def state(self):
        return ProtocolState(arrays=dict(self.arrays), data={"combined": self.combined})

    def load_state(self, state):
        self.arrays = dict(state.arrays)
        self.combined = state.data["combined"]
'''


def _plugin(tmp_path: Path) -> str:
    path = tmp_path / "twice.py"
    path.write_text(TWICE)
    return f"{path}:Twice"


def test_unknown_protocol_lists_the_allowed_ones(tmp_path: Path) -> None:
    problems = check_scenario(tiny(federation={"protocol": "mdgann"}))
    assert problems == [
        "federation.protocol: unknown protocol 'mdgann'; did you mean 'mdgan'? allowed: "
        "dpfedavg_gan, fedavg, mdgan, uagan, or a 'module:attr' / 'file.py:attr' plug-in"
    ]
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(tiny(federation={"protocol": "mdgann"}).model_dump(mode="json")))
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["validate", str(path)])
    assert out.exit_code == 2
    assert (
        str(path) in out.output and "federation.protocol" in out.output and "fedavg" in out.output
    )


def test_protocol_params_and_plugin_types_are_checked(tmp_path: Path) -> None:
    assert check_scenario(tiny(federation={"protocol_params": {"mu": 1}})) == [
        "federation.protocol_params.mu: fedavg has no such parameter; allowed: (none)"
    ]
    spec = _plugin(tmp_path)
    bad = check_scenario(tiny(federation={"protocol": spec, "protocol_params": {"labl": "y"}}))
    assert bad == [f"federation.protocol_params.labl: {spec} has no such parameter; allowed: label"]
    assert (
        check_scenario(tiny(federation={"protocol": spec, "protocol_params": {"label": "y"}})) == []
    )
    other = tmp_path / "other.py"
    other.write_text("class NotAProtocol:\n    pass\n")
    (problem,) = check_scenario(tiny(federation={"protocol": f"{other}:NotAProtocol"}))
    assert (
        problem.startswith("federation.protocol:")
        and "subclass of fedgan.server.protocols.Protocol" in problem
    )


class Recording:
    """The real ClientApp, recording every train reply's metrics by (partition, round)."""

    def __init__(self) -> None:
        self.replies: dict[tuple[int, int], list[dict[str, float]]] = {}
        self.app = ClientApp()
        self.app.train()(self.train)
        self.app.evaluate()(lambda m, c: real_client_app(m, c))
        self.app.query()(lambda m, c: real_client_app(m, c))

    def train(self, msg: Message, context: Context) -> Message:
        reply = real_client_app(msg, context)
        pid = int(context.node_config["partition-id"])
        rnd = int(msg.content["config"]["server-round"])
        met = reply.content["metrics"]
        scalars = {k: float(v) for k, v in met.items() if isinstance(v, int | float)}
        self.replies.setdefault((pid, rnd), []).append(scalars)
        return reply


def test_several_exchanges_a_round_average_the_client_statistics(tmp_path: Path) -> None:
    from fedgan.server.app import RUN_DIR_KEY
    from fedgan.server.app import app as server_app
    from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
    from fedgan.simulator.scenario import resolved_yaml
    from fedgan.simulator.store import RunStore
    from fedgan.wire.records import RUN_CONFIG_KEY

    s = tiny(federation={"rounds": 2, "protocol": _plugin(tmp_path), "clients_per_round": 3})
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    client = Recording()
    grid = InProcessGrid(client.app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)})
    run_serverapp(server_app, grid)
    import sys

    where = str(tmp_path / "twice.py")
    module = next(m for m in sys.modules.values() if getattr(m, "__file__", None) == where)
    assert [(rnd, step) for rnd, step, _ in module.STEPS] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    m = load_run(store.path).metrics
    for (pid, rnd), replies in client.replies.items():
        assert len(replies) == 2, "each sampled client answered both exchanges"
        rows = m.query(f"scope == 'client' and client == {pid} and round == {rnd} and group == ''")
        got = dict(zip(rows["metric"], rows["value"], strict=True))
        for key in ("train.g_loss", "local.coverage", "bytes.sent"):
            expected = np.mean([r[key] for r in replies])
            assert got[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key
        # The two exchanges of a round really differ (the second starts from the first's mean).
        assert replies[0]["train.g_loss"] != replies[1]["train.g_loss"]
    replies = m.query("metric == 'fed.replies'")["value"].tolist()
    assert replies == [3.0, 3.0]  # mean accepted replies per exchange


def test_a_skipped_exchange_names_its_step(tmp_path: Path) -> None:
    s = tiny(
        federation={"rounds": 1, "protocol": _plugin(tmp_path), "min_replies": 4},
        faults={"dropout": 0.5},
    )
    res = run_federated(s, tmp_path / "runs")
    skipped = [e for e in load_run(res.path).events if e["kind"] == "round_skipped"]
    assert [e["step"] for e in skipped] == [0, 1]
    assert all(e["min_replies"] == 4 and e["replies"] < 4 for e in skipped)
