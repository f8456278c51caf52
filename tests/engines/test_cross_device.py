"""The cross-device scenario (1,000 clients, 50 a round) validates and runs two rounds on the
vectorized engine: every round trains the cohort it samples, and the minority sits on the 50
clients the partition names."""

from __future__ import annotations

from pathlib import Path

from fedgan.simulator.api import check
from fedgan.simulator.cohorts import sample_clients
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.prepare import federated_data
from fedgan.simulator.scenario import load

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "scale" / "cross-device.yaml"


def test_the_cross_device_scenario_runs_two_rounds(tmp_path: Path) -> None:
    assert check(SCENARIO) == []
    s = load(SCENARIO, ["federation.rounds=2", "evaluation.every=2", "evaluation.n_samples=500"])
    data = federated_data(s)
    assert data.n_clients == 1000
    # Modes 0 and 1 only on clients 0–49 (rest: others): 5 % of the clients hold the minority.
    holders = {c for c in range(1000) if any(str(g) in ("0", "1") for g in
               data.train.groups.iloc[data.client_train[c], 0].astype(str))}
    assert holders == set(range(50))
    m = run_federated(s, tmp_path).metrics
    replies = m[(m["metric"] == "fed.replies")].set_index("round")["value"]
    assert len(sample_clients(s, 1)) == len(sample_clients(s, 2)) == 50
    assert replies.to_dict() == {1: 50.0, 2: 50.0}
    assert (m["metric"] == "forgotten").any()  # the evaluation ran, with the one rule
