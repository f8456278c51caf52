"""PRDC's device code path: identical to the CPU path, run on the CPU here and on a GPU if any.

The device path (torch masks, ``sqdist_torch``, batched pairs) is forced onto the CPU by
patching ``_on_host``; the tests marked ``cuda`` run the same comparisons on a real GPU. This
file needs neither the reference ``prdc`` package nor the shared fixtures, so on a GPU machine
``python -m pytest --noconftest tests/metrics/test_prdc_device.py`` runs it alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import fedgan.simulator.metrics.neighbours as neighbours
import numpy as np
import pytest
import torch
from fedgan.simulator.metrics import PRDC, prdc
from fedgan.simulator.metrics.neighbours import device_block_bytes, sqdist, sqdist_torch
from fedgan.simulator.metrics.prdc import PER_SAMPLE

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

Case = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray, int]]


def _gauss(d: int, n: int = 333, m: int = 301) -> Case:
    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
        return rng.standard_normal((n, d)), 0.1 + 1.1 * rng.standard_normal((m, d)), 4

    return make


def _tight_far(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Radii ~1e-2 at norm 1e3: float32's band is too wide, so float64 takes over."""
    return (
        1e3 + 0.01 * rng.standard_normal((300, 16)),
        1e3 + 0.01 * rng.standard_normal((250, 16)),
        3,
    )


