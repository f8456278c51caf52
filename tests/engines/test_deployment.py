"""The deployment engine against real Flower processes on 127.0.0.1: TLS, node authentication,
a 2-node run that matches the in-process engine, and a SuperNode killed mid-run.

Flower's SuperNode and ServerApp both poll every 3 s (hard-coded in flwr 1.42), so one message
round trip costs ~9 s here: the scenarios are as short as the claims allow.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fedgan.simulator.engines.certs import make_certs, make_node_key
from fedgan.simulator.engines.deployment import DeploymentError, run_deployment
from fedgan.simulator.engines.local_cluster import LocalCluster, descendants, stop_process
from fedgan.simulator.engines.procs import ProcKey
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.store import load_run

from tests.conftest import tiny

HAVE_FLOWER = (Path(sys.executable).parent / "flower-superlink").exists() or bool(
    shutil.which("flower-superlink")
)
# Real processes, ~5 minutes together: `-m 'not slow'` skips them while developing.
pytestmark = [
    pytest.mark.skipif(not HAVE_FLOWER, reason="flower-superlink is not installed"),
    pytest.mark.slow,
]

KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def _events(run_dir: Path) -> list[dict[str, Any]]:
    return load_run(run_dir).events


def _sorted(m: pd.DataFrame) -> pd.DataFrame:
    return m.sort_values(KEYS, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """SuperLink with TLS and node authentication; nodes 0 and 1 registered and online."""
    home = tmp_path_factory.mktemp("secure")
    make_certs(home / "certs", n_nodes=2)
    cluster = LocalCluster(2, home, tls=home / "certs", auth=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    # Every process the cluster started, and what they started, has exited.
    assert all(p.poll() is not None for p in cluster.procs.values())


def test_unregistered_node_is_refused(secure: LocalCluster) -> None:
    assert secure.tls is not None
    assert secure.nodes_online() == 2  # the registered keys joined
    key, _ = make_node_key(secure.tls, 7)  # a valid key pair, never registered
    proc = secure.start_node(2, key=key)
    try:
        rc = proc.wait(timeout=60)  # refused in ~2 s: the node gives up, no retry
    except subprocess.TimeoutExpired:
        stop_process(proc)
        pytest.fail("a node with an unregistered key is still running after 60 s")
    assert rc != 0
    assert "Failed to activate SuperNode" in secure.log_text("node-2")
    assert secure.nodes_online() == 2


def test_two_nodes_two_rounds_match_the_inprocess_engine(
    secure: LocalCluster, tmp_path: Path
) -> None:
    sections: dict[str, Any] = {
        "partition": {"n_clients": 2},
        "federation": {"rounds": 2, "local_steps": 3, "timeout": 120},
        "evaluation": {"every": 2},
    }
    engine = {
        "name": "deployment",
        "address": secure.address,
        "root_certificates": str(secure.root_certificates),
        "run_timeout": 240,
    }
    seen: list[Any] = []
    deployed = run_federated(
        tiny(**sections, engine=engine), tmp_path / "deployment", progress=seen.append
    )
    local = run_federated(tiny(**sections), tmp_path / "inprocess")
    # Progress from the SuperLink's ServerApp process reached this one, round by round.
    assert [(p.done, p.total) for p in seen] == [(1, 2), (2, 2)] and seen[-1].summary

    kinds = [e["kind"] for e in _events(deployed.path)]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert not {"client_timeout", "client_error", "clients_missing"} & set(kinds)
    for name in ("scenario.yaml", "env.json", "metrics.parquet", "partition.csv", "timings.csv"):
        assert (deployed.path / name).is_file(), name
    assert (deployed.path / "checkpoints").is_dir() and (deployed.path / "samples").is_dir()
    a, b = _sorted(local.metrics), _sorted(deployed.metrics)
    # Both nodes trained in both rounds (equal tables could also mean equally broken).
    replies = b[(b["metric"] == "fed.replies")].set_index("round")["value"]
    assert replies.to_dict() == {1: 2, 2: 2}
    assert set(b["scope"]) == {"global", "client", "clients"}
    # Same seeds, partition ids and reply order: the very same numbers as in process.
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "params"),
    [("mdgan", {"swap_every": 1}), ("uagan", {"weighting": {"name": "coverage_weighted"}})],
)
def test_server_held_generators_match_the_inprocess_engine(
    secure: LocalCluster, tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    # 1 round of 2 generator steps: every exchange costs ~9 s of polling here.
    sections: dict[str, Any] = {
        "partition": {"n_clients": 2},
        "federation": {
            "protocol": name,
            "rounds": 1,
            "local_steps": 2,
            "protocol_params": params,
            "timeout": 120,
        },
    }
    engine = {
        "name": "deployment",
        "address": secure.address,
        "root_certificates": str(secure.root_certificates),
        "run_timeout": 240,
    }
    deployed = run_federated(tiny(**sections, engine=engine), tmp_path / "deployment")
    local = run_federated(tiny(**sections), tmp_path / "inprocess")
    a, b = _sorted(local.metrics), _sorted(deployed.metrics)
    assert b.loc[b["metric"] == "fed.replies", "value"].tolist() == [2.0]
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


def test_a_run_that_fails_on_the_superlink_is_an_error(
    secure: LocalCluster, tmp_path: Path
) -> None:
    # The ServerApp cannot parse its scenario and raises: `flwr run` itself succeeded, only the
    # run's status on the SuperLink says that the run failed.
    run_config = {"scenario": "{not json", "run-dir": str(tmp_path)}
    t0 = time.monotonic()
    with pytest.raises(DeploymentError, match="ended finished:failed"):
        run_deployment(run_config, tmp_path, secure.address, secure.root_certificates, timeout=120)
    assert time.monotonic() - t0 < 60


@dataclass
class KilledRun:
    """A deployment run on 2 nodes during which node 1 was killed in round 2."""

    run: Any
    elapsed: float
    """Seconds from the submission to the end of the run."""
    orphans: set[ProcKey]
    """The killed node's child processes (pid, start time) when it was killed."""


