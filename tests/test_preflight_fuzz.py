"""The preflight never raises: over every registry a scenario names, a mistake — an unknown
name, a plug-in file that is missing, does not parse, raises on import or holds the wrong
thing, a module that does not exist, a parameter of the wrong type — is reported by `validate`,
`run`, `sweep` and the Python API with its YAML path, exit code 2 and no traceback
(hypothesis)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedgan.simulator.api import check as api_check
from fedgan.simulator.cli import app
from fedgan.simulator.registry import Registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import tiny_raw

runner = CliRunner()

Raw = dict[str, Any]

NAMED: dict[str, tuple[str, Callable[[str], Raw]]] = {
    # registry kind: (the YAML path of the name, a scenario naming `x` there)
    "dataset": ("data.dataset", lambda x: tiny_raw(data={"dataset": x})),
    "objective": ("gan.objective", lambda x: tiny_raw(gan={"objective": x})),
    "lipschitz control": (
        "gan.lipschitz.name",
        lambda x: tiny_raw(gan={"lipschitz": {"name": x}}),
    ),
    "generator network": (
        "gan.generator.kind",
        lambda x: tiny_raw(gan={"generator": {"kind": x, "widths": [16, 16]}}),
    ),
    "critic network": (
        "gan.critic.kind",
        lambda x: tiny_raw(gan={"critic": {"kind": x, "widths": [16, 16]}}),
    ),
    "partitioner": ("partition.name", lambda x: tiny_raw(partition={"name": x, "params": {}})),
    "strategy": ("strategy.name", lambda x: tiny_raw(strategy={"name": x})),
    "protocol": ("federation.protocol", lambda x: tiny_raw(federation={"protocol": x})),
    "metric": ("evaluation.metrics", lambda x: tiny_raw(evaluation={"metrics": [x]})),
    "weighting": (
        "federation.protocol_params.weighting.name",
        lambda x: tiny_raw(
            federation={"protocol": "mdgan", "protocol_params": {"weighting": {"name": x}}}
        ),
    ),
}
CRITIC_STRATEGY = ("strategy.critic.name", lambda x: tiny_raw(strategy={"critic": {"name": x}}))
PLACES = [*NAMED.values(), CRITIC_STRATEGY]

PLUGINS = {
    "broken.py": "def oops(:\n",  # a SyntaxError
    "raises.py": "raise RuntimeError('boom at import')\n",
    "things.py": "NOT_A_CLASS = 3\n",
    "rule.py": (
        "from flwr.serverapp.strategy import FedAvg\n\n\n"
        "class Boosted(FedAvg):\n"
        "    def __init__(self, boost: float = 1.0, off: int | None = None, **kwargs):\n"
        "        super().__init__(**kwargs)\n"
        "        self.boost, self.off = boost, off\n\n\n"
        "def split(groups, n_clients, rng, share=0.5):  # typed by its default only\n"
        "    import numpy as np\n"
        "    return list(np.array_split(np.arange(len(groups)), n_clients))\n"
    ),
}


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    for name, text in PLUGINS.items():
        (folder / name).write_text(text)
    return folder


def bad_names(folder: Path) -> st.SearchStrategy[str]:
    """Names no registry resolves: typos, and plug-ins that cannot be used."""
    typo = st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12).filter(
        lambda t: t not in KNOWN
    )
    return st.one_of(
        typo,
        st.sampled_from(
            [
                "fedmeadian",
                f"{folder}/missing.py:Foo",
                "my.py:Foo",
                f"{folder}/broken.py:Foo",
                f"{folder}/raises.py:Foo",
                f"{folder}/things.py:NOT_A_CLASS",
                f"{folder}/things.py:Missing",
                "no_such_module_xyz:Foo",
                ":Foo",
                "x.py:",
            ]
        ),
    )


FLOATS = ["abc", True, [1.0], {"a": 1}, None]
INTS = [2.5, "3", False, [1], None]


def wrong_params(folder: Path) -> list[tuple[str, Callable[[Any], Raw], list[Any]]]:
    """(path of a typed parameter, a scenario giving it `v`, values of the wrong type)."""
    rule = f"{folder}/rule.py"
    mdgan = {"protocol": "mdgan"}
    return [
        ("data.params.sigma", lambda v: tiny_raw(data={"params": {"sigma": v}}), FLOATS),
        ("data.params.n_modes", lambda v: tiny_raw(data={"params": {"n_modes": v}}), INTS),
        (
            "gan.lipschitz.params.lam",
            lambda v: tiny_raw(gan={"lipschitz": {"name": "r1", "params": {"lam": v}}}),
            FLOATS,
        ),
        (
            "partition.params.alpha",
            lambda v: tiny_raw(partition={"name": "dirichlet", "params": {"alpha": v}}),
            FLOATS,
        ),
        (
            "strategy.params.eta",
            lambda v: tiny_raw(strategy={"name": "fedadam", "params": {"eta": v}}),
            FLOATS,
        ),
        (
            "strategy.critic.params.eta",
            lambda v: tiny_raw(strategy={"critic": {"name": "fedadam", "params": {"eta": v}}}),
            FLOATS,
        ),
        (
            "federation.protocol_params.swap_every",
            lambda v: tiny_raw(federation={**mdgan, "protocol_params": {"swap_every": v}}),
            INTS,
        ),
        (
            "federation.protocol_params.weighting.params.q",
            lambda v: tiny_raw(
                federation={
                    **mdgan,
                    "protocol_params": {
                        "weighting": {"name": "coverage_weighted", "params": {"q": v}}
                    },
                }
            ),
            FLOATS,
        ),
        (
            "strategy.params.boost",
            lambda v: tiny_raw(strategy={"name": f"{rule}:Boosted", "params": {"boost": v}}),
            FLOATS,
        ),
        (
            "strategy.params.off",
            lambda v: tiny_raw(strategy={"name": f"{rule}:Boosted", "params": {"off": v}}),
            [x for x in INTS if x is not None],  # `int | None`: null is allowed
        ),
        (
            "partition.params.share",
            lambda v: tiny_raw(partition={"name": f"{rule}:split", "params": {"share": v}}),
            FLOATS,
        ),
    ]


KNOWN: set[str] = set()

COMMANDS = ["validate", "run", "sweep"]
"""Every command that makes the preflight's checks (the Python API is checked each time)."""

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run, as in test_scenario_fuzz
    database=None,  # no .hypothesis folder in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _all_registries() -> dict[str, Registry[Any]]:
    """Every registry a scenario's validation and preflight can reach, by kind."""
    import fedgan.server.protocols  # noqa: F401 - imported for their registries
    import fedgan.server.strategies  # noqa: F401
    import fedgan.simulator.data  # noqa: F401
    import fedgan.simulator.engines.runner  # noqa: F401
    import fedgan.simulator.metrics.registry  # noqa: F401
    import fedgan.simulator.partition  # noqa: F401
    import fedgan.simulator.weighting  # noqa: F401

    found: dict[str, Registry[Any]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("fedgan.simulator.", "fedgan.server.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Registry):
                found[value.kind] = value
    return found


NOT_NAMED = {"rule": "the views' rules (simulator.metrics.registry.RULES) are set in code"}
"""Registries no scenario key names."""


def test_every_registry_is_in_the_property_test() -> None:
    """A new registry a scenario can name joins `NAMED`, so the property test covers it."""
    found = set(_all_registries()) - set(NOT_NAMED)
    assert found <= set(NAMED), f"registries missing from NAMED: {sorted(found - set(NAMED))}"


def _assert_reported(folder: Path, raw: Raw, path: str, command: str) -> None:
    scenario = folder / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    problems = api_check(scenario)  # the Python API: a list, never an exception
    assert any(p.startswith(f"{path}:") for p in problems), (path, problems)
    out = folder / "runs"
    extra = {"validate": [], "run": ["--out", str(out)], "sweep": ["--seeds", "0,1"]}[command]
    if command == "sweep":
        extra += ["--out", str(out)]
    res = runner.invoke(app, [command, str(scenario), *extra])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, (path, res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    # validate and run list 'path: message'; a sweep prefixes each with its combination
    assert f"- {path}:" in text or f": {path}:" in text, (path, text)
    assert not out.exists(), "no run folder for a run that cannot start"


@FUZZ
@given(data=st.data())
def test_a_bad_name_in_any_registry_is_a_clean_error(plugins: Path, data: st.DataObject) -> None:
    path, make = data.draw(st.sampled_from(PLACES), label="place")
    name = data.draw(bad_names(plugins), label="name")
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    _assert_reported(plugins, make(name), path, command)


@FUZZ
@given(data=st.data())
def test_a_parameter_of_the_wrong_type_is_a_clean_error(
    plugins: Path, data: st.DataObject
) -> None:
    path, make, values = data.draw(st.sampled_from(wrong_params(plugins)), label="parameter")
    value = data.draw(st.sampled_from(values), label="value")
    command = data.draw(st.sampled_from(COMMANDS), label="command")
    _assert_reported(plugins, make(value), path, command)


KNOWN.update(n for reg in _all_registries().values() for n in reg.names())
