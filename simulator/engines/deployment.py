"""Deployment engine: submit the ServerApp and ClientApp to a Flower SuperLink and wait for it.

`flwr run` packages a Flower App folder (a pyproject.toml with `[tool.flwr.app]` and the code)
into a FAB and starts a run on the SuperLink named by a connection in `$FLWR_HOME/config.toml`.
The folder is the project root (`app_dir`): its pyproject's `[tool.flwr.app]` is the one `flwr
run .` uses, and its `fab-include` keeps the FAB to the four packages and the bundled scenarios
(~0.8 MB: no tests, runs or benchmarks travel). A private FLWR_HOME is used, so a user's own
Flower configuration is neither needed nor touched.

The scenario JSON and the absolute run folder travel as run_config overrides (declared, empty,
in the pyproject: the SuperLink refuses undeclared keys). The ServerApp writes the run
folder by absolute path, so the SuperLink must run on the machine (or share the file system)
where `fedgan run` runs — true for `fedgan up`.

`flwr run --stream` exits 0 even when the run fails: the status is read from the SuperLink
(`flwr ls --run-id ID --format json`: `finished:completed | failed | stopped`).
"""

from __future__ import annotations

import tempfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path

import tomli_w
from fedgan.simulator.engines.local_cluster import (
    CONNECTION,
    ClusterError,
    cli_json,
    flwr_cli,
    flwr_env,
    write_connection,
)

__all__ = ["DeploymentError", "app_dir", "run_deployment", "run_status"]

POLL_S = 1.0
"""How often the run folder is checked for the server's `run_finished` event."""
STATUS_EVERY_S = (1.0, 2.0, 4.0, 8.0, 10.0)
"""Waits between asking the SuperLink for the run's status (a `flwr` process, ~1 s CPU each):
short at first, where a broken app fails, then every 10 s."""


class DeploymentError(RuntimeError):
    """The run failed, was stopped, or could not be submitted."""


def app_dir(config_keys: list[str]) -> Path:
    """The Flower App folder: the project root, whose pyproject's `[tool.flwr.app]` (components,
    `fab-include`, declared run_config keys) is the one `flwr run .` uses too.

    Raises DeploymentError when the project is not a source tree with that table (a
    non-editable install) or when a key of `config_keys` is not declared there (the SuperLink
    would refuse it).
    """
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        app = tomllib.loads(pyproject.read_text())["tool"]["flwr"]["app"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as err:
        raise DeploymentError(
            f"engine: deployment builds its Flower App from {pyproject} ([tool.flwr.app]), "
            f"which is missing or unreadable ({err!r}): install the project from its source "
            "tree (pip install -e .)"
        ) from err
    missing = sorted(set(config_keys) - set(app.get("config", {})))
    if missing:
        raise DeploymentError(
            f"{pyproject} [tool.flwr.app.config] does not declare {', '.join(missing)}"
        )
    return root


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
        app = app_dir(list(run_config))
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
