"""User-level DP-FedAvg end to end: the aggregation against a hand computation, ε against
dp-accounting called here, what reaches the server, the target-ε refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pandas as pd
import pytest
from fedgan.clients.app import app as real_client_app
from fedgan.clients.training import client_train
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.simulator.cohorts import sample_clients
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import resume_federated, run_federated
from fedgan.simulator.messages import NUM_EXAMPLES, RELEASED_KEYS, split_arrays
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.simulator.scenario import ScenarioError, resolved_yaml
from fedgan.simulator.store import RunStore
from fedgan.wire.codec import metrics_of
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import Message, MessageType

from tests.conftest import tiny


def users(privacy: dict[str, Any], **sections: Any) -> Any:
    """100 clients of 32 training points each (iid), 10 a round, tiny networks."""
    base: dict[str, Any] = {
        "data": {"n_samples": 5000, "params": {"minority_modes": [], "minority_weight": 0.05}},
        "partition": {"name": "iid", "params": {}, "n_clients": 100},
        "federation": {"rounds": 2, "local_steps": 2, "clients_per_round": 10},
        "evaluation": {"every": 2, "n_samples": 200},
        "privacy": {"level": "user", "delta": 1e-3, **privacy},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return tiny(**base)


def _round_one(s: Any, tmp_path: Path) -> tuple[dict[str, np.ndarray], dict, list]:
    """The run's round-1 global arrays, the initial ones and the round's client updates."""
    res = run_federated(s, tmp_path)
    data = federated_data(s)
    init, _ = split_arrays(initial_state(s, make_gan(s, data)).arrays(), "both")
    cohort = sample_clients(s, 1)
    updates = [client_train(s, c, 1, init, None).arrays for c in cohort]
    return dict(np.load(res.path / "checkpoints" / "round-000001.npz")), init, updates


def test_no_noise_and_no_clip_is_the_uniform_mean_of_the_cohort(tmp_path: Path) -> None:
    s = users(
        {"noise_multiplier": 0.0, "clip": 1e12, "sampling": "fixed"},
        federation={"rounds": 1},
        evaluation={"every": 1},
    )
    ckpt, init, updates = _round_one(s, tmp_path)
    assert len(updates) == 10 and set(ckpt) == set(init)
    for key in init:  # every client counts 1/m, whatever its size
        expected = np.mean([u[key].astype(np.float64) for u in updates], axis=0)
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)


def test_each_update_is_clipped_as_one_vector_over_every_federated_array(tmp_path: Path) -> None:
    clip = 0.01  # updates of 2 local steps have norms ≈ 0.023 here
    s = users(
        {"noise_multiplier": 0.0, "clip": clip, "sampling": "fixed"},
        federation={"rounds": 1},
        evaluation={"every": 1},
    )
    ckpt, init, updates = _round_one(s, tmp_path)
    keys = sorted(init)
    deltas = [
        np.concatenate([(u[k].astype(np.float64) - init[k]).ravel() for k in keys])
        for u in updates
    ]
    norms = [float(np.linalg.norm(d)) for d in deltas]
    assert min(norms) > clip  # the case is one where the clip acts on every update
    mean = sum(d * min(1.0, clip / n) for d, n in zip(deltas, norms, strict=True)) / 10
    got = np.concatenate([(ckpt[k].astype(np.float64) - init[k]).ravel() for k in keys])
    np.testing.assert_allclose(got, mean, rtol=1e-4, atol=1e-7)
    assert np.linalg.norm(got) <= clip * (1 + 1e-5)


def _rdp_epsilon(event: Any, rounds: int, delta: float, relation: Any = None) -> float:
    acc = (
        dp_accounting.rdp.RdpAccountant()
        if relation is None
        else dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    )
    return float(acc.compose(event, rounds).get_epsilon(delta))


def test_epsilon_rows_are_dp_accountings_for_poisson_cohorts(tmp_path: Path) -> None:
    sigma = 1.1
    s = users({"noise_multiplier": sigma, "clip": 1.0}, federation={"rounds": 3})
    m = run_federated(s, tmp_path).metrics
    eps = m[m.metric == "privacy.epsilon"].set_index("round")["value"]
    assert list(eps.index) == [1, 2, 3]
    for r in (1, 2, 3):
        event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(sigma))
        assert eps[r] == pytest.approx(_rdp_epsilon(event, r, 1e-3), rel=1e-6)
    flower = m[m.metric == "privacy.epsilon_flower"].set_index("round")["value"]
    # No amplification: the Gaussian mechanism composed r times, ≥ the sampled account.
    assert (flower > eps).all()
    for r in (1, 2, 3):
        gauss = _rdp_epsilon(dp_accounting.GaussianDpEvent(sigma), r, 1e-3)
        assert flower[r] == pytest.approx(gauss, rel=1e-9)
    clipped = m[m.metric == "privacy.clipped_fraction"]["value"]
    assert ((clipped >= 0) & (clipped <= 1)).all() and len(clipped) == 3


def test_fixed_cohorts_are_accounted_under_replace_one_with_twice_the_sensitivity(
    tmp_path: Path,
) -> None:
    sigma = 1.5
    privacy = {"noise_multiplier": sigma, "clip": 1.0, "sampling": "fixed"}
    s = users(privacy, federation={"rounds": 2})
    m = run_federated(s, tmp_path).metrics
    eps = m[m.metric == "privacy.epsilon"].set_index("round")["value"]
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        100, 10, dp_accounting.GaussianDpEvent(sigma / 2)
    )
    relation = dp_accounting.NeighboringRelation.REPLACE_ONE
    assert eps[2] == pytest.approx(_rdp_epsilon(event, 2, 1e-3, relation), rel=1e-6)


def test_poisson_cohorts_vary_in_size_with_mean_q_n() -> None:
    s = users({"noise_multiplier": 1.0, "clip": 1.0}, federation={"rounds": 400})
    sizes = np.array([len(sample_clients(s, r)) for r in range(1, 401)])
    # Binomial(100, 0.1): mean 10, sd 3; over 400 rounds the mean is within 4 sd/√400 of 10.
    assert abs(sizes.mean() - 10) < 4 * 3 / 20
    assert sizes.std() == pytest.approx(3.0, rel=0.2)


class _Spy(InProcessGrid):
    """The in-process grid, keeping every message that reaches the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_server: list[Message] = []
        self.kinds: list[str] = []

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        self.kinds += [m.metadata.message_type for m in messages]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.to_server += replies
        return replies