def _copies(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """fake = real exactly: every k-th neighbour's copy lies exactly on a ball's boundary."""
    real = rng.standard_normal((200, 16))
    return real, real.copy(), 4


def _collapsed(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    real = rng.standard_normal((200, 12))
    return real, np.repeat(real[:1] + 1e-3, 40, axis=0), 5


def _collapsed_real(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    return np.ones((30, 10)), 1.0 + 0.1 * rng.standard_normal((60, 10)), 3


CASES: dict[str, Case] = {
    "2-D": _gauss(2),
    "16-D": _gauss(16, 150, 420),
    "64-D": _gauss(64),
    "200-D": _gauss(200, 120, 90),  # > 128 columns: numpy's pairwise sum recurses
    "tight-far": _tight_far,
    "copies": _copies,
    "collapsed-fake": _collapsed,
    "collapsed-real": _collapsed_real,
}


@pytest.fixture
def device_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(neighbours, "_on_host", lambda device: False)
    yield


def assert_same(got: PRDC, want: PRDC, *, nearest: bool = True) -> None:
    """Per-sample arrays equal, bit for bit (and dtype), and so are the totals."""
    for name in PER_SAMPLE:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert got.as_dict() == want.as_dict()
    if nearest:
        np.testing.assert_array_equal(got.nearest_real_index, want.nearest_real_index)


def host_result(real: np.ndarray, fake: np.ndarray, k: int, **kw: object) -> PRDC:
    return prdc(real, fake, k, method="brute", **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the path, on the CPU


@pytest.mark.parametrize("case", list(CASES))
def test_device_path_on_cpu_equals_host_path(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real, fake, k = CASES[case](np.random.default_rng(len(case)))
    want = host_result(real, fake, k)
    monkeypatch.setattr(neighbours, "_on_host", lambda device: False)
    assert_same(host_result(real, fake, k), want)


@pytest.mark.usefixtures("device_path_on_cpu")
@pytest.mark.parametrize("d", [3, 64])
def test_device_path_small_blocks_tiles_and_pair_batches(
    monkeypatch: pytest.MonkeyPatch, d: int
) -> None:
    """Row chunks of 37, column tiles of 64, no spare top-k candidates (every row's band is
    re-checked) and exact re-checks in batches of ≤ 16 pairs: the result must not change."""
    rng = np.random.default_rng(40 + d)
    real = rng.standard_normal((333, d))
    fake = np.vstack([real[:100], 0.1 + rng.standard_normal((201, d))])  # copies: wide bands
    monkeypatch.setattr(neighbours, "_on_host", lambda device: True)
    want = host_result(real, fake, 4)
    monkeypatch.setattr(neighbours, "_on_host", lambda device: False)
    monkeypatch.setattr(neighbours, "_TILE_COLS", 64)
    monkeypatch.setattr(neighbours, "_EXTRA_CANDIDATES", 0)
    monkeypatch.setattr(neighbours, "_BLOCK_BYTES", 4096)  # → at most 16 pairs per batch
    monkeypatch.setattr(neighbours, "_MIN_PAIRS_PER_BATCH", 16)
    assert_same(host_result(real, fake, 4, chunk_rows=37), want)


def test_nonzero_batches_cover_the_mask_in_order() -> None:
    rng = np.random.default_rng(5)
    mask = torch.from_numpy(rng.random((23, 40)) < 0.3)
    mask[4] = True  # one full row: wider than a batch
    want = torch.nonzero(mask)
    for max_pairs in (1, 7, 40, 41, 10_000):
        batches = list(neighbours._nonzero_batches(mask, max_pairs))
        assert all(0 < len(b) <= max_pairs for b in batches)
        assert torch.equal(torch.cat(batches), want)
    assert list(neighbours._nonzero_batches(torch.zeros((3, 8), dtype=torch.bool), 5)) == []


@pytest.mark.parametrize("d", [*range(1, 20), 63, 64, 65, 127, 128, 129, 136, 255, 300, 784])
def test_sqdist_torch_rounds_as_numpy(d: int) -> None:
    """Bit-equal to :func:`sqdist`, whose rounding the radii and ball tests share."""
    rng = np.random.default_rng(d)
    scale = 10.0 ** rng.uniform(-3, 3, size=(400, 1))  # many exponents, so order matters
    a, b = scale * rng.standard_normal((400, d)), rng.standard_normal((400, d))
    got = sqdist_torch(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(got, sqdist(a, b))


# --------------------------------------------------------------------- block sizes and the choice


def test_gpu_block_bytes() -> None:
    mib = 2**20
    assert device_block_bytes(80 * 1024 * mib) == 1024 * mib  # a free H100: the 1 GiB target
    assert device_block_bytes(8192 * mib) == 1024 * mib  # exactly 1/8
    assert device_block_bytes(1024 * mib) == 128 * mib  # 1/8 of what is free
    assert device_block_bytes(16 * mib) == 8 * mib  # floor


def test_block_layout_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = 2**20
    assert neighbours._block_layout(torch.device("cpu")) == (8 * mib, 8192)  # CPU unchanged
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2048 * mib, 80 * 2**30))
    assert neighbours._block_layout(torch.device("cuda")) == (256 * mib, 2**17)
    # 100k columns of float32 in a 1 GiB block: floor(2^30 / (100000 · 4)) = 2684 rows.
    assert neighbours._rows_per_block(100_000, 4, None, 100_000, 1024 * mib) == 2684
    assert neighbours._tiles(100_000, 2**17) == [(0, 100_000)]
    assert neighbours._tiles(300_000, 2**17) == [
        (0, 100_000),
        (100_000, 200_000),
        (200_000, 300_000),
    ]


def test_tree_is_refused_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(ValueError, match="'tree'.*CPU only"):
        prdc(x, x, 3, method="tree", device="cuda")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused() -> None:
    x = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(ValueError, match="no CUDA device"):
        prdc(x, x, 3, device="cuda")
    assert prdc(x, x, 3, device="auto").method == "tree"  # auto: the CPU, and its k-d tree


# ---------------------------------------------------------------------------- on a real GPU


def assert_nearest_within_band(got: PRDC, want: PRDC, real: np.ndarray, fake: np.ndarray) -> None:
    """GPU and CPU GEMMs round differently, so a near-tie may pick either real point: where
    the indices differ, both must be within float32 rounding of the same distance."""
    differ = np.flatnonzero(got.nearest_real_index != want.nearest_real_index)
    assert differ.size <= max(1, len(fake) // 100)
    for j in differ:
        d_got = np.sum((real[got.nearest_real_index[j]] - fake[j]) ** 2)
        d_want = np.sum((real[want.nearest_real_index[j]] - fake[j]) ** 2)
        assert abs(d_got - d_want) <= 1e-4 * (np.sum(fake[j] ** 2) + d_want + 1.0)


@cuda
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_equals_cpu(case: str) -> None:
    real, fake, k = CASES[case](np.random.default_rng(len(case)))
    want = prdc(real, fake, k)  # the CPU default: k-d tree at d ≤ 8, brute above
    got = prdc(real, fake, k, device="cuda")
    assert got.method == "brute"  # auto on a GPU: brute force at any dimension
    assert_same(got, want, nearest=False)
    assert_nearest_within_band(got, want, real, fake)


@cuda
def test_cuda_tiles_chunks_and_pair_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(41)
    real = rng.standard_normal((2000, 32))
    fake = np.vstack([real[:500], 0.1 + rng.standard_normal((1500, 32))])
    want = prdc(real, fake, 4)
    monkeypatch.setattr(neighbours, "_DEVICE_TILE_COLS", 512)
    monkeypatch.setattr(neighbours, "_EXTRA_CANDIDATES", 0)
    monkeypatch.setattr(neighbours, "_DEVICE_BLOCK_BYTES", 2**16)
    monkeypatch.setattr(neighbours, "_DEVICE_MIN_BLOCK_BYTES", 2**16)
    monkeypatch.setattr(neighbours, "_MIN_PAIRS_PER_BATCH", 64)
    got = prdc(real, fake, 4, device="cuda", chunk_rows=333)
    assert_same(got, want, nearest=False)
    assert_nearest_within_band(got, want, real, fake)


@cuda
def test_cuda_with_tf32_switched_on_falls_back_to_float64() -> None:
    from fedgan.simulator.devices import float32_matmul_is_ieee

    rng = np.random.default_rng(42)
    real, fake = rng.standard_normal((1500, 64)), 0.1 + rng.standard_normal((1200, 64))
    want = prdc(real, fake, 5)
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert not float32_matmul_is_ieee(torch.device("cuda"))
        got = prdc(real, fake, 5, device="cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert_same(got, want, nearest=False)


@cuda
@pytest.mark.parametrize("d", [5, 64, 129, 784])
def test_cuda_sqdist_rounds_as_numpy(d: int) -> None:
    rng = np.random.default_rng(d)
    scale = 10.0 ** rng.uniform(-3, 3, size=(5000, 1))
    a, b = scale * rng.standard_normal((5000, d)), rng.standard_normal((5000, d))
    got = sqdist_torch(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()).cpu().numpy()
    np.testing.assert_array_equal(got, sqdist(a, b))


@cuda
def test_cuda_float32_gemm_within_the_rounding_bound() -> None:
    """The bound the exactness rests on, measured on this GPU's float32 GEMM."""
    rng = np.random.default_rng(43)
    x = 3.0 + rng.standard_normal((4000, 64))
    n2 = neighbours.squared_norms(x)
    xt = torch.from_numpy(x).cuda()
    g32 = neighbours._PairwiseSq(xt, xt, n2, n2, torch.float32, None)
    g64 = neighbours._PairwiseSq(xt, xt, n2, n2, torch.float64, g32.rows)
    for s in range(0, len(x), g32.rows):
        e = min(len(x), s + g32.rows)
        err = (g32.block(s, e, 0)[:, : len(x)].double() - g64.block(s, e, 0)[:, : len(x)]).abs()
        assert float(err.max()) <= g32.tol(s, e)
        assert float(err.max()) > 0  # really float32 (not silently float64)
