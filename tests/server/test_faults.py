"""Simulated faults from the scenario: each kind yields its event for exactly the expected
(client, round) pairs, the gate's bounds drop only the faulty replies, runs stay reproducible.

Expected pairs are derived independently: by hand (probability 1.0) or by redrawing the
`numpy_rng(seed, "faults", round, client)` stream in the documented order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import initial_state, make_gan
from fedgan.simulator.scenario import Scenario, ScenarioError, validate
from fedgan.simulator.seeding import numpy_rng
from fedgan.simulator.store import load_run

from tests.conftest import tiny, tiny_raw

ROUNDS = (1, 2)
CLIENTS = range(4)
ORDER = ("dropout", "straggler", "raise", "diverge", "corrupt", "oversized")


def _uniforms(s: Scenario, rnd: int, client: int) -> tuple[dict[str, float], float]:
    rng = numpy_rng(s.seed, "faults", rnd, client)
    u = dict(zip(ORDER, rng.random(6), strict=True))
    return u, float(rng.random())


def _run(s: Scenario, path: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    res = run_federated(s, path)
    run = load_run(res.path)
    assert any(e["kind"] == "run_finished" for e in run.events)
    return run.events, run.metrics


def _pairs(events: list[dict[str, Any]], kind: str) -> set[tuple[int, int]]:
    return {(e["client"], e["round"]) for e in events if e["kind"] == kind}


def _global(m: pd.DataFrame, metric: str) -> list[float]:
    rows = m[(m["scope"] == "global") & (m["metric"] == metric)].sort_values("round")
    return rows["value"].tolist()


def test_dropout_hits_exactly_the_redrawn_pairs(tmp_path: Path) -> None:
    s = tiny(faults={"dropout": 0.5})
    expected = {(c, r) for r in ROUNDS for c in CLIENTS if _uniforms(s, r, c)[0]["dropout"] < 0.5}
    assert 0 < len(expected) < 8, "the seed should drop some clients, not all or none"
    events, m = _run(s, tmp_path)
    assert _pairs(events, "client_dropped") == expected
    per_round = [sum(1 for _, r in expected if r == rnd) for rnd in ROUNDS]
    assert _global(m, "fed.dropped") == per_round
    assert _global(m, "fed.replies") == [4 - n for n in per_round]
    counted = m[m["metric"] == "fed.dropped.client_dropped"].set_index("round")["value"]
    assert {int(r): v for r, v in counted.items()} == {
        r: n for r, n in zip(ROUNDS, per_round, strict=True) if n
    }
    assert _global(m, "fed.virtual_seconds") == [0.0, 0.0]  # no stragglers


def test_dropout_of_everyone_skips_every_round_without_hanging(tmp_path: Path) -> None:
    s = tiny(faults={"dropout": 1.0})
    events, m = _run(s, tmp_path)
    assert _pairs(events, "client_dropped") == {(c, r) for r in ROUNDS for c in CLIENTS}
    assert [e["round"] for e in events if e["kind"] == "round_skipped"] == list(ROUNDS)
    assert _global(m, "fed.replies") == [0.0, 0.0]
    assert _global(m, "fed.dropped") == [4.0, 4.0]
    assert m[m["scope"] == "client"]["metric"].str.startswith("train.").sum() == 0
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    run_dir = next(p.parent for p in tmp_path.rglob("checkpoints"))
    ckpt = np.load(run_dir / "checkpoints" / "round-000002.npz")
    for k in init:
        np.testing.assert_array_equal(ckpt[k], init[k])


def test_stragglers_past_the_deadline_are_late_on_a_virtual_clock(tmp_path: Path) -> None:
    s = tiny(faults={"straggler": {"probability": 1.0, "delay": [1.0, 5.0], "deadline": 3.0}})
    delays = {(c, r): 1.0 + 4.0 * _uniforms(s, r, c)[1] for r in ROUNDS for c in CLIENTS}
    late = {k for k, d in delays.items() if d > 3.0}
    assert 0 < len(late) < 8
    events, m = _run(s, tmp_path)
    assert _pairs(events, "client_late") == late
    for rnd in ROUNDS:
        on_time = [d for (c, r), d in delays.items() if r == rnd and (c, r) not in late]
        assert _global(m, "fed.virtual_seconds")[rnd - 1] == pytest.approx(max(on_time, default=0))
        assert _global(m, "fed.replies")[rnd - 1] == len(on_time)


def test_raise_and_diverge_are_gate_events_and_the_others_finish(tmp_path: Path) -> None:
    s = tiny(
        faults={
            "raise": {"clients": [3], "probability": 1.0},
            "diverge": {"clients": [1], "probability": 1.0},
            "oversized": {"clients": [2], "extra_bytes": 1000},
        }
    )
    events, m = _run(s, tmp_path)
    assert _pairs(events, "client_error") == {(3, 1), (3, 2)}
    assert _pairs(events, "client_diverged") == {(1, 1), (1, 2)}
    # Without a size bound the extra array is still refused, as an unexpected key.
    assert _pairs(events, "bad_reply") == {(2, 1), (2, 2)}
    assert all("simulated fault" in e["detail"] for e in events if e["kind"] == "client_error")
    assert all("fault.padding" in e["detail"] for e in events if e["kind"] == "bad_reply")
    assert _global(m, "fed.replies") == [1.0, 1.0]
    assert _global(m, "fed.dropped") == [3.0, 3.0]
    for kind in ("client_error", "client_diverged", "bad_reply"):
        assert _global(m, f"fed.dropped.{kind}") == [1.0, 1.0]
    assert set(m[m["metric"] == "train.g_loss"]["client"]) == {0}


def test_diverge_with_probability_follows_the_redrawn_stream(tmp_path: Path) -> None:
    s = tiny(faults={"diverge": {"probability": 0.5}})
    expected = {(c, r) for r in ROUNDS for c in CLIENTS if _uniforms(s, r, c)[0]["diverge"] < 0.5}
    assert 0 < len(expected) < 8
    events, _ = _run(s, tmp_path)
    assert _pairs(events, "client_diverged") == expected


def test_norm_and_size_bounds_drop_only_faulty_replies(tmp_path: Path) -> None:
    s = tiny(
        federation={"max_update_norm": 1.0, "max_reply_bytes": 100_000},
        faults={
            "corrupt": {"clients": [2], "scale": 1000.0},
            "oversized": {"clients": [1], "extra_bytes": 1_000_000},
            "diverge": {"clients": [3]},
        },
    )
    events, m = _run(s, tmp_path)
    assert _pairs(events, "update_too_far") == {(2, 1), (2, 2)}
    assert _pairs(events, "reply_too_large") == {(1, 1), (1, 2)}
    # A NaN update is divergence, not a far-away update: the finite check comes first.
    assert _pairs(events, "client_diverged") == {(3, 1), (3, 2)}
    assert _global(m, "fed.replies") == [1.0, 1.0]
    assert set(m[m["metric"] == "train.g_loss"]["client"]) == {0}


def test_honest_replies_pass_the_bounds(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 1, "max_update_norm": 1.0, "max_reply_bytes": 100_000})
    events, m = _run(s, tmp_path)
    assert [e["kind"] for e in events] == ["run_started", "run_finished"]
    assert _global(m, "fed.replies") == [4.0]


def test_same_seed_same_metrics_with_faults_on(tmp_path: Path) -> None:
    s = tiny(
        federation={"max_update_norm": 1.0},
        faults={
            "dropout": 0.3,
            "straggler": {"probability": 0.5, "delay": [0.0, 4.0], "deadline": 2.0},
            "corrupt": {"clients": [0], "probability": 0.5},
        },
    )
    _, a = _run(s, tmp_path / "a")
    _, b = _run(s, tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"dropout": 1.5}, "faults.dropout"),
        ({"raise": {"clients": [4]}}, "faults.raise.clients: ids must be < partition.n_clients"),
        ({"diverge": {"clients": [-1]}}, "faults.diverge.clients"),
        ({"corrupt": {"probability": -0.1}}, "faults.corrupt.probability"),
        ({"straggler": {"delay": [3.0, 1.0]}}, "faults.straggler.delay"),
        ({"straggler": {"delay": [-1.0, 1.0]}}, "faults.straggler.delay"),
        ({"straggler": {"deadline": -1.0}}, "faults.straggler.deadline"),
        ({"crash": {}}, "allowed here: dropout, straggler, raise"),
    ],
)
def test_fault_schema_is_validated(faults: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        validate(tiny_raw(faults=faults))
    assert any(message in e for e in err.value.errors), err.value.errors


def test_faults_need_a_federation_and_round_trip_through_json() -> None:
    raw = tiny_raw(faults={"raise": {"clients": [1]}})
    s = validate(raw)
    assert s.faults is not None and s.faults.raise_ is not None
    assert Scenario.model_validate_json(s.to_json()) == s  # how clients receive the scenario
    raw.pop("federation")
    with pytest.raises(ScenarioError, match="need a federation section"):
        validate(raw)
