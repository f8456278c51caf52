"""Golden tables: every bundled scenario (small) gives the metrics table recorded before the
round loop was reshaped (`make_golden.py`), exactly.

The stored scenarios are fully resolved, so later changes to the scenario files or to defaults
do not move them; a new schema field must default to what was there before.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.golden.make_golden import SCENARIOS, TABLES, canonical_csv, read_table, run_stored

CASES = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def test_every_case_has_its_scenario_and_table() -> None:
    from tests.golden.make_golden import CASES as MADE

    assert set(CASES) == set(MADE)
    assert {p.stem for p in TABLES.glob("*.csv")} == set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_metrics_table_is_the_recorded_one(name: str, tmp_path: Path) -> None:
    got = run_stored(SCENARIOS / f"{name}.yaml", tmp_path)
    assert len(got) > 100
    expected = read_table((TABLES / f"{name}.csv").read_text())
    pd.testing.assert_frame_equal(read_table(canonical_csv(got)), expected, check_exact=True)
