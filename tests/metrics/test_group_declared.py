"""The `declared` group metric: generated rows grouped by their generated value, beside (never
instead of) the neighbourhood grouping that decides who is forgotten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fedgan.simulator.data import encoding as enc
from fedgan.simulator.data.table import table
from fedgan.simulator.evaluate import Evaluator
from fedgan.simulator.metrics.context import GroupingContext
from fedgan.simulator.metrics.group_declared import declared_rows
from fedgan.simulator.metrics.prdc import prdc


def _ctx(fake_labels: list[str] | None, hits: np.ndarray) -> GroupingContext:
    real = np.zeros((4, 1), dtype=np.float32)
    labels = pd.Series(["a", "a", "a", "b"], name="g")
    return GroupingContext(
        grouping="g",
        labels=labels,
        groups=["a", "b"],
        codes=np.array([0, 0, 0, 1], dtype=np.intp),
        real=real,
        fake=np.zeros((len(hits), 1), dtype=np.float32),
        result=prdc(real, real, k=1),
        hits=hits,
        min_group_size=1,
        fake_labels=None if fake_labels is None else pd.Series(fake_labels),
    )


def test_shares_ratios_and_support_by_hand() -> None:
    # 5 generated rows: 3 say "a", 1 says "b", 1 says "c" (no held-out row has c).
    # Ball hits (rows × groups): the "a" rows are in a's balls 2 of 3 times; the "b" row in none.
    hits = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [1, 0]], dtype=bool)
    rows = declared_rows(_ctx(["a", "a", "a", "b", "c"], hits))
    got = {(r["metric"], r["group"]): (r["value"], r["n"]) for r in rows}
    # a: 3/5 declared; true share 3/4 → ratio (3/5)/(3/4) = 0.8; on support 2/3.
    assert got[("declared_share", "a")] == (0.6, 5)
    assert np.isclose(got[("declared_ratio", "a")][0], 0.8) and got[("declared_ratio", "a")][1] == 3
    assert np.isclose(got[("declared_on_support", "a")][0], 2 / 3)
    assert got[("declared_on_support", "a")][1] == 3
    # b: 1/5 declared; share 1/4 → ratio 0.8; its one row lies in no b ball → 0.
    assert got[("declared_share", "b")] == (0.2, 5)
    assert np.isclose(got[("declared_ratio", "b")][0], 0.8)
    assert got[("declared_on_support", "b")] == (0.0, 1)


def test_no_rows_for_a_grouping_the_generator_does_not_write() -> None:
    assert declared_rows(_ctx(None, np.zeros((3, 2), dtype=bool))) == []


def test_a_group_nobody_declares_reads_nan_on_support() -> None:
    rows = declared_rows(_ctx(["a", "a"], np.ones((2, 2), dtype=bool)))
    b = {r["metric"]: r for r in rows if r["group"] == "b"}
    assert b["declared_share"]["value"] == 0.0
    assert np.isnan(b["declared_on_support"]["value"]) and b["declared_on_support"]["n"] == 0


def _people(path: Path, n: int = 400) -> None:
    rng = np.random.default_rng(3)
    region = rng.choice(["mainland", "islands"], n, p=[0.8, 0.2])
    pd.DataFrame(
        {
            "region": region,
            "band": rng.choice(["lo", "hi"], n),
            # Islanders live far away: their neighbourhood is easy to tell apart.
            "x": np.where(region == "islands", 10.0, 0.0) + rng.normal(0, 1, n),
        }
    ).to_csv(path, index=False)


def test_a_generator_that_writes_the_minority_label_on_majority_rows(tmp_path: Path) -> None:
    # Declared and forgotten disagree by design: rows that *say* islands but lie on the
    # mainland give islands its fair declared share while its neighbourhood gets no mass.
    path = tmp_path / "p.csv"
    _people(path)
    ds = table(path=str(path), groups=["region", "band"], features=["region", "x"])
    e = ds.info["encoding"]
    real_df = enc.decode(e, ds.X)
    fake_df = real_df[real_df["region"] == "mainland"].copy()
    n_fake = len(fake_df)
    n_liars = round(n_fake * float((real_df["region"] == "islands").mean()))
    fake_df.iloc[:n_liars, fake_df.columns.get_loc("region")] = "islands"
    fake = enc.encode(e, fake_df)
    ev = Evaluator(ds, k=3, group_by=["region", "band"], min_group_size=1)
    out = ev(fake)
    rows = {
        (r["group_by"], r["metric"], r["group"]): r["value"] for r in out.rows if "group_by" in r
    }
    share = float((real_df["region"] == "islands").mean())
    assert np.isclose(rows[("region", "declared_share", "islands")], n_liars / n_fake)
    assert np.isclose(rows[("region", "declared_ratio", "islands")], n_liars / n_fake / share)
    assert out.forgotten["region"] == ["islands"]  # the one rule reads where rows lie
    # `band` is a group column but not generated: no declared rows for it.
    assert not any(k[0] == "band" and k[1].startswith("declared") for k in rows)


def test_rows_that_lie_in_a_group_but_say_another_do_not_keep_it(tmp_path: Path) -> None:
    # The converse trap: rows shaped like the islanders (x ≈ 10) that *say* mainland. Before
    # group columns were separated in the table's space, they sat inside the islanders' balls
    # (one differing category is distance 1) and the islands read covered while no generated
    # row was an islander. Now where a row lies and what it says agree.
    # Few islanders and a many-valued column: their 5th neighbour differs in `band`, so
    # their balls are wider than one differing category.
    rng = np.random.default_rng(5)
    region = np.array(["islands"] * 30 + ["mainland"] * 270)
    pd.DataFrame(
        {
            "region": region,
            "band": rng.choice(list("abcdefgh"), 300),
            "x": np.where(region == "islands", 10.0, 0.0) + rng.normal(0, 1, 300),
        }
    ).to_csv(path := tmp_path / "p.csv", index=False)
    ds = table(path=str(path), groups=["region"], features=["region", "band", "x"])
    e = ds.info["encoding"]
    real_df = enc.decode(e, ds.X)
    islanders = real_df[real_df["region"] == "islands"]
    mislabelled = islanders.assign(region="mainland")
    fake = enc.encode(e, pd.concat([real_df[real_df["region"] == "mainland"], mislabelled]))
    out = Evaluator(ds, k=5, group_by=["region"], min_group_size=1)(fake)
    rows = {(r["metric"], r["group"]): r["value"] for r in out.rows if r.get("group_by")}
    assert rows[("coverage", "islands")] == 0.0
    assert rows[("mass", "islands")] == 0.0 and rows[("declared_share", "islands")] == 0.0
    assert out.forgotten["region"] == ["islands"]
    # The same rows with their own label keep the group (control: the check can pass).
    honest = enc.encode(e, pd.concat([real_df[real_df["region"] == "mainland"], islanders]))
    ok = Evaluator(ds, k=5, group_by=["region"], min_group_size=1)(honest)
    assert ok.forgotten["region"] == []
    kept = {(r["metric"], r["group"]): r["value"] for r in ok.rows if r.get("group_by")}
    assert kept[("coverage", "islands")] > 0.9
