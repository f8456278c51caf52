"""Run a federated scenario on an engine: make the run folder, start the apps, load the result."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from simulator.centralized import RunResult
from simulator.scenario import Scenario, resolved_yaml
from simulator.store import RunStore, load_run

ENGINES = ("inprocess", "ray", "deployment")


def check_scenario(s: Scenario) -> list[str]:
    """Checks that need Flower (the strategy and its parameters): 'path: message' strings."""
    from server.strategies import check_strategy

    if not s.federated:
        return []
    from server.strategies import STRATEGIES

    problems = check_strategy(s.strategy.name, dict(s.strategy.params))
    needs = (
        getattr(STRATEGIES.get(s.strategy.name), "requires_federate", None)
        if not problems
        else None
    )
    if needs and s.federation is not None and s.federation.federate != needs:
        problems.append(f"strategy.name: {s.strategy.name} needs federation.federate: {needs}")
    if s.strategy.critic is not None:
        critic = check_strategy(s.strategy.critic.name, dict(s.strategy.critic.params))
        problems += [p.replace("strategy.", "strategy.critic.", 1) for p in critic]
        if s.federation is not None and s.federation.federate != "both":
            problems.append("strategy.critic: a critic strategy needs federation.federate: both")
    return problems


def run_federated(s: Scenario, out_dir: str | Path = "runs") -> RunResult:
    """Run the scenario's ServerApp and ClientApp on `s.engine` and return the run folder."""
    from clients.records import RUN_CONFIG_KEY
    from server.app import RUN_DIR_KEY
    from server.strategies import build_strategy

    assert s.federation is not None
    build_strategy(s.strategy.name, dict(s.strategy.params))  # fail before any training
    store = RunStore.create(
        out_dir, s.name, resolved_yaml(s), {"engine": s.engine.name, "seed": s.seed}
    )
    run_config: dict[str, bool | int | float | str] = {
        RUN_CONFIG_KEY: s.to_json(),
        RUN_DIR_KEY: str(store.path.resolve()),
    }
    n = s.partition.n_clients
    # Stock strategies log INFO lines every round; our own progress and events say more.
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.WARNING)
    try:
        if s.engine.name == "deployment":
            _run_deployment(s, run_config, store.path.resolve())
        else:
            _run_engine(s, n, run_config)
    finally:
        flwr_logger.setLevel(level)
    run = load_run(store.path)
    return RunResult(store.path, run.metrics, None)


def _run_engine(s: Scenario, n: int, run_config: dict[str, bool | int | float | str]) -> None:
    from clients.app import app as client_app
    from server.app import app as server_app

    if s.engine.name == "inprocess":
        from simulator.engines.inprocess import run_inprocess

        run_inprocess(server_app, client_app, n, run_config)
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
