"""Run a federated scenario on an engine: make the run folder, start the apps, load the result."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from simulator.centralized import RunResult
from simulator.progress import ProgressHook, watching
from simulator.scenario import Scenario, resolved_yaml
from simulator.store import RunStore, load_run

ENGINES = ("inprocess", "ray", "vectorized", "deployment")


def check_scenario(s: Scenario) -> list[str]:
    """Every check a run makes before it trains, as 'path: message' strings (empty: fine).

    The one preflight that `fedgan validate`, `fedgan run` (before the run folder exists),
    `fedgan sweep` (every combination, before any trains) and `simulator.api.run` share, on
    top of the schema's own checks (`simulator.scenario.validate`): the protocol, its
    parameters and what it needs (fedavg: the strategy, its parameters and their values),
    and the data at full size — the dataset (e.g. digits weights that need more images than
    there are), the held-out split and, federated, the partition (cached: the run reuses it).
    """
    problems = _data_problems(s)
    if s.federated:
        from server.protocols import check_protocol

        problems += check_protocol(s)
    return problems


def _data_problems(s: Scenario) -> list[str]:
    from simulator.centralized import prepare_data
    from simulator.data import DataError
    from simulator.federation import federated_data
    from simulator.partition import PartitionError

    try:
        federated_data(s) if s.federated else prepare_data(s)
    except PartitionError as exc:
        return [f"partition: {exc}"]
    except (DataError, ValueError) as exc:
        return [f"data: {exc}"]
    return []


def run_federated(
    s: Scenario, out_dir: str | Path = "runs", progress: ProgressHook | None = None
) -> RunResult:
    """Run the scenario's ServerApp and ClientApp on `s.engine` and return the run folder;
    `progress` hears of every round (from the folder's progress file, on every engine)."""
    from simulator.registry import RegistryError

    assert s.federation is not None
    problems = check_scenario(s)
    if problems:  # fail before any training
        raise RegistryError("; ".join(problems))
    store = RunStore.create(
        out_dir, s.name, resolved_yaml(s), {"engine": s.engine.name, "seed": s.seed}
    )
    return _run_in(s, store.path, resume=False, progress=progress)


def resume_federated(run_dir: str | Path, progress: ProgressHook | None = None) -> RunResult:
    """Continue an interrupted federated run in its own folder, after its latest checkpoint.

    The scenario is the folder's `scenario.yaml`; a finished run is returned as it is.
    Raises ScenarioError (bad scenario file) or ValueError (not a resumable run folder).
    """
    from simulator.scenario import load
    from simulator.store import run_is_finished

    path = Path(run_dir)
    if not (path / "scenario.yaml").is_file():
        raise ValueError(f"{path} is not a run folder (no scenario.yaml)")
    s = load(path / "scenario.yaml")
    if not s.federated:
        raise ValueError(f"{path}: only federated runs can be resumed (this one is centralized)")
    if not run_is_finished(path):
        _run_in(s, path, resume=True, progress=progress)
    return RunResult(path, load_run(path).metrics, None)


def _run_in(s: Scenario, path: Path, resume: bool, progress: ProgressHook | None) -> RunResult:
    from server.app import RESUME_KEY, RUN_DIR_KEY
    from wire.records import RUN_CONFIG_KEY

    run_config: dict[str, bool | int | float | str] = {
        RUN_CONFIG_KEY: s.to_json(),
        RUN_DIR_KEY: str(path.resolve()),
        RESUME_KEY: resume,
    }
    n = s.partition.n_clients
    # Stock strategies log INFO lines every round; our own progress and events say more.
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    try:
        with watching(path, progress):
            if s.engine.name == "deployment":
                _run_deployment(s, run_config, path.resolve())
            else:
                _run_engine(s, n, run_config)
    finally:
        flwr_logger.setLevel(level)
    run = load_run(path)
    return RunResult(path, run.metrics, None)


def _run_engine(s: Scenario, n: int, run_config: dict[str, bool | int | float | str]) -> None:
    from clients.app import app as client_app
    from server.app import RUN_DIR_KEY
    from server.app import app as server_app

    if s.engine.name == "inprocess":
        from simulator.engines.inprocess import run_inprocess

        run_inprocess(server_app, client_app, n, run_config)
    elif s.engine.name == "vectorized":
        from simulator.engines.vectorized import run_vectorized

        spill = str(run_config[RUN_DIR_KEY])
        run_vectorized(server_app, client_app, n, run_config, spill_dir=spill)
    else:
        from simulator.engines.ray_engine import run_ray

        os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")
        init_args: dict[str, object] = {"logging_level": "ERROR", "log_to_driver": False}
        if s.engine.address:
            init_args["address"] = s.engine.address
        run_ray(
            server_app,
            client_app,
            n,
            run_config,
            backend_config={
                "client_resources": {"num_cpus": s.engine.num_cpus, "num_gpus": s.engine.num_gpus},
                "init_args": init_args,
            },
        )


DEFAULT_SUPERLINK = "127.0.0.1:9093"
"""Where `engine: deployment` looks for the SuperLink when no address is given (`fedgan up`)."""


def _run_deployment(
    s: Scenario, run_config: dict[str, bool | int | float | str], run_dir: Path
) -> None:
    """Submit to the SuperLink at `engine.address`; the ServerApp there writes `run_dir`."""
    from simulator.engines.deployment import run_deployment

    cert = s.engine.root_certificates
    if cert is not None and not Path(cert).is_file():
        raise ValueError(
            f"engine.root_certificates: no file {cert!r} (make one with `fedgan certs DIR`)"
        )
    run_deployment(
        run_config,
        run_dir,
        s.engine.address or DEFAULT_SUPERLINK,
        root_certificates=cert,
        timeout=s.engine.run_timeout,
    )
