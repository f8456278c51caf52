"""The Ray engine and the in-process engine train the same federation to the same metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")

from fedgan.simulator.engines.ray_engine import _ray_descendants  # noqa: E402
from fedgan.simulator.engines.runner import run_federated  # noqa: E402

from tests.conftest import tiny  # noqa: E402

KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def _table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Metrics in a fixed row order (the engines may write rows in different orders)."""
    return metrics.sort_values(KEYS, kind="stable").reset_index(drop=True)


def test_ray_and_inprocess_give_the_same_metrics(tmp_path: Path) -> None:
    # 3 clients, 2 of them sampled per round: sampling, sorting by partition id and the
    # per-client seeding all have to agree between the engines.
    fed = {"rounds": 2, "local_steps": 3, "clients_per_round": 2}
    part = {"n_clients": 3}
    local = run_federated(tiny(federation=fed, partition=part), tmp_path / "inprocess")
    pythonpath = os.environ.get("PYTHONPATH")
    seen: list[object] = []
    ray = run_federated(
        tiny(federation=fed, partition=part, engine={"name": "ray"}),
        tmp_path / "ray",
        progress=seen.append,
    )
    assert [p.done for p in seen] == [1, 2]  # type: ignore[attr-defined]
    # Contained: Ray is down, and the driver's environment is as it was.
    assert not _ray_descendants(os.getpid())
    assert os.environ.get("PYTHONPATH") == pythonpath
    a, b = _table(local.metrics), _table(ray.metrics)
    # Every sampled client answered on Ray (equal tables could also mean equally broken).
    assert (b.loc[b["metric"] == "fed.replies", "value"] == 2).all()
    assert (b.loc[b["metric"] == "fed.dropped", "value"] == 0).all()
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mdgan", {"swap_every": 2, "weighting": {"name": "coverage_weighted"}}),
        ("uagan", {"weighting": {"name": "agnostic"}}),
    ],
)
def test_server_held_generators_on_ray_match_inprocess(
    tmp_path: Path, name: str, params: dict[str, object]
) -> None:
    # 2 clients, 1 round of 5 generator steps (5 exchanges): MD-GAN swaps critics twice.
    sections: dict[str, dict[str, object]] = {
        "federation": {"protocol": name, "rounds": 1, "local_steps": 5, "protocol_params": params},
        "partition": {"n_clients": 2},
    }
    local = run_federated(tiny(**sections), tmp_path / "inprocess")
    ray = run_federated(tiny(**sections, engine={"name": "ray"}), tmp_path / "ray")
    a, b = _table(local.metrics), _table(ray.metrics)
    assert (b.loc[b["metric"] == "fed.replies", "value"] == 2).all()
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-9)
