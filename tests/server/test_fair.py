"""Fairness-aware strategies: hand-computed oracles on fabricated replies, plus real rounds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fedgan.clients.training import ClientUpdate, client_train
from fedgan.server.strategies import STRATEGIES, build_strategy
from fedgan.server.strategies.fair import (
    AgnosticFedAvg,
    CoverageWeightedFedAvg,
    GroupAwareFedAvg,
    GroupDROFedAvg,
    QualityQFedAvg,
)
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import initial_state, make_gan
from fedgan.simulator.registry import RegistryError
from fedgan.simulator.store import load_run
from fedgan.wire.flwr_internals import task_identity
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg

from tests.conftest import tiny

KEYS = ("generator.w", "critic.b")


def reply(pid: int, arrays: dict[str, np.ndarray], **metrics: Any) -> Message:
    """A train reply from partition `pid` as the ClientApp sends it (same metric keys always)."""
    base: dict[str, Any] = {
        "num-examples": 10.0,
        "partition-id": float(pid),
        "local.recall": 0.5,
        "local.coverage": 0.5,
        "local.quality_loss": 0.2,
        "local.recall_hits": [1, 1],
        "local.coverage_hits": [1, 1],
        "local.group_n": [2, 2],
        "train_loss": 0.5,
    }
    base.update(metrics)
    with task_identity(1, 1, 1):
        ins = Message(
            RecordDict({"config": ConfigRecord({})}),
            dst_node_id=100 + pid,
            message_type=MessageType.TRAIN,
        )
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(base),
        }
    )
    return Message(content, reply_to=ins)


def random_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {KEYS[0]: rng.normal(size=(3, 2)), KEYS[1]: rng.normal(size=4)}


def weighted_mean(arrays: list[dict[str, np.ndarray]], w: np.ndarray) -> dict[str, np.ndarray]:
    w = np.asarray(w, dtype=np.float64) / np.sum(w)
    return {k: sum(wi * a[k] for wi, a in zip(w, arrays, strict=True)) for k in KEYS}


def assert_record(record: ArrayRecord | None, expected: dict[str, np.ndarray]) -> None:
    assert record is not None
    assert set(record) == set(expected)
    for k, v in expected.items():
        np.testing.assert_allclose(record[k].numpy(), v, rtol=1e-10, atol=1e-12, err_msg=k)


# ---------------------------------------------------------------- coverage_weighted


def test_coverage_weighted_oracle_with_nan_coverage() -> None:
    arrays = [random_arrays(i) for i in range(3)]
    n = np.array([10.0, 20.0, 30.0])
    cov = [0.2, float("nan"), 0.9]
    replies = [
        reply(i, a, **{"num-examples": n[i], "local.coverage": cov[i]})
        for i, a in enumerate(arrays)
    ]
    s = CoverageWeightedFedAvg(q=2.0, eps=0.05)
    got, metrics = s.aggregate_train(1, replies)
    filled = np.array([0.2, (0.2 + 0.9) / 2, 0.9])  # NaN → mean of the others
    w = n * (1 - filled + 0.05) ** 2
    assert_record(got, weighted_mean(arrays, w))
    assert s.last_weights == pytest.approx(
        {0: w[0] / w.sum(), 1: w[1] / w.sum(), 2: w[2] / w.sum()}
    )
    # Reported metrics stay num-examples-weighted, and the internal weight key is not reported.
    assert metrics is not None and "fair.weight" not in metrics
    assert metrics["train_loss"] == pytest.approx(0.5)


def test_coverage_weighted_q0_equals_fedavg() -> None:
    arrays = [random_arrays(i) for i in range(3)]
    replies = [
        reply(i, a, **{"num-examples": 5.0 + 7 * i, "local.coverage": 0.3 * i})
        for i, a in enumerate(arrays)
    ]
    ours, _ = CoverageWeightedFedAvg(q=0.0).aggregate_train(1, replies)
    theirs, _ = FedAvg().aggregate_train(1, replies)
    assert ours is not None and theirs is not None
    for k in KEYS:
        np.testing.assert_allclose(ours[k].numpy(), theirs[k].numpy(), rtol=1e-12)


# ---------------------------------------------------------------- quality_qfedavg


def test_quality_qfedavg_oracle_uses_floored_quality_loss() -> None:
    glob = random_arrays(9)
    arrays = [random_arrays(i) for i in range(3)]
    losses = [0.0, 0.3, 0.1]  # 0 must not reach F^(q−1) unfloored
    replies = [
        reply(i, a, **{"local.quality_loss": losses[i], "train_loss": 99.0})
        for i, a in enumerate(arrays)
    ]
    lr, q, floor = 0.1, 0.5, 1e-3
    s = QualityQFedAvg(client_learning_rate=lr, q=q, loss_floor=floor)
    # configure_train stores the sent model; set it as it would (no grid needed here).
    s.current_arrays = ArrayRecord({k: Array(v) for k, v in glob.items()})
    got, _ = s.aggregate_train(1, replies)

    L = 1 / lr
    num = {k: np.zeros_like(v) for k, v in glob.items()}
    den = 0.0
    for a, loss in zip(arrays, losses, strict=True):
        F = loss + floor
        delta = {k: L * (glob[k] - a[k]) for k in KEYS}
        norm2 = sum(float(np.sum(d**2)) for d in delta.values())
        for k in KEYS:
            num[k] += F**q * delta[k]
        den += q * F ** (q - 1) * norm2 + L * F**q
    assert_record(got, {k: glob[k] - num[k] / den for k in KEYS})
    # Flower's QFedAvg empties the records it reads: the caller's replies must survive.
    assert all(set(r.content["arrays"]) == set(KEYS) for r in replies)


# ---------------------------------------------------------------- agnostic


def test_agnostic_lambda_moves_toward_the_largest_loss() -> None:
    arrays = [random_arrays(i) for i in range(3)]
    losses = np.array([0.1, 0.5, 0.2])
    replies = [
        reply(i, a, **{"num-examples": 10.0 * (i + 1), "local.quality_loss": losses[i]})
        for i, a in enumerate(arrays)
    ]
    eta = 0.5
    s = AgnosticFedAvg(step_size=eta)
    got1, _ = s.aggregate_train(1, replies)
    # Round 1 aggregates with the initial, uniform λ: a per-client (not per-example) mean.
    assert_record(got1, weighted_mean(arrays, np.ones(3)))
    # Exponentiated gradient, mass of the three replying clients (3 × uniform share) preserved.
    rel = np.exp(eta * losses) / np.exp(eta * losses).sum() * 3
    assert [s.relative_lambda[i] for i in range(3)] == pytest.approx(rel.tolist())
    assert max(s.relative_lambda, key=s.relative_lambda.__getitem__) == 1
    # A fourth client never seen keeps its uniform share of λ over N = 4 clients.
    lam = s.mixture(4)
    assert lam.sum() == pytest.approx(1.0)
    assert lam[3] == pytest.approx(0.25)
    np.testing.assert_allclose(lam[:3], rel / 4)

    # Round 2: only clients 0 and 1 reply; weights ∝ their λ; client 2 keeps its λ.
    got2, _ = s.aggregate_train(2, replies[:2])
    assert_record(got2, weighted_mean(arrays[:2], rel[:2]))
    assert s.relative_lambda[2] == pytest.approx(rel[2])
    pair = rel[:2] * np.exp(eta * losses[:2])
    pair *= rel[:2].sum() / pair.sum()
    assert [s.relative_lambda[0], s.relative_lambda[1]] == pytest.approx(pair.tolist())
    assert sum(s.relative_lambda.values()) == pytest.approx(3.0)


# ---------------------------------------------------------------- group_aware


def test_group_aware_up_weights_the_client_holding_the_worst_group() -> None:
    arrays = [random_arrays(i) for i in range(4)]
    n = np.array([40.0, 40.0, 20.0, 30.0])
    group_n = np.array([[10, 0], [0, 10], [5, 5], [3, 3]])
    hits = np.array([[9, 0], [0, 2], [4, 1], [0, 0]])
    recall = [0.9, 0.2, 0.5, float("nan")]  # client 3: not measured, its zero hits don't count
    replies = [
        reply(
            i,
            arrays[i],
            **{
                "num-examples": n[i],
                "local.group_n": group_n[i].tolist(),
                "local.recall_hits": hits[i].tolist(),
                "local.recall": recall[i],
            },
        )
        for i in range(4)
    ]
    beta = 2.0
    s = GroupAwareFedAvg(beta=beta)
    got, _ = s.aggregate_train(1, replies)
    pooled = hits[:3].sum(0) / group_n[:3].sum(0)  # [13/15, 3/15]
    np.testing.assert_allclose(s.last_group_recall, pooled)
    shares = group_n / group_n.sum(1, keepdims=True)
    w = n * (1 + beta * shares @ (1 - pooled))
    assert_record(got, weighted_mean(arrays, w))
    # Client 1 (all in the poorly recalled group 1) gains on client 0 (same size, group 0).
    assert s.last_weights[1] > s.last_weights[0]
    assert s.last_weights[1] / s.last_weights[0] == pytest.approx(w[1] / w[0])

    # Only the single worst group counts: group 0's deficit is dropped.
    s1 = GroupAwareFedAvg(beta=beta, worst_groups=1)
    got1, _ = s1.aggregate_train(1, replies)
    w1 = n * (1 + beta * shares @ np.array([0.0, 1 - pooled[1]]))
    assert_record(got1, weighted_mean(arrays, w1))


def test_group_dro_oracle_over_two_rounds() -> None:
    arrays = [random_arrays(i) for i in range(3)]
    # Group 1 lives on client 2 alone and is never covered; group 0 is spread and covered half.
    group_n = np.array([[10, 0], [10, 0], [5, 5]])
    hits = np.array([[5, 0], [5, 0], [2, 0]])
    replies = [
        reply(
            i,
            arrays[i],
            **{
                "num-examples": 100.0,  # sizes do not enter: the rule weighs groups
                "local.group_n": group_n[i].tolist(),
                "local.coverage_hits": hits[i].tolist(),
                "local.coverage": 0.5,
            },
        )
        for i in range(3)
    ]
    s = GroupDROFedAvg(step_size=1.0, floor=0.2)
    cov = hits.sum(0) / group_n.sum(0)  # (12/25, 0)
    log_q = np.zeros(2)
    for rnd in (1, 2):
        got, _ = s.aggregate_train(rnd, replies)
        log_q = log_q + 1.0 * (1 - cov)
        q = np.exp(log_q - log_q.max())
        qt = 0.8 * q / q.sum() + 0.2 / 2
        shares = group_n / group_n.sum(0)
        w = shares @ qt
        assert_record(got, weighted_mean(arrays, w))
        np.testing.assert_allclose(s.last_group_weights, qt)
    # Two rounds of shortfall 1 vs 13/25 tilt q toward group 1, so client 2 outweighs the rest.
    assert s.last_weights[2] > s.last_weights[0] == pytest.approx(s.last_weights[1])


def test_group_aware_is_fedavg_when_groups_are_served_equally() -> None:
    arrays = [random_arrays(i) for i in range(2)]
    # Pooled recall is 5/10 in both groups: equal deficits, so shares don't matter.
    counts = ([8, 2], [4, 1]), ([2, 8], [1, 4])
    replies = [
        reply(
            i,
            arrays[i],
            **{"num-examples": 10.0 + 20 * i, "local.group_n": gn, "local.recall_hits": hits},
        )
        for i, (gn, hits) in enumerate(counts)
    ]
    got, _ = GroupAwareFedAvg(beta=5.0).aggregate_train(1, replies)
    assert_record(got, weighted_mean(arrays, np.array([10.0, 30.0])))


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("cls", "kwargs", "name"),
    [
        (CoverageWeightedFedAvg, {"q": -1.0}, "q"),
        (CoverageWeightedFedAvg, {"eps": 0.0}, "eps"),
        (CoverageWeightedFedAvg, {"q": float("nan")}, "q"),
        (QualityQFedAvg, {"client_learning_rate": 0.0}, "client_learning_rate"),
        (QualityQFedAvg, {"client_learning_rate": 0.1, "q": -0.5}, "q"),
        (QualityQFedAvg, {"client_learning_rate": 0.1, "loss_floor": 0.0}, "loss_floor"),
        (AgnosticFedAvg, {"step_size": -0.1}, "step_size"),
        (AgnosticFedAvg, {"step_size": float("inf")}, "step_size"),
        (GroupAwareFedAvg, {"beta": -1.0}, "beta"),
        (GroupAwareFedAvg, {"worst_groups": 0}, "worst_groups"),
        (GroupAwareFedAvg, {"metric": "precision"}, "metric"),
    ],
)
def test_bad_parameters_raise_with_the_name(
    cls: Callable[..., object], kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        cls(**kwargs)


def test_registered_by_name_and_yaml_cannot_set_internal_keys() -> None:
    for name in ("coverage_weighted", "quality_qfedavg", "agnostic", "group_aware"):
        assert name in STRATEGIES.names()
    with pytest.raises(RegistryError, match="train_loss_key"):
        build_strategy("quality_qfedavg", {"client_learning_rate": 0.1, "train_loss_key": "x"})
    with pytest.raises(RegistryError, match="client_learning_rate: required"):
        build_strategy("quality_qfedavg", {})
    with pytest.raises(ValueError, match="beta"):
        build_strategy("group_aware", {"beta": -2})


# ---------------------------------------------------------------- real rounds


def _cov_weights(updates: list[ClientUpdate], q: float, eps: float) -> np.ndarray:
    n = np.array([u.metrics["num-examples"] for u in updates])
    cov = np.array([u.received.coverage for u in updates])
    cov = np.where(np.isfinite(cov), cov, np.nanmean(cov))
    return n * (1 - cov + eps) ** q


def _group_weights(updates: list[ClientUpdate], beta: float) -> np.ndarray:
    """group_aware with metric=coverage (tiny's early generators recall nothing anywhere)."""
    n = np.array([u.metrics["num-examples"] for u in updates])
    gn = np.array([u.received.group_n for u in updates], dtype=float)
    hits = np.array([u.received.coverage_hits for u in updates], dtype=float)
    ok = np.array([np.isfinite(u.received.coverage) for u in updates])
    recall = hits[ok].sum(0) / np.maximum(gn[ok].sum(0), 1)
    recall[gn[ok].sum(0) == 0] = 1.0
    shares = gn / np.maximum(gn.sum(1, keepdims=True), 1)
    return n * (1 + beta * shares @ (1 - recall))


@pytest.mark.parametrize(
    ("name", "params", "weights"),
    [
        ("coverage_weighted", {"q": 3.0, "eps": 0.01}, lambda u: _cov_weights(u, 3.0, 0.01)),
        (
            "group_aware",
            {"beta": 4.0, "metric": "coverage"},
            lambda u: _group_weights(u, 4.0),
        ),
    ],
)
def test_real_round_equals_hand_weighted_mean_of_client_updates(
    tmp_path: Path,
    name: str,
    params: dict[str, Any],
    weights: Callable[[list[ClientUpdate]], np.ndarray],
) -> None:
    """Oracle as in test_loop: rerun each client's training by hand, weight by the rule."""
    s = tiny(strategy={"name": name, "params": params}, federation={"rounds": 1})
    res = run_federated(s, tmp_path)
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    updates = [client_train(s, c, 1, init, None) for c in range(4)]
    w = weights(updates)
    n = np.array([u.metrics["num-examples"] for u in updates])
    assert not np.allclose(w / w.sum(), n / n.sum()), "the rule should differ from FedAvg here"
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    for key in init:
        expected = np.tensordot(w / w.sum(), np.stack([u.arrays[key] for u in updates]), axes=1)
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("coverage_weighted", {}),
        ("quality_qfedavg", {"client_learning_rate": 0.1}),
        ("agnostic", {"step_size": 1.0}),
        ("group_aware", {"worst_groups": 2}),
        ("group_dro", {"step_size": 0.5}),
    ],
)
def test_every_fair_strategy_runs_two_rounds_by_name(
    tmp_path: Path, name: str, params: dict[str, Any]
) -> None:
    s = tiny(
        strategy={"name": name, "params": params},
        federation={"rounds": 2, "clients_per_round": 3},
        evaluation={"every": 2, "n_samples": 100},
    )
    res = run_federated(s, tmp_path)
    bad = [e for e in load_run(res.path).events if e["kind"] not in ("run_started", "run_finished")]
    assert bad == []
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ckpt = np.load(res.path / "checkpoints" / "round-000002.npz")
    assert np.isfinite(ckpt["generator.net.0.weight"]).all()
    assert not np.allclose(ckpt["generator.net.0.weight"], init["generator.net.0.weight"])
