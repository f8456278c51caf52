"""Ray engine: the same ServerApp and ClientApp on Flower's simulation runtime (Ray backend).

A thin wrapper over `flwr.simulation.run_simulation` (flwr 1.42). Ray is not a core dependency:
it comes with Flower's `simulation` extra, `pip install -e '.[ray]'`.

How run_config reaches the apps — read from the flwr 1.42 source:
- `run_simulation(server_app, client_app, num_supernodes, backend_name, backend_config, ...)`
  has no run_config parameter. `_main_loop` gives the ServerApp `Context(run_config={})`, and each
  virtual node's Context comes from `DeprecatedRunInfoStore.register_context`, whose run_config is
  `get_fused_config(run)`: `{}`, because the Run it makes has no FAB id. The pyproject.toml
  `[tool.flwr.app.config]` + `--run-config` route exists only under `flwr run`.
- The private `_run_simulation(server_app_context=..., run=...)` could seed the server's Context,
  but the nodes would still read run_config from a FAB or app directory: no help for the ClientApp.
- So the apps are wrapped. The ServerApp wrapper sets `context.run_config` and calls the user's
  ServerApp. The ClientApp wrapper sets it for each call and puts the original object back
  afterwards: the simulation worker refuses a Context whose run_config changed
  (`update_context` raises ValueError after the call), which would turn every reply into an
  error reply. The in-process engine instead builds every Context with the run_config directly.

Other facts of `run_simulation` worth knowing:
- It returns None and keeps the server Context to itself: capture results inside the apps.
- Without Ray it calls `flwr_exit` (SystemExit) instead of raising: `run_ray` checks first.
- The ClientApp (and so this wrapper) is pickled to the Ray actors with every message: it must be
  picklable; the wrapper class lives at module level for that.
- Node ids are random (os.urandom) and replies arrive in completion order: key clients by
  their node_config partition id (`simulator.messages.NODE_PARTITION_ID`) and sort replies
  before aggregating.
- A ClientApp exception comes back as an error reply whose reason wraps it in
  `ClientAppException` (the in-process engine writes a SuperNode's `"<class 'X'>:<'text'>"`).
- `backend_config` keys: `init_args` (for `ray.init`), `client_resources` (Flower's default
  `num_cpus=2, num_gpus=0`: one actor on a 2-core machine; `run_ray`'s: 1 CPU), `actor`; `-` in
  keys becomes `_`.
- It sets Flower's process-global TaskIdentity (random run id) and leaves it set.
- It is deprecated in 1.42 in favour of `flwr run` (logs a warning, filtered out here).
- The ServerApp thread starts *before* the virtual nodes are registered, so a ServerApp that
  lists `grid.get_node_ids()` at once may see none or some of them: the wrapper waits for all.
- `ray.init()` without an address joins a cluster recorded by `ray start` in
  /tmp/ray/ray_current_cluster (or named by RAY_ADDRESS): `address="local"` keeps the run in a
  private instance unless the scenario names an address.
- `RayBackend.init_ray` rewrites the driver's `PYTHONPATH` (longer on every run) and the ClientApp
  actors keep living for seconds after `ray.shutdown()` (they notice the dead raylet late):
  `run_ray` restores the environment and waits for the Ray processes it started.
- Flower reads `FLWR_TELEMETRY_ENABLED` once, when `flwr` is imported: setting the variable at run
  time only reaches the actors, so the driver's module flag is set for the run too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fedgan.simulator.engines.procs import ProcKey, descendants, wait_gone
from fedgan.wire import flwr_internals as fi
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

__all__ = ["RayNotInstalledError", "run_ray", "with_run_config"]

log = logging.getLogger(__name__)

RunConfigValue = bool | int | float | str

INSTALL_HINT = "pip install -e '.[ray]'"

NODE_WAIT_S = 60.0
"""Longest wait for the virtual nodes to register before the ServerApp starts anyway."""
EXIT_WAIT_S = 20.0
"""Longest wait for Ray's processes to exit after `ray.shutdown()` before they are killed."""

