"""Clients' private arrays, stacked in memory or memory-mapped beyond a budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedgan.simulator.private_store import PrivateStore


def _arrays(v: float) -> dict[str, np.ndarray]:
    return {"critic.w": np.full((3, 2), v, np.float32), "opt.step": np.array(v, np.float64)}


@pytest.mark.parametrize("budget", [10**9, 1])  # in memory, and spilled to disk
def test_round_trip_per_client(tmp_path: Path, budget: int) -> None:
    store = PrivateStore(4, budget_bytes=budget, spill_dir=tmp_path)
    assert store.get(2) is None and not store.has(2)
    store.put(2, _arrays(2.0))
    store.put(0, _arrays(-1.0))
    got = store.get(2)
    assert got is not None and store.has(2) and not store.has(1)
    np.testing.assert_array_equal(got["critic.w"], np.full((3, 2), 2.0, np.float32))
    assert got["opt.step"].dtype == np.float64 and float(got["opt.step"]) == 2.0
    got["critic.w"][:] = 9.0  # a copy: the store is not changed through it
    np.testing.assert_array_equal(store.get(2)["critic.w"], np.full((3, 2), 2.0))  # type: ignore[index]
    # 4 clients × (6 float32 + 1 float64) = 4 × 32 bytes, whatever holds them.
    assert store.nbytes == 4 * (6 * 4 + 8)
    assert store.spilled == (budget == 1)
    assert any(tmp_path.iterdir()) == (budget == 1)
    store.close()
    assert not any(tmp_path.iterdir())


def test_mismatched_arrays_are_refused() -> None:
    store = PrivateStore(2)
    store.put(0, _arrays(1.0))
    with pytest.raises(ValueError, match="differ"):
        store.put(1, {"critic.w": np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        store.put(1, {"critic.w": np.zeros((2, 2), np.float32), "opt.step": np.array(0.0)})
    store.put(1, {})  # nothing private (everything federated): nothing stored
    assert not store.has(1)
