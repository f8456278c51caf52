"""PRDC: equality with the reference implementation, sanity values, degenerate sets, inputs."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any, Literal

import fedgan.simulator.metrics.neighbours as neighbours
import numpy as np
import prdc as reference
import pytest
from fedgan.simulator.metrics import PRDC, expected_coverage, prdc
from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance
from scipy.spatial.distance import cdist

Method = Literal["brute", "tree"]
Sampler = Callable[..., tuple[np.ndarray, np.ndarray]]  # the `ring` fixture
METHODS = ("brute", "tree")


def reference_totals(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints the sizes
        out = reference.compute_prdc(real, fake, k)
    return {m: float(v) for m, v in out.items()}


def reference_per_sample(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-sample terms from the reference's own distance helpers (full matrices: small sets)."""
    r_real = compute_nearest_neighbour_distances(real, k)
    r_fake = compute_nearest_neighbour_distances(fake, k)
    dist = compute_pairwise_distance(real, fake)  # [N, M]
    inside_real = dist < r_real[:, None]
    return {
        "precision_per_fake": inside_real.any(axis=0),
        "density_per_fake": inside_real.sum(axis=0) / k,
        "recall_per_real": (dist < r_fake[None, :]).any(axis=1),
        "coverage_per_real": dist.min(axis=1) < r_real,
        "nearest_real_index": dist.argmin(axis=0),
    }


def assert_matches_reference(res: PRDC, real: np.ndarray, fake: np.ndarray, k: int) -> None:
    tot = reference_totals(real, fake, k)
    # Ratios of integer counts: exact. Density only up to the order of the division by k.
    assert res.precision == tot["precision"]
    assert res.recall == tot["recall"]
    assert res.coverage == tot["coverage"]
    assert res.density == pytest.approx(tot["density"], rel=1e-12, abs=1e-15)
    per = reference_per_sample(real, fake, k)
    for name in ("precision_per_fake", "recall_per_real", "coverage_per_real"):
        np.testing.assert_array_equal(getattr(res, name), per[name], err_msg=name)
    np.testing.assert_allclose(res.density_per_fake, per["density_per_fake"], rtol=0, atol=0)
    np.testing.assert_array_equal(res.nearest_real_index, per["nearest_real_index"])
    # Radii against direct differences (the reference's |x|² − 2x·y + |y|² expansion loses
    # digits far from the origin, so it is no yardstick for the radii themselves).
    np.testing.assert_allclose(res.real_radii, exact_radii(real, k), rtol=1e-12)
    np.testing.assert_allclose(res.fake_radii, exact_radii(fake, k), rtol=1e-12)


def exact_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest other point, by scipy's direct-difference cdist."""
    off_self = cdist(x, x) + np.diag(np.full(len(x), np.inf))
    return np.partition(off_self, k - 1, axis=1)[:, k - 1]


CASES = [  # (N, M, d, k)
    (300, 250, 2, 1),
    (400, 300, 2, 5),
    (350, 420, 3, 3),
    (500, 300, 16, 5),
    (260, 380, 16, 1),
    (400, 400, 64, 3),
    (300, 200, 64, 5),
    (120, 500, 64, 1),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("n", "m", "d", "k"), CASES)
def test_matches_reference(n: int, m: int, d: int, k: int, method: Method) -> None:
    rng = np.random.default_rng(1000 * d + n + k)
    real = rng.standard_normal((n, d))
    fake = 0.2 + 1.2 * rng.standard_normal((m, d))  # overlapping, so no metric is trivially 0/1
    res = prdc(real, fake, k, method=method)
    assert res.method == method
    assert_matches_reference(res, real, fake, k)
    assert 0.0 < res.precision < 1.0 and 0.0 < res.coverage < 1.0


@pytest.mark.parametrize("d", [2, 64])
def test_brute_small_blocks_and_exact_fallback(monkeypatch: pytest.MonkeyPatch, d: int) -> None:
    """Tiny row chunks, column tiles and no spare top-k candidates drive every brute-force
    branch (tile merge, exact re-check of each row's band); the result must not change."""
    monkeypatch.setattr(neighbours, "_TILE_COLS", 64)
    monkeypatch.setattr(neighbours, "_EXTRA_CANDIDATES", 0)
    rng = np.random.default_rng(7)
    real = rng.standard_normal((333, d))
    fake = 0.1 + rng.standard_normal((301, d))
    res = prdc(real, fake, 4, method="brute", chunk_rows=37)
    assert_matches_reference(res, real, fake, 4)


@pytest.mark.parametrize("method", METHODS)
def test_tight_clusters_far_from_origin(ring: Sampler, method: Method) -> None:
    """Radii of ~0.01 at norm 2 (and offset 1e3): float32 GEMM would be too coarse here, so
    the brute path must switch to float64 on its own and still agree exactly."""
    rng = np.random.default_rng(3)
    real, _ = ring(rng, 400)
    fake, _ = ring(rng, 300)
    real, fake = real + 1e3, fake + 1e3
    assert_matches_reference(prdc(real, fake, 3, method=method), real, fake, 3)


