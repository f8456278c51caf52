"""Shared fixtures: tiny scenarios that train in well under a second per round."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fedgan.simulator.scenario import Scenario, validate


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # Tiny layers gain nothing from threads; on a loaded 2-core machine extra threads spin.
    torch.set_num_threads(1)


def tiny_raw(**sections: Any) -> dict[str, Any]:
    """A federated 8-ring scenario small enough for unit tests (sections override)."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "dataset": "ring",
            "n_samples": 800,
            "params": {"minority_modes": [0], "minority_weight": 0.05},
        },
        "gan": {
            "generator": {"widths": [16, 16]},
            "critic": {"widths": [16, 16]},
            "batch_size": 32,
        },
        "partition": {"name": "dirichlet", "params": {"alpha": 1.0}, "n_clients": 4},
        "federation": {"rounds": 2, "local_steps": 3},
        "evaluation": {"every": 1, "n_samples": 200, "min_group_size": 5},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def tiny(**sections: Any) -> Scenario:
    return validate(tiny_raw(**sections))


SEXES = ("F", "M")
REGIONS = ("east", "north", "south")
TABLE_COUNTS = {("F", "east"): 30, ("F", "north"): 120, ("F", "south"): 90}
TABLE_COUNTS |= {("M", "east"): 10, ("M", "north"): 150, ("M", "south"): 100}
"""Rows of the two-column table per (sex, region): east is rare, M|east rarer still."""


def write_table(path: Any) -> Any:
    """A CSV of 500 rows: features x1, x2 (one tight cluster per (sex, region)), group
    columns sex and region, in `TABLE_COUNTS`."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    parts = []
    for i, ((sex, region), n) in enumerate(TABLE_COUNTS.items()):
        centre = np.array([np.cos(i), np.sin(i)]) * 3.0
        xy = centre + rng.normal(0, 0.2, (n, 2))
        parts.append(pd.DataFrame({"x1": xy[:, 0], "x2": xy[:, 1], "sex": sex, "region": region}))
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return path


def table_raw(csv: Any, **sections: Any) -> dict[str, Any]:
    """A federated scenario on `write_table`'s CSV: every grouping of the two columns —
    sex, region and their intersection — in `evaluation.group_by`; clients split by sex."""
    raw = tiny_raw(
        name="table2",
        data={"dataset": "table", "params": {"path": str(csv), "groups": ["sex", "region"]}},
        partition={"name": "dirichlet", "params": {"alpha": 1.0}, "n_clients": 3},
        evaluation={"group_by": ["sex", "region", ["sex", "region"]], "min_group_size": 10},
    )
    raw["data"]["n_samples"] = None  # every row
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.fixture(scope="session")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One short federated run on the two-column table (2 rounds, both evaluated)."""
    from fedgan.simulator.api import run

    root = tmp_path_factory.mktemp("table2")
    csv = write_table(root / "people.csv")
    return run(validate(table_raw(csv)), [], out_dir=root / "runs")


GRID_MINORITY = (0, 12, 24)
"""The 25-grid scenario's minority modes (1 % each)."""


@pytest.fixture(scope="session")
def grid25_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 25-mode grid with 3 minority modes over 6 clients: 25 groups in every view."""
    from fedgan.simulator.api import run

    raw = tiny_raw(
        name="grid25",
        data={
            "dataset": "grid",
            "n_samples": 2500,
            "params": {"minority_modes": list(GRID_MINORITY), "minority_weight": 0.01},
        },
        partition={"name": "dirichlet", "params": {"alpha": 0.5}, "n_clients": 6},
        evaluation={"every": 1, "n_samples": 500, "min_group_size": 5},
    )
    return run(validate(raw), [], out_dir=tmp_path_factory.mktemp("grid25"))
