"""The `stacked` dataset: k labelled images as channels, L^k modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedgan.simulator.data import DataError, load_dataset


@pytest.fixture
def labelled_npz(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """12 distinct colour 3×4 images with labels from {10, 20, 30, 40} (L = 4, not 0..L−1)."""
    x = np.stack([np.full((3, 3, 4), 20 * i, np.uint8) for i in range(12)])
    x[:, 1] += 1  # the channels differ
    x[:, 2] += 2
    y = np.array([10, 20, 30, 40] * 3)
    p = tmp_path / "base.npz"
    np.savez(p, x=x, y=y)
    return p, x, y


def test_modes_are_label_tuples_and_channels_are_base_images(
    labelled_npz: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    p, x, y = labelled_npz
    ds = load_dataset(
        "stacked", 3000, 1, {"base": "images", "base_params": {"path": str(p)}, "k": 3}
    )
    assert ds.X.shape == (3000, 3 * 36) and ds.image_shape == (9, 3, 4)
    assert list(ds.groups.columns) == ["mode", "label0", "label1", "label2"]
    g = ds.groups
    # mode = Σ index(l_i)·4^(2−i), index by sorted label value: 10→0, 20→1, 30→2, 40→3.
    index = {10: 0, 20: 1, 30: 2, 40: 3}
    want = [
        16 * index[a] + 4 * index[b] + index[c]
        for a, b, c in zip(g["label0"], g["label1"], g["label2"], strict=True)
    ]
    np.testing.assert_array_equal(g["mode"], want)
    # 3000 draws over 64 equally likely modes: every mode appears (P(miss) ≈ 64·e^-47).
    assert np.unique(g["mode"]).size == 4**3
    # Channel block i (3 planes) is a base image whose label is label_i.
    base = x.reshape(12, -1).astype(np.float64) / 127.5 - 1.0
    for i in range(3):
        block = ds.X[:200, i * 36 : (i + 1) * 36]
        match = (np.abs(block[:, None, :] - base[None]) < 1e-6).all(axis=2)  # [200, 12]
        assert match.sum(axis=1).tolist() == [1] * 200  # exactly one base image each
        np.testing.assert_array_equal(y[match.argmax(axis=1)], g[f"label{i}"][:200])
    assert ds.info["stacked"] == {
        "k": 3,
        "n_labels": 4,
        "base_channels": 3,
        "columns": ["label0", "label1", "label2"],
        "labels": [10, 20, 30, 40],
    }
    assert ds.info["n_modes"] == 64


def test_k_and_seed(labelled_npz: tuple[Path, np.ndarray, np.ndarray]) -> None:
    p = labelled_npz[0]
    params = {"base": "images", "base_params": {"path": str(p)}, "k": 2}
    a, b = load_dataset("stacked", 500, 7, params), load_dataset("stacked", 500, 7, params)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.image_shape == (6, 3, 4) and np.unique(a.labels("mode")).size == 16
    assert not np.array_equal(a.X, load_dataset("stacked", 500, 8, params).X)


def test_stacked_digits_at_28() -> None:
    ds = load_dataset("stacked", 400, 0, {"base_params": {"size": 28}})
    assert ds.image_shape == (3, 28, 28) and ds.X.shape == (400, 3 * 784)
    assert ds.info["base_label"] == "class"  # digits' label column, found by default
    assert ds.info["stacked"]["labels"] == list(range(10))
    g = ds.groups.to_numpy()
    np.testing.assert_array_equal(g[:, 0], 100 * g[:, 1] + 10 * g[:, 2] + g[:, 3])
    big = load_dataset("digits", None, 0, {"size": 28})
    rows = {r.tobytes(): int(c) for r, c in zip(big.X, big.labels(), strict=True)}
    for i in range(3):
        chans = ds.X[:50, i * 784 : (i + 1) * 784]
        assert [rows[c.tobytes()] for c in chans] == g[:50, i + 1].tolist()


def test_bad_bases(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no images") as e:
        load_dataset("stacked", 10, 0, {"base": "ring"})
    assert e.value.key == "base"
    with pytest.raises(DataError, match=r"no group column 'colour'.*\['class'\]") as e:
        load_dataset("stacked", 10, 0, {"label": "colour"})
    assert e.value.key == "label"
    with pytest.raises(DataError, match=r"base_params: .*no such file") as e:
        load_dataset("stacked", 10, 0, {"base": "images", "base_params": {"path": "nope.npz"}})
    assert e.value.key == "base_params"
    with pytest.raises(DataError, match="unknown dataset") as e:
        load_dataset("stacked", 10, 0, {"base": "no_such_set"})
    assert e.value.key == "base"