QUIET_ENV: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}
"""Defaults for the run (a value the user set wins): no telemetry, update check or usage stats."""

QUIET_INIT_ARGS: dict[str, Any] = {
    "logging_level": "ERROR",
    "log_to_driver": False,
    "include_dashboard": False,
}
"""Defaults for `ray.init` (backend_config["init_args"] wins)."""


class RayNotInstalledError(ImportError):
    """Ray (Flower's `simulation` extra) is missing."""


class _RunConfigClientApp(ClientApp):
    """A ClientApp that shows `run_config` to the wrapped ClientApp during each call."""

    def __init__(
        self,
        inner: ClientApp,
        run_config: Mapping[str, RunConfigValue],
        torch_threads: int | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._run_config = dict(run_config)
        self._torch_threads = torch_threads

    def __call__(self, message: Message, context: Context) -> Message:
        if self._torch_threads is not None:
            _set_torch_threads(self._torch_threads)
        original = context.run_config
        context.run_config = {**original, **self._run_config}
        try:
            return self._inner(message, context)
        finally:
            # Flower's simulation rejects a Context whose run_config changed: put it back.
            context.run_config = original


def _set_torch_threads(n: int) -> None:
    """Cap torch's intra-op threads in this (actor) process: an actor given one CPU must not
    spin more threads. Ray's own OMP_NUM_THREADS default loses to a value set in the driver's
    environment, which the actors inherit."""
    try:
        import torch
    except ImportError:  # a ClientApp without torch has nothing to cap
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _wait_for_nodes(grid: Grid, n: int, timeout: float) -> None:
    """Block until `n` nodes are registered (at most `timeout` s; then go on and log it)."""
    deadline = time.monotonic() + timeout
    while (found := len(list(grid.get_node_ids()))) < n:
        if time.monotonic() >= deadline:
            log.warning("only %d of %d virtual nodes registered after %.0f s", found, n, timeout)
            return
        time.sleep(0.02)


def with_run_config(
    server_app: ServerApp,
    client_app: ClientApp,
    run_config: Mapping[str, RunConfigValue],
    *,
    num_nodes: int = 0,
    torch_threads: int | None = None,
    on_server_exit: Callable[[], None] | None = None,
) -> tuple[ServerApp, ClientApp]:
    """Wrap both apps so that they see `run_config` where the runtime supplies none.

    The ServerApp first waits for `num_nodes` nodes and calls `on_server_exit` when it ends;
    the ClientApp caps torch at `torch_threads` threads in the process that runs it.
    """
    config = dict(run_config)
    wrapped_server = ServerApp()

    @wrapped_server.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            if num_nodes:
                _wait_for_nodes(grid, num_nodes, NODE_WAIT_S)
            context.run_config = {**context.run_config, **config}
            server_app(grid=grid, context=context)
        finally:
            if on_server_exit is not None:
                on_server_exit()

    return wrapped_server, _RunConfigClientApp(client_app, config, torch_threads)


def _require_ray() -> None:
    """Raise a clear error when Ray is missing (Flower itself would exit the process)."""
    if importlib.util.find_spec("ray") is None:
        raise RayNotInstalledError(
            "The Ray engine needs Ray, which comes with Flower's `simulation` extra. "
            f"Install it with: {INSTALL_HINT}  (or use the in-process engine)"
        )


# --- containment: environment, log noise, processes ----------------------------------------


@contextlib.contextmanager
def _run_environment(defaults: Mapping[str, str]) -> Iterator[None]:
    """Set `defaults` where unset for the run, then put back those and PYTHONPATH (Flower's Ray
    backend rewrites it in the driver); the driver's telemetry flag follows the env meanwhile."""
    telemetry = fi.telemetry_flag()
    keys = [*defaults, "PYTHONPATH"]
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_flag = telemetry.FLWR_TELEMETRY_ENABLED
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    telemetry.FLWR_TELEMETRY_ENABLED = os.environ.get("FLWR_TELEMETRY_ENABLED", saved_flag)
    try:
        yield
    finally:
        telemetry.FLWR_TELEMETRY_ENABLED = saved_flag
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class _DropDeprecation(logging.Filter):
    """Drops Flower's per-call 'run_simulation is deprecated' warning (we know; see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.WARNING
            and "DEPRECATED FEATURE" in str(record.msg)
            and "run_simulation" in str(record.args)
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the two notices every run prints (Flower's deprecation, Ray's FutureWarning)."""
    flwr_logger = logging.getLogger("flwr")
    drop = _DropDeprecation()
    flwr_logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Tip: In future versions of Ray", category=FutureWarning
            )
            yield
    finally:
        flwr_logger.removeFilter(drop)


