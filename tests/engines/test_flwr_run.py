"""`flwr run .` on this repository: the same apps on Flower's managed local SuperLink
(simulation), the same run folder and metrics table as `fedgan run` on the Ray engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fedgan.server.app import _flwr_run_store
from fedgan.simulator.engines.local_cluster import stop_processes
from fedgan.simulator.engines.procs import ProcKey, descendants, stat
from fedgan.simulator.scenario import ScenarioError, validate
from fedgan.simulator.store import load_run
from fedgan.wire.records import scenario_from

from tests.conftest import tiny_raw

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def _table(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.sort_values(KEYS, kind="stable").reset_index(drop=True)


def test_flwr_run_paths_must_be_absolute(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_raw(strategy={"name": "my_rule.py:Rule"})))
    with pytest.raises(ScenarioError, match="scenario-file: give an absolute path"):
        scenario_from({"scenario-file": "s.yaml"})
    with pytest.raises(ScenarioError, match=r"strategy.name: a file.py plug-in .* absolute"):
        scenario_from({"scenario-file": str(p), "overrides": "federation.rounds=1"})
    s = validate(tiny_raw())
    with pytest.raises(ScenarioError, match="out: give the absolute folder"):
        _flwr_run_store(s, {"out": "runs"}, s.partition.n_clients)
    with pytest.raises(ScenarioError, match="num-supernodes=4"):
        _flwr_run_store(s, {"out": str(tmp_path)}, 2)
    assert not list(tmp_path.glob("tiny*")), "refused before any run folder"


def _managed_superlinks(home: Path) -> set[ProcKey]:
    """The detached SuperLink `flwr run` started under our FLWR_HOME (and its children), by
    PID: its command line names our private folder."""
    out: set[ProcKey] = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "flower-superlink" in cmd and str(home) in cmd:
            pid = int(d.name)
            st = stat(pid)
            if st is not None:
                out.add((pid, st[2]))
                out |= descendants(pid)
    return out


@pytest.mark.slow
def test_flwr_run_gives_the_ray_engines_table(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from fedgan.simulator.engines.runner import run_federated

    raw = tiny_raw(partition={"n_clients": 2}, federation={"rounds": 2, "local_steps": 2})
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    home, out = tmp_path / "flwr-home", tmp_path / "runs"
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # Before the managed SuperLink starts, or it `uv sync`s the dependencies (CUDA torch).
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    config = f'scenario-file="{scenario}" out="{out}" overrides="seed=5"'
    cmd = [
        str(Path(sys.executable).parent / "flwr"),
        "run",
        str(ROOT),
        "--run-config",
        config,
        "--federation-config",
        "num-supernodes=2",
        "--stream",
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        stop_processes([], extra=_managed_superlinks(home))
    assert not _managed_superlinks(home), "the managed SuperLink is stopped, by PID"
    (folder,) = (out / "tiny").iterdir()
    flwr_table = _table(load_run(folder).metrics)
    events = [e["kind"] for e in load_run(folder).events]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    ray = run_federated(
        validate({**raw, "seed": 5, "engine": {"name": "ray"}}), tmp_path / "ray"
    ).metrics
    ray_table = _table(ray)
    pd.testing.assert_frame_equal(flwr_table[KEYS], ray_table[KEYS])
    pd.testing.assert_frame_equal(flwr_table, ray_table, check_exact=False, rtol=1e-6, atol=1e-9)
