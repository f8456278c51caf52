"""Run a federated scenario on an engine: make the run folder, start the apps, load the result."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fedgan.simulator.progress import ProgressHook, watching
from fedgan.simulator.scenario import Scenario, resolved_yaml

if TYPE_CHECKING:  # torch and the metrics behind it: imported by the runs, not the preflight
    from fedgan.simulator.centralized import RunResult

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
    problems = _guarded("data", _data_problems, s)
    if s.federated:
        problems += _guarded("federation.protocol", _protocol_problems, s)
    if s.privacy is not None:
        data_ok = not problems
        problems += _guarded("privacy", lambda s: _privacy_problems(s, data_ok), s)
    return problems


def _data_problems(s: Scenario) -> list[str]:
    """`simulator.prepare.data_problems`: the data at full size, its held-out split and,
    federated, the partition — built as the run builds them (and cached for it), without
    torch or the metrics (`simulator.prepare` is light at import)."""
    from fedgan.simulator.prepare import data_problems

    return data_problems(s)


def _protocol_problems(s: Scenario) -> list[str]:
    from fedgan.server.protocols import check_protocol

    return check_protocol(s)


def _privacy_problems(s: Scenario, data_ok: bool) -> list[str]:
    """`simulator.privacy.checks`: what the privacy section cannot run with (with the data
    when it was built: δ against the clients' training points)."""
    from fedgan.simulator.prepare import train_sizes
    from fedgan.simulator.privacy.checks import privacy_problems

    sizes = train_sizes(s) if data_ok and s.privacy and s.privacy.level == "sample" else ()
    return privacy_problems(s, sizes)


def _guarded(path: str, check: Callable[[Scenario], list[str]], s: Scenario) -> list[str]:
    """`check(s)`, or — when it raises (a plug-in's code, a look-up that a check forgot to
    guard) — one problem at `path` saying what was raised: the preflight reports, it never
    raises."""
    try:
        return check(s)
    except Exception as exc:  # noqa: BLE001 - whatever a check raises is a problem to report
        return [f"{path}: the check failed: {type(exc).__name__}: {exc}"]


def run_federated(
    s: Scenario, out_dir: str | Path = "runs", progress: ProgressHook | None = None
) -> RunResult:
    """Run the scenario's ServerApp and ClientApp on `s.engine` and return the run folder;
    `progress` hears of every round (from the folder's progress file, on every engine)."""
    from fedgan.simulator.registry import RegistryError
    from fedgan.simulator.store import RunStore

    assert s.federation is not None
    problems = check_scenario(s)
    if problems:  # fail before any training
        raise RegistryError("; ".join(problems))
    store = RunStore.create(
        out_dir, s.name, resolved_yaml(s), {"engine": s.engine.name, "seed": s.seed}
    )
    return _run_in(s, store.path, resume=False, progress=progress)


EXTENDABLE = ("federation.rounds", "federation.timeout", "engine.")
"""Overrides a resume may take: more rounds, and how the rest runs. Anything else (data,
seed, GAN, partition, protocol...) would change rounds already played: refused."""


def resume_federated(
    run_dir: str | Path,
    progress: ProgressHook | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Continue a federated run in its own folder, after its latest checkpoint — an
    interrupted one to its end, or (with `federation.rounds=N` among `overrides`) a finished
    or interrupted one to N rounds.

    The scenario is the folder's `scenario.yaml` (rewritten with the new rounds, after a
    `run_extended` event). With a constant learning rate the extended run's table is that of a
    run made with N rounds from the start; a schedule that spans the rounds is refused (its
    horizon would move). A finished run with nothing to add is returned as it is.
    Raises ScenarioError (bad scenario file or override) or ValueError (not a resumable run).
    """
    from fedgan.simulator.centralized import RunResult
    from fedgan.simulator.scenario import (
        ScenarioError,
        apply_overrides,
        load,
        resolved_yaml,
        validate,
    )
    from fedgan.simulator.store import RunStore, atomic_write_text, load_run, run_is_finished
    from fedgan.simulator.yamlsafe import load_yaml

    path = Path(run_dir)
    if not (path / "scenario.yaml").is_file():
        raise ValueError(f"{path} is not a run folder (no scenario.yaml)")
    old = load(path / "scenario.yaml")
    if not old.federated:
        raise ValueError(f"{path}: only federated runs can be resumed (this one is centralized)")
    s = old
    if overrides:
        source = str(path / "scenario.yaml")
        problems = [
            f"{o.partition('=')[0]}: cannot change on resume (it would change rounds already "
            "played); a resume takes federation.rounds, federation.timeout and engine.*"
            for o in overrides
            if not o.partition("=")[0].strip().startswith(EXTENDABLE)
        ]
        if problems:
            raise ScenarioError(source, problems)
        raw = apply_overrides(load_yaml((path / "scenario.yaml").read_text()), overrides)
        s = validate(raw, source)
        assert s.federation is not None and old.federation is not None
        done = _last_checkpoint_round(path)
        if s.federation.rounds < max(done, 1):
            raise ScenarioError(
                source,
                [
                    f"federation.rounds: {s.federation.rounds} is before round {done}, "
                    "which the run has already checkpointed"
                ],
            )
        if s.federation.rounds != old.federation.rounds and s.gan.lr_schedule != "constant":
            raise ScenarioError(
                source,
                [
                    f"gan.lr_schedule: {s.gan.lr_schedule} decays over the run's rounds, so more "
                    "rounds would change the learning rate of rounds already played; only runs "
                    "with a constant learning rate can be extended"
                ],
            )
        rounds = s.federation.rounds
        if s.privacy is not None and rounds > old.federation.rounds:
            s = _pinned_noise(old, s, source)
        if s != old:
            RunStore(path).event(
                "run_extended",
                rounds_from=old.federation.rounds,
                rounds_to=rounds,
                overrides=list(overrides),
            )
            atomic_write_text(path / "scenario.yaml", resolved_yaml(s))
    if not run_is_finished(path) or s != old:
        _run_in(s, path, resume=True, progress=progress)
    return RunResult(path, load_run(path).metrics, None)


def _pinned_noise(old: Scenario, new: Scenario, source: str) -> Scenario:
    """A private run extended to more rounds: refused when, with the σ its rounds so far were
    calibrated with, it would end above `privacy.target_epsilon`; otherwise the extended
    scenario names that σ (a recalibration over the new rounds would change the noise of the
    rounds already played)."""
    from fedgan.simulator.prepare import train_sizes
    from fedgan.simulator.privacy import budget
    from fedgan.simulator.scenario import ScenarioError

    p = old.privacy
    if p is None or p.target_epsilon is None:
        return new
    sizes = train_sizes(old)
    problems = budget.extension_problems(old, new, sizes)
    if problems:
        raise ScenarioError(source, problems)
    assert new.privacy is not None
    sigma = budget.noise_multiplier(old, sizes)
    pinned = new.privacy.model_copy(update={"noise_multiplier": sigma, "target_epsilon": None})
    return new.model_copy(update={"privacy": pinned})


def _last_checkpoint_round(path: Path) -> int:
    from fedgan.simulator.checkpoint import load_latest

    ckpt = load_latest(path)
    return ckpt.round if ckpt is not None else 0


def _run_in(s: Scenario, path: Path, resume: bool, progress: ProgressHook | None) -> RunResult:
    from fedgan.server.app import RESUME_KEY, RUN_DIR_KEY
    from fedgan.simulator.centralized import RunResult
    from fedgan.simulator.store import load_run
    from fedgan.wire.records import RUN_CONFIG_KEY

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
    from fedgan.clients.app import app as client_app
    from fedgan.server.app import RUN_DIR_KEY
    from fedgan.server.app import app as server_app

    if s.engine.name == "inprocess":
        from fedgan.simulator.engines.inprocess import run_inprocess

        run_inprocess(server_app, client_app, n, run_config)
    elif s.engine.name == "vectorized":
        from fedgan.simulator.engines.vectorized import run_vectorized

        spill = str(run_config[RUN_DIR_KEY])
        run_vectorized(server_app, client_app, n, run_config, spill_dir=spill)
    else:
        from fedgan.simulator.engines.ray_engine import run_ray

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
    from fedgan.simulator.engines.deployment import run_deployment

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