@pytest.mark.parametrize("level", ["user", "sample"])
def test_no_client_statistic_reaches_the_server(tmp_path: Path, level: str) -> None:
    if level == "user":
        s = users({"noise_multiplier": 1.0, "clip": 1.0})
    else:
        s = tiny(privacy={"level": "sample", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3})
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    n = s.partition.n_clients
    grid = _Spy(real_client_app, n, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)})
    run_serverapp(server_app, grid)
    trains = [m for m in grid.to_server if m.metadata.message_type == MessageType.TRAIN]
    assert trains
    for msg in trains:
        metrics = metrics_of(msg)
        assert metrics is not None
        extra = set(metrics) - {*RELEASED_KEYS, NUM_EXAMPLES}
        assert not extra, sorted(extra)
        assert metrics[NUM_EXAMPLES] == 1.0  # not the client's size
    # No evaluate message: the per-client view is the simulator's, not a client's release.
    assert MessageType.EVALUATE not in grid.kinds
    kept = list((store.path / "instrumentation").glob("client-*.jsonl"))
    assert kept  # the withheld statistics stay with the simulation, marked as such
    table = pd.read_parquet(store.path / "metrics.parquet")
    assert not table["metric"].str.startswith(("train.", "local.", "num-examples")).any()
    assert (table["metric"] == "eval.coverage").any()


def test_target_epsilon_is_met_and_a_resume_may_not_pass_it(tmp_path: Path) -> None:
    s = users(
        {"target_epsilon": 2.0, "clip": 1.0},
        federation={"rounds": 3},
        gan={"lr_schedule": "constant"},
        evaluation={"every": 3},
    )
    res = run_federated(s, tmp_path)
    m = res.metrics
    final = float(m[(m.metric == "privacy.epsilon") & (m["round"] == 3)]["value"].iloc[0])
    assert 1.9 <= final <= 2.0
    with pytest.raises(ScenarioError, match="privacy.target_epsilon"):
        resume_federated(res.path, overrides=["federation.rounds=6"])


def test_validate_refuses_what_privacy_cannot_run_with() -> None:
    from fedgan.simulator.api import check

    base = {"level": "user", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3}
    ok = users(base).model_dump(mode="json")
    assert check(ok) == []

    def refused(key: str, **changes: Any) -> None:
        raw = {**ok, **changes}
        found = check(raw)
        assert any(p.startswith(key + ":") for p in found), (key, found)

    refused("privacy.level", partition={**ok["partition"], "n_clients": 99})
    refused("privacy.delta", privacy={**base, "delta": 0.01})
    refused("privacy.target_epsilon", privacy={**base, "target_epsilon": 3.0})
    no_noise = {k: v for k, v in base.items() if k != "noise_multiplier"}
    refused("privacy.noise_multiplier", privacy=no_noise)
    refused("strategy.name", strategy={"name": "coverage_weighted", "params": {}})
    refused("strategy.name", strategy={"name": "fedadam", "params": {}})
    refused("strategy.critic", strategy={"name": "fedavg", "critic": {"name": "fedavg"}})
    refused("federation.max_update_norm", federation={**ok["federation"], "max_update_norm": 5.0})
    refused("faults", faults={"dropout": 0.1})
    refused("federation.protocol", federation={**ok["federation"], "protocol": "tests.x:Y"})
    sample = {**tiny().model_dump(mode="json")}
    sample["privacy"] = {"level": "sample", "noise_multiplier": 1.0, "clip": 1.0, "delta": 0.5}
    found = check(sample)
    assert any(p.startswith("privacy.delta:") for p in found), found
    big = {**tiny().model_dump(mode="json"), "privacy": {**sample["privacy"], "delta": 1e-4}}
    big["gan"] = {**big["gan"], "batch_size": 10_000}
    assert any(p.startswith("gan.batch_size:") for p in check(big))
    central = {**sample, "federation": None, "privacy": base}
    assert any(p.startswith("privacy.level:") for p in check(central))


def test_adaptive_clipping_whose_count_would_spend_the_budget_is_refused() -> None:
    from fedgan.simulator.api import check

    base = {"level": "user", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3}
    raw = users(base).model_dump(mode="json")
    # 10 clients a round: the default count noise 10/20 = 0.5 is not above σ/2 = 0.5.
    raw["privacy"] = {**base, "adaptive": {}}
    assert any(p.startswith("privacy.adaptive.count_noise:") for p in check(raw))
    raw["privacy"] = {**base, "adaptive": {"count_noise": 0.6}}
    assert check(raw) == []
