"""Views for fairness work (issue 14, items 7–11): every grouping with its gaps, intersectional
groups, minority and rare marks, what the strategy did, tables within the terminal width.

Expected values are derived by hand: marginals of the intersection, counts pooled over the
clients, FedAvg's n_k / Σ n and AFL's exponentiated-gradient λ from the recorded losses."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import fedgan.simulator.cli as cli
import numpy as np
import pandas as pd
import pytest
import yaml
from fedgan.simulator.api import run
from fedgan.simulator.layout import Column, fit_tables
from fedgan.simulator.prepare import federated_data
from fedgan.simulator.scenario import validate
from fedgan.simulator.store import METRIC_COLUMNS, load_run
from fedgan.simulator.summary import group_views, summary_tables
from rich.console import Console
from typer.testing import CliRunner

from tests.conftest import REGIONS, SEXES, tiny, tiny_raw

runner = CliRunner()


def _text(renderables: list[Any], width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    for r in renderables:
        console.print(r)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


def _last(m: pd.DataFrame, scope: str) -> pd.DataFrame:
    rows = m[m["scope"] == scope]
    return rows[rows["round"] == rows["round"].max()]


def _cells(m: pd.DataFrame, scope: str, grouping: str, metric: str) -> pd.DataFrame:
    rows = _last(m, scope)
    rows = rows[(rows["group_by"] == grouping) & (rows["metric"] == metric) & (rows["group"] != "")]
    return rows


# ---- item 7: every grouping, intersectional groups ----
def test_intersection_marginals_add_up_to_each_column(table_run: Any) -> None:
    """Recall and coverage are means over held-out points, so a region's value is the
    n-weighted mean of its (sex, region) cells, and its n their sum — exactly."""
    m = table_run.metrics
    for metric in ("recall", "coverage"):
        cells = _cells(m, "global", "sex|region", metric).set_index("group")
        assert set(cells.index) <= {f"{s}|{r}" for s in SEXES for r in REGIONS}
        for column, pos, values in (("region", 1, REGIONS), ("sex", 0, SEXES)):
            marg = _cells(m, "global", column, metric).set_index("group")
            assert set(marg.index) == set(values)
            for v in values:
                part = cells[[g.split("|")[pos] == v for g in cells.index]]
                assert marg.loc[v, "n"] == part["n"].sum()
                assert marg.loc[v, "value"] * marg.loc[v, "n"] == pytest.approx(
                    (part["value"] * part["n"]).sum()
                )


def test_every_grouping_travels_from_the_clients_as_counts(table_run: Any) -> None:
    """Clients send counts of every grouping (not only the partition's column). A client's
    row of a group is its own points' coverage where it holds ≥ min_group_size of them
    (n = those points, counted here from the partition), else the global evaluation's value of
    the group (n = the pooled held-out points); its served share is the share of its held-out
    points in groups not forgotten — by hand from the partition and the forgotten rows."""
    from fedgan.simulator.metrics.groups import group_labels

    m = table_run.metrics
    rnd = int(_last(m, "client")["round"].iloc[0])
    client = m[(m["scope"] == "client") & (m["round"] == rnd) & (m["metric"] == "eval.coverage")]
    per = client[client["group"] != ""]
    s = validate(load_run(table_run.path).scenario)
    data = federated_data(s)
    size = s.evaluation.min_group_size
    glob = m[(m["scope"] == "global") & (m["round"] == rnd)]
    for k, idx in enumerate(data.client_held):
        for grouping in ("sex", "region", "sex|region"):
            labels = group_labels(data.train.groups, grouping.split("|")).astype(str)
            own = labels.iloc[idx].value_counts()
            rows = per[(per["client"] == k) & (per["group_by"] == grouping)].set_index("group")
            for g, row in rows.iterrows():
                pooled = glob[
                    (glob["group_by"] == grouping)
                    & (glob["group"] == g)
                    & (glob["metric"] == "coverage")
                ]
                if own.get(g, 0) >= size:
                    assert row["n"] == own[g], (k, grouping, g)
                else:
                    assert row["n"] == pooled["n"].iloc[0]
                    assert row["value"] == pytest.approx(pooled["value"].iloc[0])
            lost = set(
                glob[
                    (glob["group_by"] == grouping)
                    & (glob["metric"] == "forgotten")
                    & (glob["value"] == 1.0)
                ]["group"]
            )
            served = m[
                (m["scope"] == "client")
                & (m["round"] == rnd)
                & (m["client"] == k)
                & (m["metric"] == "eval.served_share")
                & (m["group_by"] == grouping)
            ]["value"]
            expected = sum(n for g, n in own.items() if g not in lost) / len(idx)
            assert served.iloc[0] == pytest.approx(expected)


def test_summary_and_inspect_show_every_grouping_with_its_gaps(
    table_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = load_run(table_run.path).scenario
    text = _text(summary_tables(table_run.metrics, scenario=scenario, width=120), 120)
    for grouping in ("sex", "region", "sex|region"):
        assert f"per-group ({grouping})" in text
        assert f"gaps across {grouping}" in text
    assert "F|north" in text and "M|south" in text
    monkeypatch.setattr(cli, "console", Console(width=120, file=io.StringIO()))
    res = runner.invoke(cli.app, ["inspect", str(table_run.path)])
    assert res.exit_code == 0, res.output
    shown = cli.console.file.getvalue()  # type: ignore[attr-defined]
    for grouping in ("sex", "region", "sex|region"):
        assert f"gaps across {grouping}" in shown
        assert f"client × {grouping} coverage" in shown


def test_gaps_of_a_second_grouping_are_its_own(table_run: Any) -> None:
    """region's gaps are min, max − min and min / max of region's own per-group values."""
    m = table_run.metrics
    scenario = load_run(table_run.path).scenario
    rnd = int(_last(m, "global")["round"].iloc[0])
    view = next(v for v in group_views(m, "global", rnd, scenario) if v.grouping == "region")
    coverage = _cells(m, "global", "region", "coverage")["value"]
    lo, hi = coverage.min(), coverage.max()
    assert view.gaps.loc["coverage", "group_min"] == pytest.approx(lo)
    assert view.gaps.loc["coverage", "difference"] == pytest.approx(hi - lo)
    assert "recall" not in view.gaps.index  # no view names a worst group by recall
    ratio = view.gaps.loc["coverage", "ratio"]
    assert math.isnan(ratio) if hi == 0 else ratio == pytest.approx(lo / hi)


# ---- item 9: minority and rare marks, warnings, numeric order, --round ----
def _twelve_modes() -> tuple[pd.DataFrame, dict[str, Any]]:
    """A hand-made evaluation of a 12-mode ring whose mode 0 has true weight 5 % (a minority)
    and whose modes 0 and 3 have fewer held-out points than min_group_size = 20 (rare)."""
    scenario = tiny_raw(
        data={
            "dataset": "ring",
            "n_samples": 800,
            "params": {"n_modes": 12, "minority_modes": [0], "minority_weight": 0.05},
        },
        evaluation={"min_group_size": 20},
    )
    n = {g: 40 for g in range(12)} | {0: 5, 3: 10}
    rows = [(2, "global", -1, "", "", "recall", 0.5, sum(n.values()))]
    for g in reversed(range(12)):  # stored out of order on purpose
        rows.append((2, "global", -1, "mode", str(g), "recall", g / 20, n[g]))
        rows.append((2, "global", -1, "mode", str(g), "coverage", g / 20, n[g]))
    for stat, v in (("group_min", 0.0), ("difference", 0.55), ("ratio", 0.0)):
        rows.append((2, "global", -1, "mode", "", f"recall.{stat}", v, 0))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS), scenario


def test_minority_and_rare_groups_are_marked_and_warned_in_the_table() -> None:
    metrics, scenario = _twelve_modes()
    (view,) = group_views(metrics, "global", 2, scenario)
    assert list(view.table.index) == [str(g) for g in range(12)]  # 10 after 9, not after 1
    weights = view.table["weight"]
    assert weights["0"] == pytest.approx(0.05)
    assert weights["1"] == pytest.approx(0.95 / 11)  # the rest share what is left
    assert [g for g in view.table.index if view.table.loc[g, "minority"]] == ["0"]
    assert [g for g in view.table.index if view.table.loc[g, "rare"]] == ["0", "3"]
    assert view.marked == ["0", "3"]
    text = _text(summary_tables(metrics, scenario=scenario, width=120), 120)
    labels = [line.split()[0] for line in text.splitlines() if line[:1].isdigit()]
    assert labels == ["0*†", "1", "2", "3†", *map(str, range(4, 12))]
    assert "minority (*)" in text and ": 0" in text
    assert "warning: 2 groups of 'mode' have fewer than 20 held-out points" in text
    assert "0, 3" in text


def test_inspect_refuses_a_round_that_was_not_evaluated(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 3, "local_steps": 1}, evaluation={"every": 2})
    res = run(s, [], out_dir=tmp_path)
    fine = runner.invoke(cli.app, ["inspect", str(res.path), "--round", "2"])
    assert fine.exit_code == 0, fine.output
    bad = runner.invoke(cli.app, ["inspect", str(res.path), "--round", "1"])
    assert bad.exit_code == 2
    # Every 2 rounds and the last: rounds 2 and 3 (round 1 has client rows, but no evaluation).
    assert "round 1 was not evaluated; rounds with an evaluation: 2, 3" in bad.output


# ---- item 10: what the strategy did ----
def _weights(m: pd.DataFrame) -> pd.DataFrame:
    rows = m[(m["scope"] == "client") & (m["metric"] == "fed.weight")]
    return rows.pivot_table(index="round", columns="client", values="value", aggfunc="first")


def test_fedavg_weights_are_the_clients_shares_of_the_round(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 3, "local_steps": 1, "clients_per_round": 2})
    res = run(s, [], out_dir=tmp_path)
    sizes = [len(idx) for idx in federated_data(s).client_train]
    w = _weights(res.metrics)
    trained = res.metrics[(res.metrics["metric"] == "num-examples")]
    for rnd, row in w.iterrows():
        present = sorted(int(c) for c in row.dropna().index)
        sampled = sorted(int(c) for c in trained[trained["round"] == rnd]["client"])
        assert present == sampled and len(present) == 2  # only the round's clients
        total = sum(sizes[c] for c in present)
        for c in present:
            assert row[c] == pytest.approx(sizes[c] / total)


def test_afl_weights_follow_lambda_from_the_recorded_losses(tmp_path: Path) -> None:
    """AFL with every client each round: λ starts uniform and λ_k ← λ_k · exp(η F_k) after each
    round, F_k the client's local.quality_loss of that round; the round's weights are λ."""
    eta = 2.0
    s = tiny(
        strategy={"name": "agnostic", "params": {"step_size": eta}},
        federation={"rounds": 3, "local_steps": 1},
    )
    m = run(s, [], out_dir=tmp_path).metrics
    loss = m[(m["scope"] == "client") & (m["metric"] == "local.quality_loss")].pivot_table(
        index="round", columns="client", values="value", aggfunc="first"
    )
    w = _weights(m)
    log_lam = np.zeros(4)
    for rnd in (1, 2, 3):
        lam = np.exp(log_lam) / np.exp(log_lam).sum()
        np.testing.assert_allclose(w.loc[rnd].to_numpy(), lam, rtol=1e-6)
        log_lam = log_lam + eta * np.nan_to_num(loss.loc[rnd].to_numpy())
    assert not np.allclose(w.loc[3].to_numpy(), 0.25)  # λ moved


def test_inspect_by_client_lists_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = run(tiny(federation={"rounds": 1, "local_steps": 1}), [], out_dir=tmp_path)
    monkeypatch.setattr(cli, "console", Console(width=200, file=io.StringIO()))
    out = runner.invoke(cli.app, ["inspect", str(res.path), "--by", "client"])
    assert out.exit_code == 0, out.output
    text = cli.console.file.getvalue()  # type: ignore[attr-defined]
    line = next(x for x in text.splitlines() if "fed.weight" in x)
    shown = [float(v) for v in line.split()[1:]]
    assert sum(shown) == pytest.approx(1.0, abs=2e-3) and len(shown) == 4


# ---- item 11: tables within the terminal width ----
def test_fitted_tables_stay_within_the_width_and_cut_no_number() -> None:
    columns = [Column("configuration", "left"), *(Column(f"metric number {i}") for i in range(9))]
    rows = [
        [f"strategy=group_aware β={b}", *(f"{0.1 * i + b:.3f} ± 0.012" for i in range(9))]
        for b in (1, 2)
    ]
    for width in (60, 80, 200):
        text = _text(fit_tables("title", columns, rows, width), width)
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width
        for r in rows:
            for cell in r[1:]:
                assert cell in text  # never cut to "0.…"
        tables = text.count("title")
        # Each table repeats the labels; wide enough, one table holds everything.
        assert text.count("β=1") == tables and (tables == 1) == (width == 200)
        if tables > 1:
            assert f"title (1/{tables})" in text


def test_inspect_and_compare_fit_a_narrow_terminal(
    table_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for args in (["inspect", str(table_run.path)], ["compare", str(table_run.path)]):
        monkeypatch.setattr(cli, "console", Console(width=64, file=io.StringIO()))
        res = runner.invoke(cli.app, args)
        assert res.exit_code == 0, res.output
        text = cli.console.file.getvalue()  # type: ignore[attr-defined]
        # Every line but the run folder's path (printed whole, to be copied).
        lines = [x for x in text.splitlines() if str(table_run.path) not in x]
        assert max(len(line.rstrip()) for line in lines) <= 64, args
        assert "…" not in text


def test_validate_accepts_intersectional_groupings_and_names_a_bad_column(
    tmp_path: Path,
) -> None:
    raw = tiny_raw(evaluation={"group_by": ["mode", ["mode", "nope"]]})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    res = runner.invoke(cli.app, ["validate", str(p)])
    assert res.exit_code == 2
    assert "evaluation.group_by.1.1: no column 'nope'" in res.output


def test_a_strategy_that_does_not_say_its_weights_gets_no_weight_rows(tmp_path: Path) -> None:
    """FedMedian takes a coordinate-wise median: num-examples shares would be a false record."""
    s = tiny(strategy={"name": "fedmedian"}, federation={"rounds": 1, "local_steps": 1})
    m = run(s, [], out_dir=tmp_path).metrics
    assert "fed.weight" not in set(m["metric"])
    assert "eval.coverage" in set(m["metric"])  # the clients' rows are there


# ---- item 8: a group the generator never reaches ----
def test_unreached_groups_are_the_worst_precision_of_a_run(grid25_run: Any) -> None:
    """In the 25-grid run's last evaluation most modes get no generated sample (precision n/a
    with held-out points): precision's group minimum is 0 and its ratio 0, the difference the
    best reached mode's precision, and the worst group an unreached one."""
    m = grid25_run.metrics
    scenario = load_run(grid25_run.path).scenario
    rnd = int(_last(m, "global")["round"].iloc[0])
    precision = _cells(m, "global", "mode", "precision").set_index("group")["value"]
    recall_n = _cells(m, "global", "mode", "recall").set_index("group")["n"]
    unreached = [g for g in precision.index if math.isnan(precision[g]) and recall_n[g] > 0]
    assert unreached, "the run's generator reaches every mode: nothing to check"
    best = precision.dropna().max()
    (view,) = group_views(m, "global", rnd, scenario)
    gaps = view.gaps.loc["precision"]
    assert gaps["group_min"] == 0.0 and gaps["ratio"] == 0.0
    assert gaps["difference"] == pytest.approx(best)
    assert gaps["worst"] in unreached


