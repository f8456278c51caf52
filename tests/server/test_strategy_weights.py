"""How a strategy weighs its clients (`fed.weight`): what it declares in a `weights` hook, the
`num-examples` shares of a strategy that averages by them, and nothing for a plug-in that
aggregates its own way without saying how."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedgan.server.protocols.fedavg import averages_by_examples, declared_shares
from fedgan.server.strategies import build_strategy
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.prepare import federated_data

from tests.conftest import tiny

RULES = '''
from flwr.serverapp.strategy import FedAvg


class OwnMean(FedAvg):
    """Its own aggregate_train (here FedAvg's, called through super: what it does is its own
    business) and no hook: nobody may claim to know its weights."""

    def aggregate_train(self, server_round, replies):
        return super().aggregate_train(server_round, replies)


class OnlyConfigures(FedAvg):
    """FedAvg's aggregation untouched: weighs as FedAvg."""

    def configure_train(self, server_round, arrays, config, grid):
        return super().configure_train(server_round, arrays, config, grid)


class Declares(OwnMean):
    """Declares weights 1, 2, 3, ... by partition id (normalised by the loop)."""

    def weights(self, server_round, replies):
        pids = [int(r.content["metrics"]["partition-id"]) for r in replies]
        return {p: p + 1.0 for p in pids}


class Lies(OwnMean):
    def weights(self, server_round, replies):
        return {99: 1.0}
'''


def _weights(tmp_path: Path, cls: str) -> dict[int, float]:
    (tmp_path / "rules.py").write_text(RULES)
    s = tiny(strategy={"name": f"{tmp_path / 'rules.py'}:{cls}"}, federation={"rounds": 1})
    m = run_federated(s, tmp_path / "runs").metrics
    rows = m[m["metric"] == "fed.weight"]
    return {int(c): float(v) for c, v in zip(rows["client"], rows["value"], strict=True)}


def test_own_aggregate_train_without_a_hook_writes_no_weights(tmp_path: Path) -> None:
    # Before the hook, a FedAvg subclass was taken to weigh as FedAvg: num-examples rows.
    assert _weights(tmp_path, "OwnMean") == {}


def test_a_subclass_that_keeps_fedavgs_aggregation_weighs_by_examples(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 1})
    n = np.array([len(ix) for ix in federated_data(s).client_train], dtype=float)
    got = _weights(tmp_path, "OnlyConfigures")
    assert got == pytest.approx(dict(enumerate(n / n.sum())))


def test_the_declared_weights_are_the_rows(tmp_path: Path) -> None:
    assert _weights(tmp_path, "Declares") == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4})


def test_weights_over_other_clients_fail_the_run_naming_the_hook(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Lies\.weights.*\[99\].*\[0, 1, 2, 3\]"):
        _weights(tmp_path, "Lies")


def test_declared_shares_normalise_or_refuse() -> None:
    def hook() -> None:
        return None

    assert declared_shares(None, {0, 1}, hook) == {}
    assert declared_shares({0: 1, 1: 3}, {0, 1}, hook) == {0: 0.25, 1: 0.75}
    for bad in ({0: 1.0}, {0: -1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, {0: float("nan"), 1: 1.0}, [1, 2]):
        with pytest.raises(ValueError, match="hook"):
            declared_shares(bad, {0, 1}, hook)


def test_builtins_weigh_as_before() -> None:
    assert averages_by_examples(build_strategy("fedavg", {}))
    assert averages_by_examples(build_strategy("fedadam", {}))
    assert not averages_by_examples(build_strategy("fedmedian", {}))
    assert not averages_by_examples(build_strategy("krum", {}))
