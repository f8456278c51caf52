"""The run folder: tidy tables written atomically, loadable back."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from fedgan.simulator.store import METRIC_COLUMNS, RunStore, load_run


def _store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path, "demo", "name: demo\n", {"engine": "test", "seed": 3})


def test_layout_and_round_trip(tmp_path: Path) -> None:
    st = _store(tmp_path)
    assert st.path.parent == tmp_path / "demo"
    env = json.loads((st.path / "env.json").read_text())
    assert env["seed"] == 3 and "torch" in env["versions"]
    st.add_metrics([{"round": 1, "metric": "recall", "value": 0.5, "n": 10}])
    st.add_metrics(
        [
            {
                "round": 2,
                "scope": "client",
                "client": 3,
                "group_by": "mode",
                "group": 7,
                "metric": "recall",
                "value": 0.25,
                "n": 4,
            }
        ]
    )
    st.event("client_failed", client=3, round=2, error="boom")
    st.save_samples(2, np.ones((3, 2), dtype=np.float32))
    run = load_run(st.path)
    assert list(run.metrics.columns) == METRIC_COLUMNS
    assert len(run.metrics) == 2
    row = run.metrics.iloc[1]
    assert (row["scope"], row["client"], row["group"], row["value"]) == ("client", 3, "7", 0.25)
    assert run.scenario == {"name": "demo"}
    assert run.events[0]["kind"] == "client_failed" and run.events[0]["client"] == 3
    assert np.load(st.path / "samples" / "round-000002.npy").shape == (3, 2)
    csv = pd.read_csv(st.path / "metrics.csv")
    assert csv["value"].tolist() == [0.5, 0.25]
    assert run.latest()["round"].unique().tolist() == [2]


def test_no_temporary_files_left_behind(tmp_path: Path) -> None:
    st = _store(tmp_path)
    for r in range(3):
        st.add_metrics([{"round": r, "metric": "m", "value": r}])
        st.save_checkpoint(r, {"generator.w": np.zeros(2)})
    leftovers = [p.name for p in st.path.rglob("*") if "tmp" in p.name]
    assert leftovers == []
    assert sorted(p.name for p in (st.path / "checkpoints").iterdir()) == [
        "round-000000.npz",
        "round-000001.npz",
        "round-000002.npz",
    ]


def test_two_runs_get_distinct_folders(tmp_path: Path) -> None:
    assert _store(tmp_path).path != _store(tmp_path).path


def test_deferred_rows_are_written_at_the_next_flush(tmp_path: Path) -> None:
    st = _store(tmp_path)
    st.add_metrics([{"round": 1, "metric": "a", "value": 1.0}])
    st.add_metrics([{"round": 2, "metric": "a", "value": 2.0}], flush=False)
    st.add_timings([{"round": 2, "phase": "train", "seconds": 0.5}])
    assert load_run(st.path).metrics["round"].tolist() == [1], "not written yet"
    assert not (st.path / "timings.csv").exists()
    st.flush()
    assert load_run(st.path).metrics["round"].tolist() == [1, 2]
    assert pd.read_csv(st.path / "timings.csv")["seconds"].tolist() == [0.5]


def test_tables_written_in_parts_are_the_whole_table_pandas_writes(tmp_path: Path) -> None:
    """Each flush formats only the rows added since the last; the files are what pandas
    writes for the whole table at once — also when a later part brings a type the earlier
    rows did not have (an int column that turns float, a new timings column)."""
    st = _store(tmp_path)
    metrics: list[dict] = []
    timings: list[dict] = []
    parts = [
        ([{"round": 1, "metric": "a", "value": 0.1}], [{"round": 1, "phase": "t", "seconds": 1}]),
        ([], [{"round": 2, "phase": "t", "seconds": 2}]),  # int seconds so far
        (
            [{"round": 3, "scope": "client", "client": 2, "group_by": "mode", "group": 7,
              "metric": "b", "value": 1e-17, "n": 40}],
            [{"round": 3, "phase": "t", "seconds": 0.25}],  # now float
        ),
        ([{"round": 4, "metric": "c", "value": float("nan")}],
         [{"round": 4, "phase": "t", "seconds": 0.5, "client": 3}]),  # a new column
    ]  # fmt: skip
    for rows, times in parts:
        st.add_metrics(rows, flush=False)
        st.add_timings(times)
        metrics += rows
        timings += times
        st.flush()
        whole = RunStore(tmp_path / "whole")
        whole.path.mkdir(exist_ok=True)
        whole.add_metrics(metrics, flush=False)
        expected = pd.DataFrame(whole._metrics.rows, columns=METRIC_COLUMNS)
        assert (st.path / "metrics.csv").read_text() == expected.to_csv(index=False)
        pd.testing.assert_frame_equal(pd.read_parquet(st.path / "metrics.parquet"), expected)
        assert (st.path / "timings.csv").read_text() == pd.DataFrame(timings).to_csv(index=False)
    pd.testing.assert_frame_equal(st.metrics(), expected)
    st.metrics().loc[0, "value"] = 99.0  # a caller's change to its copy changes nothing here
    assert st.metrics()["value"].iloc[0] == 0.1
