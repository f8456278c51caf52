"""fedgan — a federated, fairness-aware GAN simulator.

The installed package is this one name: the repository's folders are its subpackages
(`fedgan.simulator`, the framework-free core; `fedgan.server` and `fedgan.clients`, the Flower
ServerApp and ClientApp; `fedgan.wire`, the Flower encoding), so nothing generic — no top-level
`server` or `clients` — is claimed on the user's path.

The public Python API, imported on first use so that `import fedgan` stays light::

    import fedgan
    result = fedgan.run("scenarios/quickstart.yaml", ["federation.rounds=5"])
    fedgan.load(result.path).metrics
    fedgan.check("scenarios/quickstart.yaml", ["gan.batch_size=0"])  # problems, never raises

`run`, `check`, `resume` and `load` are `fedgan.simulator.api`'s; `load_scenario` and
`validate` build a `Scenario`; `story`, `forgotten_sets` and `group_views` read a run's metrics
table the way every view does; `sample` draws synthetic data from a run's generator and
`write_samples` writes it in the data's own units (`fedgan sample` on the command line).
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

try:
    __version__ = metadata.version("fedgan")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_API = {
    "run": "fedgan.simulator.api",
    "check": "fedgan.simulator.api",
    "resume": "fedgan.simulator.api",
    "load": "fedgan.simulator.api",
    "Scenario": "fedgan.simulator.scenario",
    "ScenarioError": "fedgan.simulator.scenario",
    "validate": "fedgan.simulator.scenario",
    "story": "fedgan.simulator.summary",
    "forgotten_sets": "fedgan.simulator.summary",
    "group_views": "fedgan.simulator.summary",
}
_RENAMED = {
    "load_scenario": ("fedgan.simulator.scenario", "load"),
    # Synthetic data out: `fedgan.sample(run, n)` draws, `fedgan.write_samples(s, "x.csv")` writes.
    "sample": ("fedgan.simulator.sample", "draw"),
    "write_samples": ("fedgan.simulator.sample", "write"),
}

__all__ = ["__version__", *_API, *_RENAMED]


def __getattr__(name: str) -> Any:
    """The public API on first use (PEP 562): `import fedgan` imports neither torch nor flwr."""
    if name in _API:
        return getattr(import_module(_API[name]), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'fedgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