@pytest.mark.parametrize("method", METHODS)
def test_per_sample_means_equal_totals(method: Method) -> None:
    rng = np.random.default_rng(11)
    real = rng.standard_normal((300, 8))
    fake = 0.3 + rng.standard_normal((200, 8))
    res = prdc(real, fake, 3, method=method)
    assert res.precision_per_fake.shape == res.density_per_fake.shape == (200,)
    assert res.recall_per_real.shape == res.coverage_per_real.shape == (300,)
    assert res.precision_per_fake.dtype == bool and res.recall_per_real.dtype == bool
    assert res.precision == res.precision_per_fake.mean()
    assert res.recall == res.recall_per_real.mean()
    assert res.coverage == res.coverage_per_real.mean()
    assert res.density == pytest.approx(res.density_per_fake.mean(), rel=1e-12)
    # density_per_fake counts balls, in steps of 1/k; precision is "at least one ball".
    np.testing.assert_allclose(res.density_per_fake * 3, np.round(res.density_per_fake * 3))
    np.testing.assert_array_equal(res.precision_per_fake, res.density_per_fake > 0)


def test_auto_method_by_dimension() -> None:
    rng = np.random.default_rng(0)
    assert prdc(rng.random((50, 2)), rng.random((50, 2)), 3).method == "tree"
    assert prdc(rng.random((50, 8)), rng.random((50, 8)), 3).method == "tree"
    assert prdc(rng.random((50, 9)), rng.random((50, 9)), 3).method == "brute"


def test_ring_true_samples(ring: Sampler) -> None:
    """Two samples of the 8-ring: P ≈ R ≈ .99 and C ≈ expected coverage (0.969 at k=5)."""
    rng = np.random.default_rng(2024)
    real, _ = ring(rng, 2000)
    fake, _ = ring(rng, 2000)
    res = prdc(real, fake, 5)
    assert res.precision > 0.97
    assert res.recall > 0.97
    assert res.coverage == pytest.approx(1 - 0.5**5, abs=0.02)
    assert res.density == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("method", METHODS)
def test_ring_missing_mode_has_zero_recall_there(ring: Sampler, method: Method) -> None:
    """Fake balls are ~σ wide and modes 1.5 apart: no fake ball reaches the dropped mode."""
    rng = np.random.default_rng(5)
    real, labels = ring(rng, 1600)
    fake, _ = ring(rng, 1400, modes=[0, 1, 2, 4, 5, 6, 7])
    res = prdc(real, fake, 5, method=method)
    on3 = labels == 3
    assert not res.recall_per_real[on3].any()
    assert not res.coverage_per_real[on3].any()
    assert res.recall_per_real[~on3].mean() > 0.95
    assert res.recall == pytest.approx(res.recall_per_real[~on3].mean() * 7 / 8)
    assert res.precision > 0.95  # what is generated is real-looking


@pytest.mark.parametrize("method", METHODS)
def test_collapsed_generator_on_manifold(ring: Sampler, method: Method) -> None:
    """M identical fakes: radius 0, and a zero ball contains nothing under strict <, so recall
    is exactly 0. The real balls that contain the collapse point set precision, density and
    coverage (computed here from the reference's real radii)."""
    rng = np.random.default_rng(8)
    real, _ = ring(rng, 800)
    point = ring_point = real[0] + np.array([0.003, -0.002])  # inside mode 0, not a real point
    fake = np.repeat(point[None, :], 50, axis=0)
    res = prdc(real, fake, 5, method=method)
    assert np.all(res.fake_radii == 0.0)
    assert res.recall == 0.0 and not res.recall_per_real.any()
    r_real = compute_nearest_neighbour_distances(real, 5)
    containing = np.linalg.norm(real - ring_point, axis=1) < r_real
    assert containing.sum() > 0  # the point is on the manifold
    assert res.precision == 1.0
    assert res.density == pytest.approx(containing.sum() / 5)
    np.testing.assert_array_equal(res.coverage_per_real, containing)
    assert res.coverage == pytest.approx(containing.sum() / 800)
    for value in res.as_dict().values():
        assert np.isfinite(value)


