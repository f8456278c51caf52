"""The per-group tables that `run`, `inspect` and the report print, from one pivot."""

from __future__ import annotations

import math

import pandas as pd
from fedgan.simulator.store import METRIC_COLUMNS
from fedgan.simulator.summary import client_group_table, group_order, group_table


def _rows() -> pd.DataFrame:
    rows = []
    for g, rec, n in (("10", 0.9, 40), ("2", 0.1, 30), ("9", 0.5, 20)):
        rows.append((4, "global", -1, "mode", g, "recall", rec, n))
        rows.append((4, "global", -1, "mode", g, "coverage", rec / 2, n))
        rows.append((2, "global", -1, "mode", g, "recall", 0.0, n))  # an earlier round
    rows.append((4, "global", -1, "other", "a", "recall", 0.3, 5))
    rows.append((4, "global", -1, "", "", "recall", 0.7, 90))  # a whole-population row
    for client, g, v in ((1, "2", 0.25), (0, "10", 1.0), (0, "2", 0.5)):
        rows.append((4, "client", client, "mode", g, "eval.coverage", v, 4))
    rows.append((2, "client", 0, "mode", "2", "eval.coverage", 0.0, 4))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def test_group_order_reads_numbers_as_numbers() -> None:
    assert group_order(["10", "2", "b", "9", "a"]) == ["2", "9", "10", "a", "b"]


def test_group_table_is_one_evaluation_of_one_grouping() -> None:
    wide = group_table(_rows(), "global", 4)
    assert wide.index.name == "mode" and list(wide.index) == ["2", "9", "10"]
    assert wide.loc["2", "recall"] == 0.1 and wide.loc["10", "coverage"] == 0.45
    assert wide["n"].tolist() == [30, 20, 40]
    other = group_table(_rows(), "global", 4, "other")
    assert list(other.index) == ["a"] and other.loc["a", "recall"] == 0.3
    assert group_table(_rows(), "global", 3).empty


def test_client_group_table_is_clients_by_groups() -> None:
    table = client_group_table(_rows())
    assert list(table.index) == [0, 1] and list(table.columns) == ["2", "10"]
    assert table.loc[0, "2"] == 0.5 and table.loc[1, "2"] == 0.25
    assert math.isnan(table.loc[1, "10"])  # client 1 holds none of group 10
    assert client_group_table(_rows(), 2).loc[0, "2"] == 0.0


def test_no_headline_line_reads_recall_for_a_group() -> None:
    """A forgotten mode whose per-group recall reads 1.0 (a few strays' large balls: item 11's
    UA-GAN) must not make the headline's worst group look reached: its worst group and gap are
    coverage's, the numbers given below by hand."""
    from fedgan.simulator.summary import headline, headline_rows

    rows = [
        {"metric": "recall", "value": 0.97},
        {"metric": "coverage", "value": 0.70},
        {"metric": "recall.group_min", "value": 0.94, "group_by": "mode"},
        {"metric": "recall.difference", "value": 0.06, "group_by": "mode"},
        {"metric": "coverage.group_min", "value": 0.0, "group_by": "mode"},
        {"metric": "coverage.difference", "value": 0.9, "group_by": "mode"},
    ]
    m = pd.DataFrame(
        [
            {"round": 4, "scope": "global", "client": -1, "group_by": "", "group": "", "n": 0} | r
            for r in rows
        ]
    )
    lines = dict(headline_rows(headline(m)))
    assert lines["worst-group coverage"] == "0.000"
    assert lines["coverage gap (max − min)"] == "0.900"
    assert not [label for label in lines if "recall" in label and label != "recall"]


def test_no_view_lists_a_per_group_recall() -> None:
    """The views' column lists: per-group recall (and its worst group and gaps) in none."""
    from fedgan.simulator.compare import DEFAULT_METRICS
    from fedgan.simulator.summary import GAP_METRICS, HEADLINE, PER_GROUP

    assert "recall" not in PER_GROUP and "recall" not in GAP_METRICS
    keys = [k for k, _ in HEADLINE] + list(DEFAULT_METRICS)
    assert not [k for k in keys if k.startswith("recall.")], keys