def _run_killing_node_1(
    s: Any, tmp_path: Path, then: Callable[[LocalCluster], object] | None = None, wait: float = 300
) -> KilledRun:
    """Run `s` on a fresh 2-node cluster; SIGKILL node 1 when it receives its round-2 training
    message (mid-run and mid-round), then call `then(cluster)`."""
    cluster = LocalCluster(2, tmp_path / "cluster")
    result: dict[str, Any] = {}
    try:
        cluster.start()
        s = s.model_copy(
            update={"engine": s.engine.model_copy(update={"address": cluster.address})}
        )

        def run() -> None:
            try:
                result["run"] = run_federated(s, tmp_path / "runs")
            except BaseException as exc:  # re-raised in the test thread below
                result["error"] = exc

        t0 = time.monotonic()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + wait
        while cluster.log_text("node-1").count("Receiving: train message") < 2:
            assert time.monotonic() < deadline, "node 1 never received a round-2 train message"
            assert worker.is_alive(), result
            time.sleep(0.2)
        orphans = descendants(cluster.procs["node-1"].pid)
        cluster.kill_node(1)
        if then is not None:
            then(cluster)
        worker.join(timeout=2 * wait)
        elapsed = time.monotonic() - t0
        assert not worker.is_alive(), "the run did not finish"
    finally:
        cluster.stop()
    assert "error" not in result, result.get("error")
    return KilledRun(result["run"], elapsed, orphans)


