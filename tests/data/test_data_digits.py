"""8×8 digits, stacked digits and the on-the-fly digit classifier with its disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fedgan.simulator.data import DataError, load_dataset
from fedgan.simulator.data import digit_classifier as dc
from fedgan.simulator.data.digits import digits, stacked_digits
from sklearn.datasets import load_digits


@pytest.fixture(scope="module")
def raw() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits scaled by hand: pixel 0..16 → p/8 − 1."""
    b = load_digits()
    return (b.data / 8.0 - 1.0).astype(np.float32), b.target.astype(np.int64)


def _labels_of_rows(X: np.ndarray, raw: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The true label of each row of X, looked up by exact pixel match in the raw data."""
    table: dict[bytes, set[int]] = {}
    for row, y in zip(*raw, strict=True):
        table.setdefault(row.tobytes(), set()).add(int(y))
    out = []
    for row in X:
        labels = table[np.ascontiguousarray(row).tobytes()]  # KeyError = not a real image
        assert len(labels) == 1
        out.append(next(iter(labels)))
    return np.array(out)


# -- digits ---------------------------------------------------------------------------------


def test_digits_all_images_once(raw: tuple[np.ndarray, np.ndarray]) -> None:
    ds = digits()
    assert ds.X.shape == (1797, 64) and ds.X.dtype == np.float32
    assert ds.image_shape == (1, 8, 8) and ds.group_column == "class" and ds.modes is None
    assert ds.X.min() == -1.0 and ds.X.max() == 1.0
    # Every image exactly once (no replacement): the sorted rows equal the raw sorted rows.
    order = np.lexsort(ds.X.T[::-1])
    raw_order = np.lexsort(raw[0].T[::-1])
    np.testing.assert_array_equal(ds.X[order], raw[0][raw_order])
    np.testing.assert_array_equal(np.bincount(ds.labels()), np.bincount(raw[1]))
    np.testing.assert_array_equal(_labels_of_rows(ds.X[:200], raw), ds.labels()[:200])


def test_digits_weighted_minority_class_exact() -> None:
    ds = digits(n_samples=200, seed=1, classes=[3, 8], weights=[0.9, 0.1])
    assert ds.n == 200
    assert set(ds.labels()) == {3, 8}
    np.testing.assert_array_equal(np.bincount(ds.labels(), minlength=10)[[3, 8]], [180, 20])
    assert ds.info["class_counts"] == {3: 180, 8: 20}


def test_digits_weights_without_n_take_the_most_that_fit() -> None:
    # 183 threes and 174 eights exist. n = floor(min(183/0.9, 174/0.1)) = 203 →
    # 182.7 / 20.3 → 182 + 20, the spare point to the larger remainder (3s): 183 / 20.
    ds = digits(classes=[3, 8], weights=[0.9, 0.1])
    assert ds.n == 203
    assert ds.info["class_counts"] == {3: 183, 8: 20}


def test_digits_stratified_subsample_and_seed() -> None:
    a = digits(n_samples=100, seed=5)
    b = digits(n_samples=100, seed=5)
    c = digits(n_samples=100, seed=6)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)
    counts = np.bincount(a.labels(), minlength=10)
    assert counts.sum() == 100 and counts.min() >= 9 and counts.max() <= 11


@pytest.mark.parametrize("side", [28, 32, 5])
def test_digits_size_is_a_bilinear_resample(raw: tuple[np.ndarray, np.ndarray], side: int) -> None:
    # Reference: torch's bilinear interpolation (pixel centres aligned; antialiased when
    # shrinking, as Pillow's filter is), on the raw 8×8 images.
    ds = digits(size=side)
    assert ds.X.shape == (1797, side * side) and ds.image_shape == (1, side, side)
    assert ds.X.min() >= -1.0 and ds.X.max() <= 1.0
    want = torch.nn.functional.interpolate(
        torch.from_numpy(raw[0].reshape(-1, 1, 8, 8)),
        size=(side, side),
        mode="bilinear",
        align_corners=False,
        antialias=side < 8,
    ).reshape(1797, -1)
    # Same seed and classes as the 8×8 set: the same images in the same order, only bigger.
    small = digits()
    order = _labels_of_rows(small.X[:50], raw)
    np.testing.assert_array_equal(ds.labels()[:50], order)
    idx = [int(np.flatnonzero((raw[0] == row).all(axis=1))[0]) for row in small.X[:50]]
    np.testing.assert_allclose(ds.X[:50], want[idx].numpy(), atol=1e-5)
    assert digits(size=8).info["size"] == 8
    np.testing.assert_array_equal(digits(size=8).X, small.X)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n_samples": 1798}, "only 1797"),
        ({"size": 0}, "size must be >= 1"),
        ({"classes": [10]}, "0..9"),
        ({"classes": []}, "at least one"),
        ({"classes": [1, 1]}, "repeated"),
        ({"classes": [1, 2], "weights": [1.0]}, "2 entries"),
        ({"classes": [3, 8], "weights": [0.5, 0.5], "n_samples": 400}, "at most 348"),
    ],
)
def test_digits_validation(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        digits(**kwargs)  # type: ignore[arg-type]


# -- classifier -----------------------------------------------------------------------------


def test_classifier_accuracy_and_outputs(raw: tuple[np.ndarray, np.ndarray]) -> None:
    clf = dc.get_digit_classifier()
    assert clf.test_accuracy >= 0.9
    pred = clf.predict(raw[0])
    assert pred.dtype == np.int64 and pred.shape == (1797,)
    assert np.mean(pred == raw[1]) >= 0.9
    feats = clf.features(raw[0][:7])
    assert feats.shape == (7, dc.FEATURE_DIM) and feats.dtype == np.float32
    assert np.all(feats >= 0)  # post-ReLU
    proba = clf.predict_proba(raw[0][:7])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(axis=1), pred[:7])
    with pytest.raises(DataError, match=r"\[n, 64\]"):
        clf.predict(raw[0][:, :10])


def test_classifier_cached_in_env_dir_and_reloaded(
    classifier_cache: Path, raw: tuple[np.ndarray, np.ndarray]
) -> None:
    first = dc.get_digit_classifier()
    assert first.cache_path is not None and first.cache_path.parent == classifier_cache.resolve()
    assert first.cache_path.is_file()
    assert dc.get_digit_classifier() is first  # memoized in-process
    dc.clear_memo()
    second = dc.get_digit_classifier()
    assert second is not first and second.loaded_from_cache
    assert second.test_accuracy == first.test_accuracy
    np.testing.assert_array_equal(second.predict(raw[0]), first.predict(raw[0]))
    np.testing.assert_array_equal(second.features(raw[0][:50]), first.features(raw[0][:50]))


def test_corrupt_cache_retrains_identically(
    tmp_path: Path, raw: tuple[np.ndarray, np.ndarray]
) -> None:
    reference = dc.get_digit_classifier()
    path = tmp_path / reference.cache_path.name  # type: ignore[union-attr]
    path.write_bytes(b"not a torch file")
    threads, rng_state = torch.get_num_threads(), torch.random.get_rng_state()
    with pytest.warns(UserWarning, match="unreadable"):
        clf = dc.get_digit_classifier(tmp_path)
    assert not clf.loaded_from_cache
    # Seeded training reproduces the cached weights bit for bit ...
    np.testing.assert_array_equal(clf.features(raw[0]), reference.features(raw[0]))
    assert clf.test_accuracy == reference.test_accuracy
    # ... without touching the caller's torch RNG stream or thread count.
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    # The damaged file was replaced by a loadable one, with no temp files left behind.
    dc.clear_memo()
    assert dc.get_digit_classifier(tmp_path).loaded_from_cache
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_predict_stacked_combines_channels(raw: tuple[np.ndarray, np.ndarray]) -> None:
    clf = dc.get_digit_classifier()
    imgs = raw[0][[0, 1, 2, 3, 4, 5]]
    stacked = np.concatenate([imgs[:2], imgs[2:4], imgs[4:6]], axis=1)  # channels 0, 1, 2
    p = clf.predict(imgs)
    want = 100 * p[[0, 1]] + 10 * p[[2, 3]] + p[[4, 5]]
    np.testing.assert_array_equal(clf.predict_stacked(stacked), want)


# -- stacked digits -------------------------------------------------------------------------


def test_stacked_digits_modes_and_channels(raw: tuple[np.ndarray, np.ndarray]) -> None:
    ds = stacked_digits(n_samples=10000, seed=0)
    assert ds.X.shape == (10000, 192) and ds.X.dtype == np.float32
    assert ds.image_shape == (3, 8, 8)
    assert list(ds.groups.columns) == ["mode", "digit0", "digit1", "digit2"]
    g = ds.groups.to_numpy()
    mode = g[:, 0]
    assert mode.min() >= 0 and mode.max() <= 999
    np.testing.assert_array_equal(mode, 100 * g[:, 1] + 10 * g[:, 2] + g[:, 3])
    # Uniform over 1000 modes: with 10 draws per mode, P(a mode is absent) = e^-10.
    assert np.unique(mode).size >= 990
    # Each channel really is an image of its labelled digit.
    for c in range(3):
        chan = ds.X[:300, c * 64 : (c + 1) * 64]
        np.testing.assert_array_equal(_labels_of_rows(chan, raw), g[:300, c + 1])
    assert ds.info["stacked"] == {
        "k": 3,
        "n_labels": 10,
        "base_channels": 1,
        "columns": ["digit0", "digit1", "digit2"],
        "labels": list(range(10)),
    }
    clf = dc.get_digit_classifier()
    # The classifier recovers the true mode of real samples about acc³ of the time.
    assert np.mean(clf.predict_stacked(ds.X) == mode) >= 0.85


def test_stacked_digits_seeded_via_registry() -> None:
    a = load_dataset("stacked_digits", 500, 3)
    b = load_dataset("stacked_digits", 500, 3)
    c = load_dataset("stacked_digits", 500, 4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.labels(), b.labels())
    assert not np.array_equal(a.labels(), c.labels())
    assert load_dataset("stacked_digits", None, 0).n == 10000
