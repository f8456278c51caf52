"""Which rounds pay for what: the schedule by hand, and a run whose expensive client statistics
appear only at the rounds that read them."""

from __future__ import annotations

from pathlib import Path

from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.schedule import diagnostics_due, evaluation_due, scores_due

from tests.conftest import tiny

LIPSCHITZ = "train.lipschitz.real"
LOCAL = "local.coverage"


def test_the_schedule_by_hand() -> None:
    s = tiny(federation={"rounds": 7}, evaluation={"every": 3})
    assert [r for r in range(1, 8) if evaluation_due(s, r)] == [3, 6, 7]  # and the last
    assert [r for r in range(1, 8) if diagnostics_due(s, r)] == [3, 6, 7]
    assert [r for r in range(1, 8) if scores_due(s, r)] == [3, 6, 7]
    s2 = tiny(federation={"rounds": 7}, evaluation={"every": 3}, diagnostics={"every": 2})
    assert [r for r in range(1, 8) if diagnostics_due(s2, r)] == [2, 4, 6, 7]
    fair = tiny(
        federation={"rounds": 7},
        evaluation={"every": 3},
        strategy={"name": "coverage_weighted", "params": {}},
    )
    assert all(scores_due(fair, r) for r in range(1, 8))  # the rule reads them every round
    assert [r for r in range(1, 8) if diagnostics_due(fair, r)] == [3, 6, 7]


def _rounds(m, metric: str) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(set(m.loc[m["metric"] == metric, "round"].astype(int)))


def test_expensive_statistics_are_computed_only_at_the_rounds_that_read_them(
    tmp_path: Path,
) -> None:
    s = tiny(federation={"rounds": 4, "local_steps": 2}, evaluation={"every": 2})
    m = run_federated(s, tmp_path / "a").metrics
    assert _rounds(m, "train.d_loss") == [1, 2, 3, 4]  # cheap: every round
    assert _rounds(m, LIPSCHITZ) == [2, 4]
    assert _rounds(m, LOCAL) == [2, 4]
    fair = tiny(
        federation={"rounds": 4, "local_steps": 2},
        evaluation={"every": 2},
        strategy={"name": "coverage_weighted", "params": {}},
    )
    m = run_federated(fair, tmp_path / "b").metrics
    assert _rounds(m, LOCAL) == [1, 2, 3, 4]
    assert _rounds(m, LIPSCHITZ) == [2, 4]
    every = tiny(
        federation={"rounds": 4, "local_steps": 2},
        evaluation={"every": 2},
        diagnostics={"every": 1},
        engine={"name": "vectorized"},
    )
    m = run_federated(every, tmp_path / "c").metrics
    assert _rounds(m, LIPSCHITZ) == [1, 2, 3, 4]
    assert _rounds(m, LOCAL) == [1, 2, 3, 4]


def test_participation_extends_and_restarts_as_asked() -> None:
    from fedgan.simulator.cohorts import participation, sample_clients

    s = tiny(federation={"rounds": 9, "clients_per_round": 2})
    by_hand = [0] * 4
    for r in range(1, 10):
        for c in sample_clients(s, r):
            by_hand[c] += 1
    assert [participation(s, r) for r in (3, 9)][-1] == by_hand  # extended from round 3
    first_two = [0] * 4
    for r in (1, 2):
        for c in sample_clients(s, r):
            first_two[c] += 1
    assert participation(s, 2) == first_two  # asked for fewer rounds: counted anew
    assert sum(participation(s, 5)) == 10  # 2 a round, after going back to round 2