def test_vectorized_engine_gives_the_same_table_for_every_grouping(
    table_run: Any, tmp_path: Path
) -> None:
    raw = load_run(table_run.path).scenario
    s = validate({**raw, "engine": {"name": "vectorized"}})
    vec = run(s, [], out_dir=tmp_path).metrics
    key = ["round", "scope", "client", "group_by", "group", "metric"]
    a = table_run.metrics.sort_values(key).reset_index(drop=True)
    b = vec.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    assert set(b.loc[b["scope"] == "clients", "group_by"]) == {"sex", "region", "sex|region"}
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-4, atol=1e-5)


def test_forgotten_column_is_of_the_round_shown() -> None:
    """`inspect --round 2` of a run evaluated at rounds 2 and 4: mode 0 forgotten at round 2
    and not at round 4 — the view of each round reads its own rows."""
    rows = []
    for rnd, recall, lost in ((2, 0.2, 1.0), (4, 0.8, 0.0)):
        rows.append((rnd, "global", -1, "", "", "recall", recall, 10))
        rows.append((rnd, "global", -1, "mode", "0", "recall", recall, 10))
        rows.append((rnd, "global", -1, "mode", "0", "forgotten", lost, 10))
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    for rnd, lost in ((2, ["0"]), (4, [])):
        (view,) = group_views(metrics, "global", rnd)
        assert view.forgotten == lost