def _is_ray(pid: int) -> bool:
    """gcs_server, raylet, agents and workers ("ray::ClientAppActor") all name Ray; other
    children of this process (say, a caller's process pool) are none of ours to reap."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").lower()
    except OSError:
        return False
    return b"ray" in cmd


def _ray_descendants(root: int) -> set[ProcKey]:
    """Live descendants of `root` that belong to Ray (Linux /proc; empty elsewhere)."""
    return descendants(root, keep=_is_ray)


def _reap(procs: set[ProcKey], timeout: float) -> None:
    """Wait up to `timeout` s for `procs` to exit, then SIGKILL what is left (and say so)."""
    left = wait_gone(procs, timeout)
    for pid, _ in sorted(left):
        log.warning("Ray process %d still running %.0f s after shutdown: killing it", pid, timeout)
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            os.kill(pid, signal.SIGKILL)


def run_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    run_config: dict[str, bool | int | float | str],
    backend_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Run the apps with `flwr.simulation.run_simulation` on `num_nodes` virtual SuperNodes.

    Ray runs quietly in a private local instance unless `init_args` names an `address`; every
    Ray process it started has exited when this returns.
    """
    _require_ray()
    config: dict[str, dict[str, Any]] = (
        {k: dict(v) for k, v in backend_config.items()} if backend_config is not None else {}
    )
    init_args = config.setdefault("init_args", {})
    for key, value in QUIET_INIT_ARGS.items():
        init_args.setdefault(key, value)
    if not init_args.get("address"):
        init_args["address"] = "local"
    # Flower's default is 2 CPUs per client; one actor per CPU suits many small clients better.
    resources = config.setdefault("client_resources", {"num_cpus": 1, "num_gpus": 0})
    threads = max(1, int(resources.get("num_cpus", 1)))

    ray_procs: set[ProcKey] = set()
    before = _ray_descendants(os.getpid())  # not ours to wait for (say, a caller's own Ray)

    def snapshot() -> None:  # runs in the ServerApp thread, while Ray is still up
        ray_procs.update(_ray_descendants(os.getpid()) - before)

    wrapped_server, wrapped_client = with_run_config(
        server_app,
        client_app,
        run_config,
        num_nodes=num_nodes,
        torch_threads=threads,
        on_server_exit=snapshot,
    )
    with _run_environment(QUIET_ENV), _quiet():
        # Imported late: flwr.simulation costs ~1.3 s to import and is only useful with Ray.
        import ray

        started_here = not ray.is_initialized()
        try:
            fi.run_simulation(
                server_app=wrapped_server,
                client_app=wrapped_client,
                num_supernodes=num_nodes,
                backend_name="ray",
                backend_config=config,
            )
        finally:
            # Flower shuts Ray down only if its backend got built; make sure in every case.
            if started_here and ray.is_initialized():
                snapshot()
                ray.shutdown()
            _reap(ray_procs, EXIT_WAIT_S)
