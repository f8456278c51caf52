"""The Flower ServerApp: read the scenario from the run config and drive the rounds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgan.server.heap import library_heap_frozen
from fedgan.server.loop import run_rounds
from fedgan.simulator.progress import ProgressLog
from fedgan.simulator.scenario import Scenario, ScenarioError, resolved_yaml
from fedgan.simulator.store import RunStore
from fedgan.wire.records import OUT_KEY, RUN_DIR_KEY, SCENARIO_FILE_KEY, scenario_from
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

RESUME_KEY = "resume"
"""run_config key: true to continue the run folder's run after its latest checkpoint."""

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    s = scenario_from(cfg)
    if cfg.get(RUN_DIR_KEY):  # an engine made the run folder (`fedgan run`, the Python API)
        store = RunStore(Path(str(cfg[RUN_DIR_KEY])))
    else:  # `flwr run .`: this app makes it, under `out`
        store = _flwr_run_store(s, cfg, len(list(grid.get_node_ids())))
    resume = bool(cfg.get(RESUME_KEY, False))
    # Progress goes to the run folder: the command line follows it from its own process.
    with library_heap_frozen():
        run_rounds(grid, s, store, resume=resume, progress=ProgressLog(store.path))


def _flwr_run_store(s: Scenario, cfg: Mapping[str, Any], nodes: int) -> RunStore:
    """The run folder of a run started with `flwr run .`: under the absolute `out`, after
    the checks `fedgan run` makes; one node per client (refused otherwise, before anything)."""
    from fedgan.server.protocols import check_protocol
    from fedgan.simulator.prepare import data_problems

    out = Path(str(cfg.get(OUT_KEY) or ""))
    problems = (
        []
        if out.is_absolute()
        else [
            f"{OUT_KEY}: give the absolute folder for run folders (the ServerApp runs from the "
            f"installed Flower App, not from your folder), got {str(out)!r}"
        ]
    )
    if s.federation is None:
        problems.append("federation: `flwr run .` runs federated scenarios only")
    if nodes != s.partition.n_clients:
        problems.append(
            f"partition.n_clients: {s.partition.n_clients} clients, but the federation has "
            f"{nodes} nodes: run with --federation-config num-supernodes={s.partition.n_clients}"
        )
    if not problems:  # what `fedgan run` checks first (simulator.engines.runner.check_scenario)
        problems += data_problems(s) + check_protocol(s)
    if problems:
        raise ScenarioError(str(cfg.get(SCENARIO_FILE_KEY, "")), problems)
    meta = {"engine": "flwr-run", "seed": s.seed}
    return RunStore.create(out, s.name, resolved_yaml(s), meta)
