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
  `node_config["partition-id"]` and sort replies before aggregating.
- A ClientApp exception comes back as an error reply whose reason wraps it in
  `ClientAppException` (the in-process engine writes a SuperNode's `"<class 'X'>:<'text'>"`).
- `backend_config` keys: `init_args` (for `ray.init`), `client_resources` (default
  `num_cpus=2, num_gpus=0`: one actor on a 2-core machine), `actor`; `-` in keys becomes `_`.
- It sets Flower's process-global TaskIdentity (random run id) and leaves it set.
- It is deprecated in 1.42 in favour of `flwr run` (logs a warning).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

__all__ = ["RayNotInstalledError", "run_ray", "with_run_config"]

RunConfigValue = bool | int | float | str

INSTALL_HINT = "pip install -e '.[ray]'"


class RayNotInstalledError(ImportError):
    """Ray (Flower's `simulation` extra) is missing."""


class _RunConfigClientApp(ClientApp):
    """A ClientApp that shows `run_config` to the wrapped ClientApp during each call."""

    def __init__(self, inner: ClientApp, run_config: Mapping[str, RunConfigValue]) -> None:
        super().__init__()
        self._inner = inner
        self._run_config = dict(run_config)

    def __call__(self, message: Message, context: Context) -> Message:
        original = context.run_config
        context.run_config = {**original, **self._run_config}
        try:
            return self._inner(message, context)
        finally:
            # Flower's simulation rejects a Context whose run_config changed: put it back.
            context.run_config = original


def with_run_config(
    server_app: ServerApp, client_app: ClientApp, run_config: Mapping[str, RunConfigValue]
) -> tuple[ServerApp, ClientApp]:
    """Wrap both apps so that they see `run_config` where the runtime supplies none."""
    config = dict(run_config)
    wrapped_server = ServerApp()

    @wrapped_server.main()
    def _main(grid: Grid, context: Context) -> None:
        context.run_config = {**context.run_config, **config}
        server_app(grid=grid, context=context)

    return wrapped_server, _RunConfigClientApp(client_app, config)


def _require_ray() -> None:
    """Raise a clear error when Ray is missing (Flower itself would exit the process)."""
    if importlib.util.find_spec("ray") is None:
        raise RayNotInstalledError(
            "The Ray engine needs Ray, which comes with Flower's `simulation` extra. "
            f"Install it with: {INSTALL_HINT}  (or use the in-process engine)"
        )


def run_ray(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    run_config: dict[str, bool | int | float | str],
    backend_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Run the apps with `flwr.simulation.run_simulation` on `num_nodes` virtual SuperNodes."""
    _require_ray()
    # Imported late: flwr.simulation costs ~1.3 s to import and is only useful with Ray.
    from flwr.simulation import run_simulation

    wrapped_server, wrapped_client = with_run_config(server_app, client_app, run_config)
    config: dict[str, Any] | None = (
        {k: dict(v) for k, v in backend_config.items()} if backend_config is not None else None
    )
    run_simulation(
        server_app=wrapped_server,
        client_app=wrapped_client,
        num_supernodes=num_nodes,
        backend_name="ray",
        backend_config=config,
    )
