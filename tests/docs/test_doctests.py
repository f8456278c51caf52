"""The examples in the public API's docstrings run (a `--doctest-modules` for just these
modules, without changing pytest's options for the rest of the suite)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULES = {  # module: the number of examples it holds at least
    "fedgan.simulator.api": 10,
    "fedgan.simulator.metrics.prdc": 8,
    "fedgan.simulator.metrics.forgetting": 6,
    "fedgan.simulator.summary": 2,
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_docstring_examples_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the examples name scenarios/quickstart.yaml
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, report=True)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (above)"
    assert result.attempted >= MODULES[name], (name, result.attempted)
