"""Synthetic mixtures: geometry, exact per-mode counts, σ, seeding and validation."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import numpy as np
import pytest
from fedgan.simulator.data import DataError, Dataset, Modes, load_dataset
from fedgan.simulator.data.base import allocate_counts
from fedgan.simulator.data.mixtures import grid, ring, two_gaussians


def _nearest_mode(ds: Dataset) -> np.ndarray:
    assert ds.modes is not None
    d2 = ((ds.X[:, None, :].astype(np.float64) - ds.modes.means[None]) ** 2).sum(-1)
    return d2.argmin(axis=1)


@pytest.mark.parametrize("factory", [ring, grid, two_gaussians])
def test_shapes_dtypes_and_labels(factory: Callable[..., Dataset]) -> None:
    ds = factory(n_samples=1000, seed=3)
    assert ds.X.shape == (1000, 2) and ds.X.dtype == np.float32
    assert list(ds.groups.columns) == ["mode"] and ds.groups["mode"].dtype == np.int64
    assert ds.group_column == "mode"
    assert ds.image_shape is None and ds.modes is not None
    assert ds.modes.means.dtype == np.float64 and ds.modes.weights.sum() == pytest.approx(1.0)
    assert set(np.unique(ds.labels())) <= set(range(ds.modes.n_modes))


@pytest.mark.parametrize("factory", [ring, grid, two_gaussians])
def test_seeded_reproducibility(factory: Callable[..., Dataset]) -> None:
    a = factory(n_samples=500, seed=7)
    b = factory(n_samples=500, seed=7)
    c = factory(n_samples=500, seed=8)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.labels(), b.labels())
    assert not np.array_equal(a.X, c.X)


def test_ring_means_distinct_on_circle_at_hand_angles() -> None:
    ds = ring(n_samples=10, n_modes=8, radius=2.0)
    assert ds.modes is not None
    m = ds.modes.means
    assert m.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 2.0)
    # Neighbours on a regular octagon of radius 2 are 2·2·sin(π/8) apart; none coincide.
    dists = [np.linalg.norm(m[i] - m[j]) for i, j in itertools.combinations(range(8), 2)]
    assert min(dists) == pytest.approx(4 * np.sin(np.pi / 8))
    np.testing.assert_allclose(m[0], [2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(m[2], [0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(m[4], [-2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(m[7], [np.sqrt(2), -np.sqrt(2)], atol=1e-12)


def test_minority_modes_get_exact_counts() -> None:
    ds = ring(n_samples=5000, seed=0, minority_modes=[1, 5], minority_weight=0.02)
    counts = np.bincount(ds.labels(), minlength=8)
    # 2 % of 5000 = 100; the other six share 96 % → 800 each.
    np.testing.assert_array_equal(counts, [800, 100, 800, 800, 800, 100, 800, 800])
    assert ds.modes is not None
    np.testing.assert_allclose(ds.modes.weights, [0.16, 0.02, 0.16, 0.16, 0.16, 0.02, 0.16, 0.16])
    assert ds.info["mode_counts"] == counts.tolist()


def test_explicit_weights_largest_remainder_by_hand() -> None:
    # n·w = 2.5, 2.5, 5 → floors 2, 2, 5 leave one point; the tie goes to the lower index.
    ds = ring(n_samples=10, n_modes=3, weights=[1, 1, 2])
    np.testing.assert_array_equal(np.bincount(ds.labels(), minlength=3), [3, 2, 5])


def test_zero_weight_mode_is_empty_but_listed() -> None:
    ds = ring(n_samples=300, n_modes=4, weights=[1, 0, 1, 1])
    counts = np.bincount(ds.labels(), minlength=4)
    np.testing.assert_array_equal(counts, [100, 0, 100, 100])
    assert ds.modes is not None and ds.modes.n_modes == 4


def test_allocate_counts_sums_to_n_and_stays_within_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 30))
        w = rng.random(k)
        w /= w.sum()
        n = int(rng.integers(0, 10_000))
        c = allocate_counts(n, w)
        assert c.sum() == n and np.all(c >= 0)
        assert np.all(np.abs(c - n * w) < 1)


def test_samples_belong_to_their_mode_and_have_std_sigma() -> None:
    ds = ring(n_samples=5000, seed=1, sigma=0.02)
    assert ds.modes is not None
    labels = ds.labels()
    # σ = 0.02 against 1.53 between neighbours: every point is nearest to its own mean.
    np.testing.assert_array_equal(_nearest_mode(ds), labels)
    for k in range(8):
        dev = ds.X[labels == k].astype(np.float64) - ds.modes.means[k]
        assert np.abs(dev.mean(axis=0)).max() < 0.02 * 0.2
        # 625 points × 2 coordinates: the std estimate is within a few % of σ.
        assert dev.std() == pytest.approx(0.02, rel=0.1)


def test_per_mode_sigma_list() -> None:
    ds = two_gaussians(n_samples=4000, seed=2, sigma=[0.1, 1.0], distance=20.0)
    assert ds.modes is not None
    np.testing.assert_array_equal(ds.modes.sigma, [0.1, 1.0])
    labels = ds.labels()
    for k, s in enumerate([0.1, 1.0]):
        dev = ds.X[labels == k].astype(np.float64) - ds.modes.means[k]
        assert dev.std() == pytest.approx(s, rel=0.1)


def test_grid_means_are_the_centred_grid() -> None:
    ds = grid(n_samples=25)
    assert ds.modes is not None
    got = {tuple(p) for p in ds.modes.means.tolist()}
    want = {(float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)}
    assert got == want and ds.modes.n_modes == 25
    # Documented id order: mode i·5 + j sits at (c_i, c_j).
    np.testing.assert_array_equal(ds.modes.means[7], [-2.0, 0.0])
    np.testing.assert_array_equal(np.bincount(ds.labels(), minlength=25), np.ones(25))
    small = grid(n_samples=10, n_per_side=3, spacing=1.5).modes
    assert small is not None
    assert sorted(set(small.means[:, 0].tolist())) == [-1.5, 0.0, 1.5]


def test_two_gaussians_geometry_and_dim() -> None:
    ds = two_gaussians(n_samples=2000, seed=0, distance=3.0, sigma=0.5, dim=5)
    assert ds.X.shape == (2000, 5) and ds.modes is not None
    np.testing.assert_array_equal(ds.modes.means, [[-1.5, 0, 0, 0, 0], [1.5, 0, 0, 0, 0]])
    labels = ds.labels()
    np.testing.assert_array_equal(np.bincount(labels), [1000, 1000])
    np.testing.assert_allclose(ds.X[labels == 1].mean(axis=0), [1.5, 0, 0, 0, 0], atol=0.1)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": [0.1, 0.2]}, "sigma"),
        ({"n_modes": 0}, "n_modes"),
        ({"n_modes": 2.5}, "n_modes"),
        ({"n_modes": True}, "n_modes"),
        ({"radius": 0}, "radius"),
        ({"weights": [1, 2, 3]}, "8 entries"),
        ({"weights": [1, 1, 1, 1, 1, 1, 1, -1]}, "non-negative"),
        ({"weights": [0] * 8}, "positive"),
        ({"weights": "uniform"}, "weights"),
        ({"minority_modes": [8]}, "0..7"),
        ({"minority_modes": [-1]}, "0..7"),
        ({"minority_modes": [1, 1]}, "repeated"),
        ({"minority_modes": [1, 2], "minority_weight": 0.5}, "< 1"),
        ({"minority_modes": list(range(8)), "minority_weight": 0.01}, "all 8 modes"),
        ({"minority_modes": [1], "minority_weight": -0.1}, "minority_weight"),
        ({"minority_modes": [1], "weights": [1] * 8}, "not both"),
    ],
)
def test_ring_validation_names_the_value(params: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError, match="dataset 'ring'") as exc:
        load_dataset("ring", 100, 0, params)
    assert needle in str(exc.value)


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("grid", {"n_per_side": 0}, "n_per_side"),
        ("grid", {"spacing": -1}, "spacing"),
        ("two_gaussians", {"distance": 0}, "distance"),
        ("two_gaussians", {"dim": 0}, "dim"),
        ("two_gaussians", {"sigma": -1}, "sigma"),
    ],
)
def test_other_validation(name: str, params: dict[str, object], needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_dataset(name, 100, 0, params)


def test_n_samples_none_is_default_and_bad_n_rejected() -> None:
    assert load_dataset("ring", None, 0).n == 5000
    with pytest.raises(DataError, match="n_samples"):
        load_dataset("ring", 0, 0)


def test_modes_are_frozen_and_read_only() -> None:
    modes = ring(n_samples=10).modes
    assert modes is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        modes.sigma = np.ones(8)
    with pytest.raises(ValueError, match="read-only"):
        modes.means[0, 0] = 5.0


def test_modes_validation() -> None:
    with pytest.raises(DataError, match="sum to 1"):
        Modes(np.zeros((2, 2)), np.ones(2), np.array([0.5, 0.6]))
    with pytest.raises(DataError, match="shape"):
        Modes(np.zeros((2, 2)), np.ones(3), np.array([0.5, 0.5]))


def test_subset_keeps_rows_aligned() -> None:
    ds = grid(n_samples=1000, seed=4)
    idx = np.array([5, 3, 999, 0])
    sub = ds.subset(idx)
    np.testing.assert_array_equal(sub.X, ds.X[idx])
    np.testing.assert_array_equal(sub.labels(), ds.labels()[idx])
    assert list(sub.groups.index) == [0, 1, 2, 3] and sub.modes is ds.modes
    mask = ds.labels() == 12
    only12 = ds.subset(mask)
    assert only12.n == int(mask.sum()) == 40
    assert set(only12.labels()) == {12}
    np.testing.assert_array_equal(_nearest_mode(only12), only12.labels())
    with pytest.raises(DataError, match="mask"):
        ds.subset(mask[:10])


def test_dataset_rejects_misaligned_groups() -> None:
    ds = ring(n_samples=10)
    with pytest.raises(DataError, match="groups has 9 rows but X has 10"):
        Dataset("x", ds.X, ds.groups.iloc[:9])
    with pytest.raises(DataError, match="image_shape"):
        Dataset("x", ds.X, ds.groups, image_shape=(1, 2, 2))
