"""Plug-ins by `module:attr` / `file.py:attr`: they work, and failures name the file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pytest
from fedgan.simulator.centralized import run_centralized
from fedgan.simulator.gan.lipschitz import get_control
from fedgan.simulator.gan.objectives import OBJECTIVES
from fedgan.simulator.registry import RegistryError
from fedgan.simulator.scenario import ScenarioError, validate


def test_broken_file_names_the_file_and_the_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("def oops(:\n")
    with pytest.raises(RegistryError, match=r"broken\.py.*failed to import: SyntaxError"):
        OBJECTIVES.get(f"{bad}:Thing")
    with pytest.raises(RegistryError, match=r"does not exist"):
        OBJECTIVES.get(f"{tmp_path / 'nope.py'}:Thing")
    with pytest.raises(RegistryError, match=r"failed to import: ModuleNotFoundError"):
        OBJECTIVES.get("no_such_module_xyz:Thing")


def test_wrong_type_and_missing_attribute(tmp_path: Path) -> None:
    f = tmp_path / "things.py"
    f.write_text("class NotAnObjective:\n    pass\n")
    with pytest.raises(
        RegistryError, match="expected a subclass of fedgan.simulator.gan.objectives.Objective"
    ):
        OBJECTIVES.get(f"{f}:NotAnObjective")
    with pytest.raises(RegistryError, match="has no attribute 'Missing'"):
        OBJECTIVES.get(f"{f}:Missing")
    with pytest.raises(RegistryError, match="expected a subclass of .*LipschitzControl"):
        get_control(f"{f}:NotAnObjective")


def test_objective_and_dataset_plugins_train(tmp_path: Path) -> None:
    f = tmp_path / "mine.py"
    f.write_text(
        "import numpy as np, pandas as pd\n"
        "from dataclasses import dataclass\n"
        "import torch.nn.functional as F\n"
        "from fedgan.simulator.data import Dataset\n"
        "from fedgan.simulator.gan.objectives import Objective\n"
        "@dataclass(frozen=True)\n"
        "class Softplus(Objective):\n"
        "    name: str = 'softplus'\n"
        "    def critic_loss(self, r, f):\n"
        "        return F.softplus(-r).mean() + F.softplus(f).mean()\n"
        "    def generator_loss(self, f):\n"
        "        return F.softplus(-f).mean()\n"
        "def blobs(n_samples=None, seed=0, spread=1.0):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    n = n_samples or 100\n"
        "    g = rng.integers(0, 2, n)\n"
        "    x = (rng.standard_normal((n, 2)) * spread + 3 * g[:, None]).astype('float32')\n"
        "    return Dataset('blobs', x, pd.DataFrame({'blob': g}))\n"
    )
    raw = {
        "data": {"dataset": f"{f}:blobs", "n_samples": 300, "params": {"spread": 0.5}},
        "gan": {
            "objective": f"{f}:Softplus",
            "generator": {"widths": [8]},
            "critic": {"widths": [8]},
            "batch_size": 16,
        },
        "train": {"steps": 5},
        "evaluation": {"every": 5, "n_samples": 50, "min_group_size": 2},
    }
    res = run_centralized(validate(raw), tmp_path / "runs")
    assert "recall" in set(res.metrics["metric"])
    assert set(res.metrics["group_by"]) >= {"blob"}
    with pytest.raises(ScenarioError, match="bogus"):
        validate({**raw, "data": {**raw["data"], "params": {"bogus": 1}}})


def test_one_signature_checker_serves_every_registry() -> None:
    """Datasets, partitioners, strategies and protocols check parameters through
    `simulator.registry.signature`: nobody else reads signatures."""
    root = Path(__file__).resolve().parents[1]
    readers = {
        str(p.relative_to(root))
        for pkg in ("simulator", "server", "clients", "wire")
        for p in (root / pkg).rglob("*.py")
        if "inspect.signature(" in p.read_text()
    }
    assert readers == {"simulator/registry.py"}


def test_signature_check_names_unknown_and_missing_parameters() -> None:
    from fedgan.simulator.registry import signature

    def component(groups, n_clients, rng, alpha, beta=1.0, *, gamma=None):  # type: ignore[no-untyped-def]
        return None

    sig = signature("partitioner", "mine", component, skip=3)
    assert sig.positional == ("groups", "n_clients", "rng")
    assert list(sig.params) == ["alpha", "beta", "gamma"]
    check = sig.check({"beta": 2, "delta": 0, "aardvark": 1})
    assert check.unknown == ["aardvark", "delta"] and check.missing == ["alpha"]
    assert check.problems("partitioner", "mine") == [
        "partitioner 'mine': unknown parameter(s) 'aardvark', 'delta'; allowed: alpha, beta, gamma",
        "partitioner 'mine': missing required parameter(s) 'alpha'",
    ]
    assert sig.check({"alpha": 1}, supplied=()).missing == []
    assert sig.check({}, supplied=("alpha",)).missing == []
    assert check.by_key("p.params", "mine")[0] == (
        "p.params.aardvark: mine has no such parameter; allowed: alpha, beta, gamma"
    )

    def open_ended(a, **kwargs):  # type: ignore[no-untyped-def]
        return None

    loose = signature("dataset", "x", open_ended)
    assert loose.check({"anything": 1}).unknown == []
    assert loose.check({"anything": 1}, open_kwargs=False).unknown == ["anything"]
    assert loose.accepts("seed") and not signature("d", "c", component).accepts("seed")
    with pytest.raises(RegistryError, match="cannot read its signature"):
        signature("dataset", "builtin", type)


def test_parameters_are_checked_against_annotations_and_typed_defaults() -> None:
    """An int passes where a float is annotated, None only where the annotation allows it, a
    list where a tuple or sequence is; a parameter without annotation is checked against its
    default's type when that is a plain scalar, and not at all otherwise."""
    from fedgan.simulator.registry import signature

    # Annotations are read in the function's module (here: strings, read in this module's
    # namespace), so the names they use are imported at the top of the file.
    def rule(  # type: ignore[no-untyped-def]
        rate: float = 1.0,
        rounds: int | None = None,
        modes: Sequence[int] = (),
        pair: tuple[float, float] = (0.0, 1.0),
        how: Literal["mean", "median"] = "mean",
        table: Mapping[str, float] | None = None,
        flag: bool = False,
        inferred=0.5,
        untyped=None,
        anything=[],  # noqa: B006 - a list default says nothing about its elements
    ):
        return None

    sig = signature("strategy", "rule", rule)
    fine = {
        "rate": 2,  # an int where a float is annotated
        "rounds": None,
        "modes": [1, 2],
        "pair": [0, 0.5],  # YAML has no tuples
        "how": "median",
        "table": {"a": 1},
        "flag": True,
        "inferred": 3,
        "untyped": "whatever",
        "anything": {"x": "y"},
    }
    assert sig.check(fine).wrong == {}
    wrong = {
        "rate": None,
        "rounds": 1.5,
        "modes": [1, "two"],
        "pair": [1.0],
        "how": "mode",
        "table": {"a": "b"},
        "flag": 1,
        "inferred": "half",
    }
    got = sig.check(wrong).wrong
    assert set(got) == set(wrong)
    assert got["rate"] == "must be a number, got null"
    assert got["rounds"] == "must be an integer or null, got 1.5 (a number)"
    assert got["flag"] == "must be true or false, got 1 (an integer)"
    assert got["inferred"] == "must be a number, got 'half' (a string)"
    assert "one of 'mean', 'median'" in got["how"]
    assert sig.check({"rate": "x"}).by_key("strategy.params", "rule") == [
        "strategy.params.rate: rule: rate must be a number, got 'x' (a string)"
    ]
    assert sig.check({"rate": True}).wrong == {"rate": "must be a number, got true"}


def test_unreadable_annotations_leave_their_parameter_unchecked(tmp_path: Path) -> None:
    """A name imported only for type checkers cannot be evaluated: that parameter is not
    checked, the others still are."""
    f = tmp_path / "lazy_rule.py"
    f.write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from numpy import ndarray\n"
        "def rule(data: ndarray | None = None, rate: float = 1.0):\n"
        "    return None\n"
    )
    from fedgan.simulator.registry import load_plugin, signature

    sig = signature("strategy", "rule", load_plugin(f"{f}:rule", "strategy"))  # type: ignore[arg-type]
    assert sig.check({"data": "anything", "rate": "x"}).wrong == {
        "rate": "must be a number, got 'x' (a string)"
    }


def test_a_typo_suggests_the_registered_name() -> None:
    from fedgan.server.strategies import STRATEGIES

    suggestion = r"unknown strategy 'fedmeadian'; did you mean 'fedmedian'\?"
    with pytest.raises(RegistryError, match=suggestion):
        STRATEGIES.get("fedmeadian")
