"""The simulator from Python (notebooks): run a scenario, load a finished run.

from fedgan.simulator.api import run, load
result = run("scenarios/quickstart.yaml", ["federation.rounds=5"])
result.metrics.query("scope == 'global' and metric == 'recall'")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgan.simulator.centralized import RunResult, run_centralized
from fedgan.simulator.progress import ProgressHook
from fedgan.simulator.scenario import Scenario, ScenarioError, apply_overrides, validate
from fedgan.simulator.scenario import load as load_scenario
from fedgan.simulator.store import Run, load_run


def run(
    scenario: str | Path | Scenario | Mapping[str, Any],
    overrides: list[str] | None = None,
    out_dir: str | Path = "runs",
    centralized: bool = False,
    progress: ProgressHook | None = None,
) -> RunResult:
    """Run a scenario (a YAML path, a mapping as YAML would parse, or a `Scenario`) and
    return its folder and metrics table.

    `centralized=True` runs the matched centralized twin of a federated scenario; `progress`
    is called with every finished round (or evaluation, centralized) as a `Progress`.

    Examples
    --------
    A centralized run (no `federation` section) of 20 generator steps, written as a mapping:

    >>> import tempfile
    >>> tiny = {"name": "tiny", "data": {"n_samples": 400}, "train": {"steps": 20},
    ...         "evaluation": {"every": 20, "n_samples": 100}}
    >>> result = run(tiny, out_dir=tempfile.mkdtemp())
    >>> sorted(set(result.metrics["scope"])), int(result.metrics["round"].max())
    (['centralized'], 20)
    """
    s = _resolve(scenario, overrides, centralized)
    from fedgan.simulator.engines.runner import check_scenario, run_federated

    problems = check_scenario(s)  # the checks `fedgan validate` makes, before any run folder
    if problems:
        raise ScenarioError(str(scenario) if isinstance(scenario, str | Path) else s.name, problems)
    if not s.federated:
        return run_centralized(s, out_dir, progress)
    return run_federated(s, out_dir, progress)


def check(
    scenario: str | Path | Scenario | Mapping[str, Any],
    overrides: list[str] | None = None,
    centralized: bool = False,
) -> list[str]:
    """Every problem `fedgan validate` finds with the scenario and overrides — the schema's and
    the preflight's that `run` makes before it trains — as 'yaml.path: message' strings;
    empty when it would run.

    Examples
    --------
    From the repository's root: a misspelt key is named with what is allowed there.

    >>> check("scenarios/quickstart.yaml", ["federation.rouns=5"])  # doctest: +ELLIPSIS
    ['federation.rouns: unknown key; allowed here: protocol, protocol_params, rounds, ...']
    >>> check("scenarios/quickstart.yaml")
    []
    """
    try:
        s = _resolve(scenario, overrides, centralized)
    except ScenarioError as exc:
        return list(exc.errors)
    from fedgan.simulator.engines.runner import check_scenario

    return check_scenario(s)


def _resolve(
    scenario: str | Path | Scenario | Mapping[str, Any],
    overrides: list[str] | None,
    centralized: bool,
) -> Scenario:
    if isinstance(scenario, Scenario):
        s = validate(apply_overrides(scenario.model_dump(mode="json"), overrides or []))
    elif isinstance(scenario, Mapping):  # a scenario written in Python, as YAML would parse
        s = validate(apply_overrides(dict(scenario), overrides or []))
    elif isinstance(scenario, str | Path):
        s = load_scenario(scenario, overrides or [])
    else:
        got = type(scenario).__name__
        raise ScenarioError(
            "<scenario>", [f"(top): expected a YAML file path, a mapping or a Scenario, got {got}"]
        )
    return s.centralized_twin() if centralized else s


def resume(
    path: str | Path, overrides: list[str] | None = None, progress: ProgressHook | None = None
) -> RunResult:
    """Continue a federated run folder after its latest checkpoint: an interrupted one to its
    end, or with `overrides=["federation.rounds=N"]` any one to N rounds (a finished run with
    nothing to add is returned as it is)."""
    from fedgan.simulator.engines.runner import resume_federated

    return resume_federated(path, progress, overrides)


def load(path: str | Path) -> Run:
    """Load a finished (or interrupted) run folder.

    Examples
    --------
    >>> import tempfile
    >>> result = run({"name": "tiny", "data": {"n_samples": 400}, "train": {"steps": 20},
    ...               "evaluation": {"every": 20, "n_samples": 100}}, out_dir=tempfile.mkdtemp())
    >>> again = load(result.path)
    >>> again.metrics.equals(result.metrics), again.scenario["name"]
    (True, 'tiny')
    """
    return load_run(path)
