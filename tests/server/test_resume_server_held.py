"""Checkpoint and resume of server-held generators: the server's generator, its optimizer and
EMA, the weighting's state, critics in transit and every client's private critic come back,
so a stopped run ends with the uninterrupted table."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import resume_federated, run_federated
from fedgan.simulator.engines.vectorized import VectorizedGrid
from fedgan.simulator.scenario import Scenario, resolved_yaml
from fedgan.simulator.store import RunStore, load_run
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import MessageType

from tests.conftest import tiny
from tests.server.test_resume import Killed, _cli, killer


def scenario(name: str, **extra: Any) -> Scenario:
    """4 rounds × 3 generator steps, 3 of 4 clients a round, evaluated and checkpointed every
    2 rounds; MD-GAN swaps every 4 steps (so a critic is in transit at a checkpoint) and both
    protocols weight by a stateful rule (AFL's λ) scored every round; an EMA generator."""
    params: dict[str, Any] = {"weighting": {"name": "agnostic", "params": {"step_size": 2.0}}}
    if name == "mdgan":
        params["swap_every"] = 4
    return tiny(
        federation={
            "protocol": name,
            "rounds": 4,
            "local_steps": 3,
            "clients_per_round": 3,
            "protocol_params": params,
        },
        gan={"ema": 0.9},
        evaluation={"every": 2, "n_samples": 200, "min_group_size": 5},
        **extra,
    )


@pytest.mark.parametrize(
    ("name", "engine", "kind", "n"),
    [
        # 3 step messages per exchange, 3 exchanges a round: the 20th is round 3's second step
        ("mdgan", "inprocess", MessageType.TRAIN, 20),
        ("uagan", "inprocess", MessageType.TRAIN, 20),
        # the vectorized engine steps clients without the ClientApp: stopped in round 4's
        # evaluation instead (4 evaluate messages an evaluation, every 2 rounds)
        ("mdgan", "vectorized", MessageType.EVALUATE, 5),
    ],
)
def test_stopped_mid_round_resumes_to_the_uninterrupted_table(
    tmp_path: Path, name: str, engine: str, kind: str, n: int
) -> None:
    s = scenario(name, engine={"name": engine})
    reference = run_federated(s, tmp_path / "ref").metrics
    store = RunStore.create(tmp_path / "stopped", s.name, resolved_yaml(s), {})
    config = {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    grid_type = VectorizedGrid if engine == "vectorized" else InProcessGrid
    grid = grid_type(killer(kind, n), 4, config)
    with pytest.raises(Killed):
        run_serverapp(server_app, grid)
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 2
    assert ckpt.strategy["weighting"]["relative_lambda"]  # λ moved and was saved
    assert any(k.startswith("generator_ema.") for k in ckpt.server)
    if name == "mdgan":  # step 4 (round 2's second) swapped: step 5 handed the critics on
        assert "pending" in ckpt.strategy
    resumed = resume_federated(store.path)
    pd.testing.assert_frame_equal(resumed.metrics, reference)


HOLD_PLUGIN = '''
import os, pathlib, time
from fedgan.server.protocols import UAGAN


class HoldingUAGAN(UAGAN):
    """UA-GAN that, when HOLD_ROUND is set, announces the first step of round HOLD_ROUND in
    the file HOLD_MARKER and waits there (the clients answered, the generator is not stepped)."""

    def combine(self, r, step, replies):
        if os.environ.get("HOLD_ROUND") == str(r.number) and step == 1:
            pathlib.Path(os.environ["HOLD_MARKER"]).write_text(str(r.number))
            time.sleep(120)
        return super().combine(r, step, replies)
'''


def test_sigkilled_uagan_run_resumes_from_the_command_line(tmp_path: Path) -> None:
    s = scenario("uagan")
    reference = run_federated(s, tmp_path / "ref").metrics
    plugin = tmp_path / "holding.py"
    plugin.write_text(HOLD_PLUGIN)
    raw = s.model_dump(mode="json")
    raw["federation"]["protocol"] = f"{plugin}:HoldingUAGAN"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    marker = tmp_path / "holding"
    proc = _cli(
        "run",
        str(path),
        "--out",
        str(tmp_path / "runs"),
        env={"HOLD_ROUND": "3", "HOLD_MARKER": str(marker)},
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
        os.kill(proc.pid, signal.SIGKILL)  # mid-round 3, mid-step: answers in, G not stepped
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert load_latest(run_dir).round == 2  # type: ignore[union-attr]
    resumed = _cli("run", "--resume", str(run_dir))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    pd.testing.assert_frame_equal(load_run(run_dir).metrics, reference)
