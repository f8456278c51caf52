"""Deployment engine: submit the ServerApp and ClientApp to a Flower SuperLink and wait for it.

`flwr run` packages a Flower App folder (a pyproject.toml with `[tool.flwr.app]` and the code)
into a FAB and starts a run on the SuperLink named by a connection in `$FLWR_HOME/config.toml`.
This engine builds that folder itself (`make_app_dir`: the `simulator`, `server`, `clients` and
`wire` packages and a small pyproject, a ~0.5 MB FAB: no tests, runs or benchmarks travel) and
uses a private FLWR_HOME, so a user's own Flower configuration is neither needed nor touched.

The scenario JSON and the absolute run folder travel as run_config overrides (declared, empty,
in the generated pyproject: the SuperLink refuses undeclared keys). The ServerApp writes the run
folder by absolute path, so the SuperLink must run on the machine (or share the file system)
where `fedgan run` runs — true for `fedgan up`.

`flwr run --stream` exits 0 even when the run fails: the status is read from the SuperLink
(`flwr ls --run-id ID --format json`: `finished:completed | failed | stopped`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from simulator.engines.local_cluster import (
    CONNECTION,
    ClusterError,
    cli_json,
    flwr_cli,
    flwr_env,
    write_connection,
)

__all__ = ["DeploymentError", "make_app_dir", "run_deployment", "run_status"]

PACKAGES = ("simulator", "server", "clients", "wire")
"""The project's packages that make up the Flower App."""

POLL_S = 1.0
"""How often the run folder is checked for the server's `run_finished` event."""
STATUS_EVERY_S = (1.0, 2.0, 4.0, 8.0, 10.0)
"""Waits between asking the SuperLink for the run's status (a `flwr` process, ~1 s CPU each):
short at first, where a broken app fails, then every 10 s."""


class DeploymentError(RuntimeError):
    """The run failed, was stopped, or could not be submitted."""


def make_app_dir(dest: Path, config_keys: list[str]) -> Path:
    """Write a Flower App folder: the project's packages and a pyproject declaring `config_keys`."""
    root = Path(__file__).resolve().parents[2]
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        shutil.copytree(
            root / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    pyproject: dict[str, Any] = {
        "project": {
            "name": "fedgan-app",
            "version": "0.1.0",
            "description": "fedgan ServerApp and ClientApp",
            "license": "Apache-2.0",
            "dependencies": ["flwr==1.42.0"],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedgan",
                    "components": {
                        "serverapp": "server.app:app",
                        "clientapp": "clients.app:app",
                    },
                    "config": {key: "" for key in config_keys},
                }
            }
        },
    }
    (dest / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    return dest


def run_status(run_id: int, env: Mapping[str, str]) -> tuple[str, str]:
    """(status, details) of a run on the connection's SuperLink, e.g. ('finished:failed', ..)."""
    out = cli_json(flwr_cli(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], env))
    runs = out.get("runs", [])
    if not runs:
        raise DeploymentError(f"the SuperLink does not know run {run_id}")
    return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))


def _finished_event(run_dir: Path) -> bool:
    """Whether the ServerApp recorded `run_finished` in the run folder (cheap to check)."""
    path = run_dir / "events.jsonl"
    try:
        return '"run_finished"' in path.read_text(errors="replace")
    except OSError:
        return False


def run_deployment(
    run_config: Mapping[str, bool | int | float | str],
    run_dir: Path,
    address: str,
    root_certificates: str | Path | None = None,
    timeout: float | None = None,
) -> int:
    """Submit the apps to the SuperLink at `address` and wait until the run has finished.

    Returns the run id. Raises DeploymentError when the run ends failed or stopped, or when
    `timeout` seconds pass (the run is then stopped on the SuperLink). Ctrl-C stops it too.
    """
    with tempfile.TemporaryDirectory(prefix="fedgan-deploy-") as tmp:
        home = Path(tmp) / "flwr-home"
        write_connection(home, address, Path(root_certificates) if root_certificates else None)
        env = flwr_env(home)
        app = make_app_dir(Path(tmp) / "app", list(run_config))
        overrides = Path(tmp) / "run-config.toml"
        overrides.write_text(tomli_w.dumps(dict(run_config)))
        cmd = ["run", str(app), CONNECTION, "--run-config", str(overrides), "--format", "json"]
        try:
            # `flwr run --format json` reports a refused submission in its JSON, exit code 0.
            started = cli_json(flwr_cli(cmd, env, timeout=120.0, check=False))
        except ClusterError as err:
            raise DeploymentError(f"could not submit the run to {address}: {err}") from err
        if not started.get("success") or started.get("run-id") is None:
            why = str(started.get("error-message", started)).replace(
                f"Using SuperLink: {CONNECTION} ({address})", ""
            )
            raise DeploymentError(f"could not submit the run to {address}: {why.strip()}")
        run_id = int(started["run-id"])
        t0 = time.monotonic()
        next_status, n_status = t0, 0
        try:
            while True:
                done = _finished_event(run_dir)
                if done or time.monotonic() >= next_status:
                    wait = STATUS_EVERY_S[min(n_status, len(STATUS_EVERY_S) - 1)]
                    next_status, n_status = time.monotonic() + wait, n_status + 1
                    status, details = run_status(run_id, env)
                    if status.startswith("finished"):
                        if status != "finished:completed":
                            raise DeploymentError(
                                f"run {run_id} ended {status}: {details or 'no details'} "
                                f"(SuperLink {address})"
                            )
                        return run_id
                if timeout is not None and time.monotonic() - t0 > timeout:
                    flwr_cli(["stop", str(run_id), CONNECTION], env, check=False)
                    raise DeploymentError(
                        f"run {run_id} did not finish within engine.run_timeout = {timeout:g} s; "
                        "stopped it"
                    )
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            flwr_cli(["stop", str(run_id), CONNECTION], env, check=False)
            raise