@pytest.mark.parametrize("method", METHODS)
def test_collapsed_generator_off_manifold(ring: Sampler, method: Method) -> None:
    rng = np.random.default_rng(9)
    real, _ = ring(rng, 800)
    fake = np.zeros((40, 2))  # the ring's centre, 2 away from every mode
    res = prdc(real, fake, 5, method=method)
    assert res.as_dict() == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    assert np.all(res.fake_radii == 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_collapsed_real_set(method: Method) -> None:
    """Identical reals: every real ball has radius 0 and contains nothing."""
    rng = np.random.default_rng(10)
    real = np.ones((30, 4))
    fake = 1.0 + 0.1 * rng.standard_normal((60, 4))
    res = prdc(real, fake, 3, method=method)
    assert np.all(res.real_radii == 0.0)
    assert res.precision == res.density == res.coverage == 0.0
    # Recall: a real point (all are the same point) inside some fake ball, by definition.
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, 3]  # column 0 is self
    expected = bool((np.linalg.norm(fake - 1.0, axis=1) < r_fake).any())
    assert res.recall == float(expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("d", [2, 16])
def test_exact_copies_sit_on_ball_boundaries(method: Method, d: int) -> None:
    """A generator that returns the training set: fake j = real j exactly. Real i's k-th
    neighbour l lies exactly on the boundary of ball i, so its copy is *outside* (strict <).
    Expected counts from one exact distance matrix, where each radius is itself an entry."""
    k = 4
    rng = np.random.default_rng(12 + d)
    real = rng.standard_normal((200, d))
    fake = real.copy()
    res = prdc(real, fake, k, method=method)
    dist = cdist(real, real)
    radius = exact_radii(real, k)
    count = (dist < radius[:, None]).sum(axis=0)  # count[j] = #{i: d(i, j) < r_i}, self incl.
    np.testing.assert_allclose(res.real_radii, radius, rtol=1e-12)
    np.testing.assert_array_equal(res.density_per_fake, count / k)
    assert res.precision == res.recall == res.coverage == 1.0
    np.testing.assert_array_equal(res.nearest_real_index, np.arange(200))


def test_float32_input_is_accepted() -> None:
    rng = np.random.default_rng(13)
    real = rng.standard_normal((200, 16)).astype(np.float32)
    fake = rng.standard_normal((150, 16)).astype(np.float32)
    res = prdc(real, fake, 3)
    # Same points, promoted to float64, as the reference sees them.
    assert_matches_reference(res, real.astype(np.float64), fake.astype(np.float64), 3)


@pytest.mark.parametrize(
    ("real", "fake", "k", "match"),
    [
        (np.zeros(10), np.zeros((10, 2)), 3, "real must be 2-D"),
        (np.zeros((10, 2, 1)), np.zeros((10, 2)), 3, "real must be 2-D"),
        (np.zeros((10, 2)), np.zeros((10, 3)), 3, "same number of features"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), 3, "real contains NaN"),
        (np.zeros((10, 2)), np.full((10, 2), np.inf), 3, "fake contains NaN or infinite"),
        (np.zeros((3, 2)), np.zeros((10, 2)), 3, "real needs more than k=3"),
        (np.zeros((10, 2)), np.zeros((3, 2)), 3, "fake needs more than k=3"),
        (np.zeros((10, 2)), np.zeros((10, 2)), 0, "k must be a positive integer"),
        (np.zeros((10, 2)), np.zeros((10, 2)), 2.5, "k must be a positive integer"),
        (np.zeros((10, 2)), np.zeros((10, 2)), True, "k must be a positive integer"),
        (np.zeros((10, 0)), np.zeros((10, 0)), 3, "no features"),
        ([["a", "b"]], np.zeros((10, 2)), 3, "numeric"),
    ],
)
def test_invalid_inputs(real: Any, fake: Any, k: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        prdc(real, fake, k)


def test_invalid_options() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="method"):
        prdc(x, x, 3, method="kd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_rows"):
        prdc(x, x, 3, chunk_rows=0)


def test_expected_coverage_values() -> None:
    assert expected_coverage(2000, 2000, 3) == pytest.approx(0.875, abs=5e-4)
    assert expected_coverage(2000, 2000, 5) == pytest.approx(0.969, abs=5e-4)
    # By hand: N=6, M=2, k=1: 1 − 5/7; k=2: 1 − (5/7)(4/6).
    assert expected_coverage(6, 2, 1) == pytest.approx(2 / 7)
    assert expected_coverage(6, 2, 2) == pytest.approx(1 - (5 / 7) * (4 / 6))
    with pytest.raises(ValueError):
        expected_coverage(3, 10, 3)


def test_expected_coverage_is_the_mean_coverage_of_same_distribution_samples() -> None:
    """It is an exact expectation (exchangeability): average coverage over many draws."""
    rng = np.random.default_rng(14)
    draws = [
        prdc(rng.standard_normal((150, 2)), rng.standard_normal((150, 2)), 3).coverage
        for _ in range(40)
    ]
    # std of one draw ≲ 0.03, so the mean of 40 is within ~0.005; 0.015 is 3σ.
    assert np.mean(draws) == pytest.approx(expected_coverage(150, 150, 3), abs=0.015)
