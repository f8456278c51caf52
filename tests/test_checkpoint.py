"""Resume checkpoints: the portable format (npz + JSON, no pickle), atomic writes, refusals,
table reopening."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import fedgan.wire.records  # noqa: F401 - Flower's records as storable state
import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.simulator import statecodec
from fedgan.simulator import store as store_module
from fedgan.simulator.checkpoint import (
    CheckpointError,
    ResumeState,
    load_latest,
    rng_state,
    save,
    set_rng_state,
)
from fedgan.simulator.store import RunStore
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord


def state(round_: int) -> ResumeState:
    rng = np.random.default_rng(round_)
    return ResumeState(
        round=round_,
        # Deliberately not in sorted order: the record's key order must survive.
        arrays={"generator.b": rng.normal(size=3).astype(np.float32), "generator.a": np.eye(2)},
        clients={
            0: {"critic.w": rng.normal(size=(2, 2)).astype(np.float32)},
            7: {"critic.w": np.zeros((2, 2), np.float32), "critic_opt.m": np.ones(4)},
        },
        strategy={
            "m_t": {"generator.a": np.full((2, 2), 0.5)},
            "current_arrays": ArrayRecord({"x": Array(np.arange(3.0))}),
            "metrics": MetricRecord({"a": 1.0, "b": [1, 2]}),
            "config": ConfigRecord({"s": "text"}),
            "weights": {3: 0.25, 4: 0.75},
            "flags": (True, None, {1, 2}),
            "scalar": np.float64(2.5),
        },
        rng=rng_state(),
        notes=["something"],
    )


def test_checkpoint_round_trips(tmp_path: Path) -> None:
    st = state(4)
    save(tmp_path, st)
    back = load_latest(tmp_path)
    assert back is not None and back.round == 4 and back.notes == ["something"]
    assert list(back.arrays) == ["generator.b", "generator.a"]
    for k, v in st.arrays.items():
        assert back.arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(back.arrays[k], v)
    assert sorted(back.clients) == [0, 7]
    for pid, arrays in st.clients.items():
        assert back.clients[pid].keys() == arrays.keys()
        for k, v in arrays.items():
            np.testing.assert_array_equal(back.clients[pid][k], v)
    s = back.strategy
    np.testing.assert_array_equal(s["m_t"]["generator.a"], np.full((2, 2), 0.5))
    np.testing.assert_array_equal(s["current_arrays"]["x"].numpy(), np.arange(3.0))
    assert dict(s["metrics"]) == {"a": 1.0, "b": [1, 2]}
    assert dict(s["config"]) == {"s": "text"}
    assert s["weights"] == {3: 0.25, 4: 0.75} and s["flags"] == (True, None, {1, 2})
    assert s["scalar"] == 2.5


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None


def test_only_the_latest_is_kept_and_the_pointer_follows(tmp_path: Path) -> None:
    save(tmp_path, state(2))
    # A leftover of a run killed between writing a checkpoint and moving the pointer.
    (tmp_path / "checkpoints" / "resume-000003.npz").write_bytes(b"half")
    save(tmp_path, state(4))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest.json", "resume-000004.npz"]
    back = load_latest(tmp_path)
    assert back is not None and back.round == 4


def test_a_failed_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is the commit point: fail it and nothing of the new checkpoint is visible."""
    save(tmp_path, state(2))
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())

    def no_rename(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, state(4))
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # no temp
    back = load_latest(tmp_path)
    assert back is not None and back.round == 2


def test_a_broken_checkpoint_is_named(tmp_path: Path) -> None:
    save(tmp_path, state(2))
    (tmp_path / "checkpoints" / "resume-000002.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="resume-000002.npz"):
        load_latest(tmp_path)
    (tmp_path / "checkpoints" / "latest.json").write_text("{")
    with pytest.raises(CheckpointError, match="latest.json"):
        load_latest(tmp_path)
    (tmp_path / "checkpoints" / "latest.json").write_text(
        '{"format": 2, "round": 2, "file": "../../elsewhere.npz"}'
    )
    with pytest.raises(CheckpointError, match="latest.json"):
        load_latest(tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_that_would_run_code_is_refused_and_nothing_runs(
    tmp_path: Path,
) -> None:
    """A format-1 checkpoint (pickle inside) and a format-2 one whose arrays are pickled
    objects: both refused, and the payload never runs (its marker file is never made)."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    payload = np.frombuffer(pickle.dumps(_Exploit(marker)), np.uint8)
    np.savez(folder / "resume-000002.npz", meta=np.frombuffer(b"{}", np.uint8), state=payload)
    (folder / "latest.json").write_text('{"format": 1, "round": 2, "file": "resume-000002.npz"}')
    with pytest.raises(CheckpointError, match="format 1.*never loaded"):
        load_latest(tmp_path)
    save(tmp_path, state(3))
    with np.load(folder / "resume-000003.npz", allow_pickle=False) as z:
        members = {k: z[k] for k in z.files}
    members["global/generator.a"] = np.array([_Exploit(marker)], dtype=object)
    np.savez(folder / "resume-000003.npz", **members)  # an object array: a pickle in the npz
    with pytest.raises(CheckpointError, match="unreadable"):
        load_latest(tmp_path)
    assert not marker.exists()


def test_rng_state_round_trips() -> None:
    tree, arrays = statecodec.encode(rng_state())
    saved = statecodec.decode(tree, arrays)
    first = (random.random(), np.random.random(), torch.rand(1).item())
    set_rng_state(saved)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == first


def test_reopen_keeps_rounds_up_to_the_checkpoint(tmp_path: Path) -> None:
    st = RunStore.create(tmp_path, "x", "name: x\n", {})
    for r in (1, 2, 3):
        st.add_metrics([{"round": r, "metric": "recall", "value": r / 10, "group": "a"}])
        st.add_timings([{"round": r, "phase": "train", "client": -1, "seconds": 1.0}])
        st.add_diagnosis({"round": r, "scope": "global", "client": -1, "label": "ok", "reason": ""})
    st.flush()
    again = RunStore(st.path)
    again.reopen(2)
    m = pd.read_parquet(st.path / "metrics.parquet")
    assert m["round"].tolist() == [1, 2] and m["value"].tolist() == [0.1, 0.2]
    assert pd.read_csv(st.path / "metrics.csv")["round"].tolist() == [1, 2]
    assert pd.read_csv(st.path / "timings.csv")["round"].tolist() == [1, 2]
    d = pd.read_csv(st.path / "diagnosis.csv", keep_default_na=False)
    assert d["round"].tolist() == [1, 2] and d["reason"].tolist() == ["", ""]
    # New rows go after the kept ones.
    again.add_metrics([{"round": 3, "metric": "recall", "value": 0.5}])
    assert pd.read_parquet(st.path / "metrics.parquet")["round"].tolist() == [1, 2, 3]
    RunStore(st.path).reopen(0)  # stopped before the first checkpoint: nothing kept
    assert pd.read_parquet(st.path / "metrics.parquet").empty
    assert not (st.path / "timings.csv").exists() and not (st.path / "diagnosis.csv").exists()
