"""Sample-level DP-SGD end to end: every protocol's clients run it, the engines agree, and each
client's ε is dp-accounting's for its own points and critic steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.api import run
from fedgan.simulator.prepare import federated_data
from fedgan.simulator.scenario import validate

from tests.conftest import tiny_raw

KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def _raw(protocol: str, engine: str) -> dict[str, Any]:
    federation: dict[str, Any] = {"rounds": 2, "local_steps": 3, "protocol": protocol}
    if protocol == "uagan":
        federation["protocol_params"] = {"pi": "uniform"}
    return tiny_raw(
        privacy={"level": "sample", "noise_multiplier": 1.2, "clip": 1.0, "delta": 1e-3},
        federation=federation,
        engine={"name": engine},
    )


@pytest.mark.parametrize("protocol", ["fedavg", "uagan"])
def test_engines_agree_and_each_client_spends_its_own_epsilon(
    tmp_path: Path, protocol: str
) -> None:
    engines = ("vectorized", "inprocess")
    tables = {e: run(_raw(protocol, e), out_dir=tmp_path / e).metrics for e in engines}
    a, b = tables["vectorized"], tables["inprocess"]
    both = a.merge(b, on=KEYS, how="outer", suffixes=("_v", "_i"), indicator=True)
    assert (both["_merge"] == "both").all()
    np.testing.assert_allclose(both["value_v"], both["value_i"], rtol=1e-5, atol=1e-6)
    s = validate(_raw(protocol, "vectorized"))
    data = federated_data(s)
    last = a[(a["metric"] == "privacy.epsilon") & (a["scope"] == "client") & (a["round"] == 2)]
    eps = dict(zip(last["client"], last["value"], strict=True))
    assert sorted(eps) == list(range(4))
    for c, value in eps.items():
        n = len(data.client_train[c])
        q = min(32, n) / n  # tiny's batch 32 of the client's points
        steps = 2 * 3  # every client every round: rounds × local steps × n_critic (1)
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.2))
        expected = dp_accounting.rdp.RdpAccountant().compose(event, steps).get_epsilon(1e-3)
        assert value == pytest.approx(expected, rel=1e-9), c
    run_eps = a[(a["metric"] == "privacy.epsilon") & (a["scope"] == "global") & (a["round"] == 2)]
    assert float(run_eps["value"].iloc[0]) == pytest.approx(max(eps.values()))
    assert not pd.Series(a["metric"]).str.startswith("train.").any()