def test_killed_node_run_finishes_with_the_survivor(tmp_path: Path) -> None:
    timeout = 30.0  # federation.timeout: above a healthy round trip (~9 s; 20+ s under load)
    s = tiny(
        partition={"n_clients": 2},
        federation={"rounds": 2, "local_steps": 3, "timeout": timeout},
        evaluation={"every": 2},
        engine={"name": "deployment", "run_timeout": 240},
    )
    killed = _run_killing_node_1(s, tmp_path, wait=120)
    # Bounded: discovery and round 1 (~9 s each), then two waits of `timeout` for the dead
    # node (round 2, the evaluation), with slack for a busy machine (load 9: 157 s).
    assert killed.elapsed < 2 * timeout + 120
    # The killed node's ClientApp processes were stopped too.
    assert not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid, _ in killed.orphans)

    run_dir = killed.run.path
    lost = [
        (e["round"], e["client"], e.get("detail", ""))
        for e in _events(run_dir)
        if e["kind"] == "client_timeout"
    ]
    assert lost == [(2, 1, ""), (2, 1, "evaluation")]  # its round-2 training, then evaluation
    kinds = [e["kind"] for e in _events(run_dir)]
    assert kinds[-1] == "run_finished" and "round_skipped" not in kinds
    m = killed.run.metrics
    replies = m[m["metric"] == "fed.replies"].set_index("round")["value"]
    assert replies.to_dict() == {1: 2, 2: 1}  # the survivor went on alone
    assert set(m.loc[(m["scope"] == "client") & (m["round"] == 2), "client"]) == {0}


def _running(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_up_starts_the_nodes_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedgan.simulator.cli",
            "up",
            "--nodes",
            "2",
            "--port",
            "0",
            "--home",
            str(tmp_path),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    children: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops them all" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        children = descendants(proc.pid)
        # A SuperLink and two SuperNodes (each with its SuperExec), all online.
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid, _ in children]
        assert sum(b"flower-supernode" in c for c in cmdlines) == 2
        assert sum(b"flower-superlink" in c for c in cmdlines) == 1
        text = "".join(lines)
        assert "2 SuperNodes online" in text and "engine.address=127.0.0.1:" in text
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = [pid for pid, _ in children if _running(pid)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
    assert not leftover, "processes outlived fedgan up"


def test_a_node_that_comes_back_gets_its_private_critic_back(tmp_path: Path) -> None:
    """SuperNode 1 is killed in round 2 and restarted (new node id, empty context.state): the
    server finds it before round 3 and restores its private critic of the round-1 checkpoint.
    The critic's Adam step count proves which state it trained from: 2 local steps a round,
    so client 0 ends round 3 at 6 steps, a restored client 1 at 2 (round 1) + 2 = 4, a client
    that lost its state at 2."""
    from fedgan.simulator.checkpoint import load_latest

    # Above a healthy round trip (~9 s quiet, 20+ s under load): a node that misses the bound
    # at the start is found by the same rejoin step, but the exact event list would differ.
    # The dead node costs three waits of it (round 2's training, evaluation, checkpoint).
    timeout = 30.0
    s = tiny(
        partition={"n_clients": 2},
        federation={"rounds": 3, "local_steps": 2, "timeout": timeout, "federate": "generator"},
        evaluation={"every": 1},  # a checkpoint every round
        engine={"name": "deployment", "run_timeout": 600},
    )
    # The same partition on a new node id, with an empty context.state.
    killed = _run_killing_node_1(s, tmp_path, then=lambda cluster: cluster.start_node(1))
    run_dir = killed.run.path
    events = _events(run_dir)
    rejoined = [e for e in events if e["kind"] == "client_rejoined"]
    assert [(e["round"], e["client"], e["private"], e["from_round"]) for e in rejoined] == [
        (3, 1, "restored", 1)
    ]
    m = killed.run.metrics
    replies = m[m["metric"] == "fed.replies"].set_index("round")["value"]
    assert replies.to_dict() == {1: 2, 2: 1, 3: 2}  # back in the round after it rejoined
    latest = load_latest(run_dir)
    assert latest is not None
    clients = latest.clients
    steps = {p: int(c["critic_opt.step"]) for p, c in clients.items()}
    assert steps == {0: 6, 1: 4}
