"""The Flower ServerApp: read the scenario from the run config and drive the rounds."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.loop import run_rounds
from simulator.progress import ProgressLog
from simulator.store import RunStore
from wire.records import scenario_from

RUN_DIR_KEY = "run-dir"
"""run_config key with the absolute path of the run folder the server writes."""

RESUME_KEY = "resume"
"""run_config key: true to continue the run folder's run after its latest checkpoint."""

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    s = scenario_from(context.run_config)
    store = RunStore(Path(str(context.run_config[RUN_DIR_KEY])))
    resume = bool(context.run_config.get(RESUME_KEY, False))
    # Progress goes to the run folder: the command line follows it from its own process.
    run_rounds(grid, s, store, resume=resume, progress=ProgressLog(store.path))
