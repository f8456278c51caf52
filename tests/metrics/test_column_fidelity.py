"""Per-column fidelity (SDMetrics' KSComplement / TVComplement definitions) overall and per
group, by hand; and its table in the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fedgan.simulator.metrics.column_fidelity import fidelity_rows, ks_complement, tv_complement
from fedgan.simulator.metrics.context import DecodedRows, GroupingContext
from fedgan.simulator.metrics.prdc import prdc
from fedgan.simulator.summary import fidelity_table


def test_tv_complement_by_hand() -> None:
    # p = (a 2/3, b 1/3), q = (a 1/3, b 1/3, c 1/3): ½(1/3 + 0 + 1/3) = 1/3 → 2/3.
    got = tv_complement(pd.Series(["a", "a", "b"]), pd.Series(["a", "b", "c"]))
    assert np.isclose(got, 2 / 3)
    assert tv_complement(pd.Series(["a"]), pd.Series(["b"])) == 0.0
    assert np.isnan(tv_complement(pd.Series(["a"]), pd.Series([], dtype=object)))


def test_ks_complement_by_hand() -> None:
    # ECDFs of {1,2,3} and {1,2,4} differ most at x = 3: 1 − 2/3 → D = 1/3.
    assert np.isclose(ks_complement(pd.Series([1.0, 2, 3]), pd.Series([1.0, 2, 4])), 2 / 3)
    assert ks_complement(pd.Series([0.0, 1]), pd.Series([5.0, 6])) == 0.0
    assert ks_complement(pd.Series([3, 1, 2]), pd.Series([2, 3, 1])) == 1.0  # integers too


def _ctx(fake_labels: list[str] | None) -> GroupingContext:
    real_df = pd.DataFrame({"g": ["a", "a", "b", "b"], "x": [0.0, 1.0, 10.0, 11.0]})
    fake_df = pd.DataFrame({"g": ["a", "b", "b"], "x": [0.0, 10.0, 0.5]})
    real = real_df[["x"]].to_numpy(dtype=np.float32)
    fake = fake_df[["x"]].to_numpy(dtype=np.float32)
    return GroupingContext(
        grouping="g",
        labels=real_df["g"],
        groups=["a", "b"],
        codes=np.array([0, 0, 1, 1], dtype=np.intp),
        real=real,
        fake=fake,
        result=prdc(real, fake, k=1),
        hits=np.zeros((3, 2), dtype=bool),
        min_group_size=1,
        fake_labels=None if fake_labels is None else pd.Series(fake_labels),
        decoded=DecodedRows(real_df, fake_df, frozenset({"g"})),
    )


def test_groups_by_declared_value_when_generated() -> None:
    rows = fidelity_rows(_ctx(["a", "b", "b"]))
    got = {(r["metric"], r["group"]): (r["value"], r["n"]) for r in rows}
    # Whole table: g p=(½,½) q=(⅓,⅔) → TV ⅙ → ⅚;
    # x: the ECDFs differ most on [0.5, 1): real ¼ vs generated ⅔ → D = 5/12.
    assert np.isclose(got[("fidelity.g", "")][0], 5 / 6) and got[("fidelity.g", "")][1] == 3
    assert np.isclose(got[("fidelity.x", "")][0], 1 - 5 / 12)
    assert np.isclose(got[("fidelity", "")][0], (5 / 6 + 7 / 12) / 2)
    # Group a: real x {0,1}, the one row declaring a has x 0 → D ½.
    assert np.isclose(got[("fidelity.x", "a")][0], 0.5) and got[("fidelity.x", "a")][1] == 1
    # Group b: real x {10,11}, declared rows x {10, 0.5}: at x = 0.5 gen ½ vs real 0 → D ½.
    assert np.isclose(got[("fidelity.x", "b")][0], 0.5) and got[("fidelity.x", "b")][1] == 2


def test_groups_by_nearest_held_out_row_otherwise() -> None:
    rows = fidelity_rows(_ctx(None))
    got = {(r["metric"], r["group"]): (r["value"], r["n"]) for r in rows}
    # Nearest real rows: 0 → a, 10 → b, 0.5 → a (0 and 1 both at 0.5: either is in a).
    assert got[("fidelity.x", "a")][1] == 2 and got[("fidelity.x", "b")][1] == 1
    # Group b: real {10, 11} vs {10}: D = ½.
    assert np.isclose(got[("fidelity.x", "b")][0], 0.5)


def test_no_rows_without_decoded_rows() -> None:
    ctx = _ctx(None)
    bare = GroupingContext(**{**ctx.__dict__, "decoded": None})
    assert fidelity_rows(bare) == []


def test_fidelity_table_pivots_columns_by_group() -> None:
    rows = fidelity_rows(_ctx(["a", "b", "b"]))
    m = pd.DataFrame([{**r, "round": 3, "scope": "global", "group_by": "g"} for r in rows])
    t = fidelity_table(m, "global", 3, "g")
    assert list(t.columns) == ["all rows", "a", "b"]
    assert list(t.index) == ["g", "x", "all"]
    assert np.isclose(t.loc["x", "b"], 0.5)
    assert fidelity_table(m, "global", 3, "other").empty
