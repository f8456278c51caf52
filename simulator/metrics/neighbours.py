"""Exact k-th-neighbour radii and strict ball memberships between two point sets, in bounded memory.

Two back ends give the same answers:

* ``brute``: squared distances by GEMM in torch, one block (a chunk of rows × a tile of columns,
  8 MiB) at a time, so memory beyond the inputs is O(block), never O(n · m). The GEMM runs in
  float32 when its rounding bound is small against the radii, else in float64. Every pair that
  the bound cannot settle is re-checked with the exact float64 formula, so rounding never
  changes a result.
  On a GPU (``device="cuda"``) the blocks are larger, and the GEMM, top-k, candidate masks,
  exact re-checks and counts all stay on the device; only per-point results come back.
* ``tree``: ``scipy.spatial.cKDTree`` neighbour and ball queries, good for low dimension (d ≲ 8).
  Balls are queried slightly enlarged (``<=`` on a radius nudged outwards) and the candidates are
  then re-checked with the same exact formula under the strict ``<``.

Both decide every comparison ``d² < r²`` with :func:`sqdist` (on a device, with
:func:`sqdist_torch`, which rounds bit for bit the same), whose result depends on the two points
alone, so a point that exactly copies another's k-th neighbour sits exactly *on* that ball's
boundary (and so outside it) in all of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from fedgan.simulator.devices import float32_matmul_is_ieee, resolve_device
from numpy.typing import NDArray
from scipy.spatial import cKDTree

Method = Literal["brute", "tree"]

# Extra neighbours fetched beyond k + 1 (self) by the GEMM top-k, so that float32 rounding rarely
# leaves the true k-th neighbour outside the candidates (the exact fallback then handles it).
_EXTRA_CANDIDATES = 2
# Bytes for one block of the distance matrix. Small enough that the block stays in cache between
# the GEMM that writes it and the passes that read it (8 MiB measured fastest on 2 cores, ~25 %
# faster than 64 MiB), and it bounds the memory: O(block) beyond the inputs, never N × M.
_BLOCK_BYTES = 8 * 2**20
# Columns per block. Wider sets are cut into column tiles, so that a block keeps enough rows for
# an efficient GEMM (32 × 100k ran at half the speed of 256 × 8192 on 2 cores).
_TILE_COLS = 8192
# float32 is used only while its error band is this small against a typical squared radius: a
# wider band would pull in many candidates in high dimension ((1 + band/2)^d of them).
_MAX_RELATIVE_BAND = 1e-3
# Below this many query points a cKDTree query runs on one thread (see `_workers`).
_PARALLEL_QUERY_ROWS = 2048
# Queries per cKDTree ball-query call: bounds the Python lists that scipy returns.
_TREE_QUERY_ROWS = 8192
# On a GPU, blocks of this size (at most 1/8 of the free memory, see `device_block_bytes`) keep
# kernel launches and host round trips to tens per pass. Measured on an H100, 100k × 100k at
# 64-D: 0.78 s with 512 MiB blocks, 0.79 s with 1 GiB, 0.81 s with 2 GiB (flat: what made
# small blocks slow was host work per chunk, since moved to the device).
_DEVICE_BLOCK_BYTES = 2**30
_DEVICE_MIN_BLOCK_BYTES = 8 * 2**20
# Columns per block on a GPU: 100k × 100k is one tile, wider sets are still cut so that a
# block keeps thousands of rows.
_DEVICE_TILE_COLS = 2**17
# Fewest candidate pairs per exact re-check batch on a device (launch overhead dominates below).
_MIN_PAIRS_PER_BATCH = 1024


def sqdist(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Squared Euclidean distances between paired rows, a function of the two rows alone.

    Parameters
    ----------
    a, b : ndarray, shape [p, d]
        Row i of `a` is paired with row i of `b` (either may be a broadcast view).

    Returns
    -------
    ndarray, shape [p]
        Σ_t (a[i, t] − b[i, t])² in float64.
    """
    # `a - b` is always a fresh C-contiguous [p, d] array, and numpy sums along the contiguous
    # axis row by row (pairwise within the row), so the rounding depends on the row's values
    # only, not on p or on the other rows: equal pairs of points give bit-equal results, which
    # the strict ball tests rely on when points are duplicated (tested on exact copies).
    diff = a - b
    np.square(diff, out=diff)
    return diff.sum(axis=1)


def squared_norms(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise squared norms [n] of `x` [n, d], computed as :func:`sqdist` to the origin."""
    return sqdist(x, np.zeros_like(x))


def sqdist_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`sqdist` for float64 tensors [p, d] on any device, rounded bit for bit the same.

    The row sums are spelled out as element-wise additions in numpy's own order (its pairwise
    summation along a contiguous row), because a torch reduction may group terms differently
    with the shape and the device, and the strict ball tests need one rounding for all.
    """
    diff = a - b
    return _pairwise_row_sum(diff * diff)


def _pairwise_row_sum(sq: torch.Tensor) -> torch.Tensor:
    """Row sums [p] of `sq` [p, n] in the order of numpy's pairwise sum (blocks ≤ 128, 8 lanes)."""
    p, n = sq.shape
    if n < 8:
        res = torch.zeros(p, dtype=sq.dtype, device=sq.device)
        for i in range(n):
            res = res + sq[:, i]
        return res
    if n <= 128:
        lanes = sq[:, :8].clone()
        stop = n - n % 8
        for i in range(8, stop, 8):
            lanes += sq[:, i : i + 8]
        r = lanes.unbind(1)
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for i in range(stop, n):
            res = res + sq[:, i]
        return res
    half = n // 2
    half -= half % 8
    return _pairwise_row_sum(sq[:, :half]) + _pairwise_row_sum(sq[:, half:])


def device_block_bytes(free_bytes: int) -> int:
    """Bytes of one distance block on a GPU with `free_bytes` of free memory.

    `_DEVICE_BLOCK_BYTES` (1 GiB), but at most 1/8 of the free memory, at least 8 MiB. A pass
    holds the block, two boolean masks of 1/4 block each and the candidate pairs (16 bytes
    each: about k per row, at worst 4 blocks when every entry is a candidate); a float64 redo
    of a float32 chunk adds a block of twice the size.
    """
    return max(_DEVICE_MIN_BLOCK_BYTES, min(_DEVICE_BLOCK_BYTES, int(free_bytes) // 8))


def _block_layout(device: torch.device) -> tuple[int, int]:
    """(bytes per block, columns per tile) for GEMM blocks on `device`."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return device_block_bytes(free), _DEVICE_TILE_COLS
    return _BLOCK_BYTES, _TILE_COLS


def _on_host(device: torch.device) -> bool:
    """Whether the numpy-side candidate passes (fastest on a CPU) serve `device`.

    Tests patch this to False to run the device code path on the CPU.
    """
    return device.type == "cpu"


@dataclass(frozen=True, eq=False)
class Memberships:
    """Strict ball memberships between real [N, d] and fake [M, d] points.

    Attributes
    ----------
    real_balls_per_fake : ndarray of int64, shape [M]
        Number of real balls (radius = real k-NN radius) strictly containing each fake point.
    real_covered : ndarray of bool, shape [N]
        Whether each real ball strictly contains at least one fake point.
    real_recalled : ndarray of bool, shape [N]
        Whether each real point lies strictly inside at least one fake ball.
    nearest_real : ndarray of intp, shape [M]
        Index of each fake point's nearest real point.
    """

    real_balls_per_fake: NDArray[np.int64]
    real_covered: NDArray[np.bool_]
    real_recalled: NDArray[np.bool_]
    nearest_real: NDArray[np.intp]


def kth_neighbour_sqdist(
    x: NDArray[np.float64],
    k: int,
    method: Method,
    chunk_rows: int | None = None,
    device: str | torch.device = "cpu",
) -> NDArray[np.float64]:
    """Squared distance of each point to its k-th nearest neighbour in the same set, self excluded.

    Parameters
    ----------
    x : ndarray, shape [n, d], float64, n > k
    k : int
    method : {"brute", "tree"}
    chunk_rows : int, optional
        Rows per GEMM block (brute only); default fits `_BLOCK_BYTES` (CPU) or
        :func:`device_block_bytes` (GPU).
    device : str or torch.device, default "cpu"
        Where the brute back end runs ("cpu", "cuda", "cuda:<index>", "auto"); the tree back
        end runs on the CPU only.

    Returns
    -------
    ndarray, shape [n]
        r², in squared feature units. Duplicated points count as neighbours at distance 0, so a
        point with at least k exact copies has radius 0.
    """
    dev = _check_device(method, device)
    if method == "tree":
        return _tree_kth_sqdist(x, k)
    return _brute_kth_sqdist(x, k, chunk_rows, dev)


def memberships(
    real: NDArray[np.float64],
    fake: NDArray[np.float64],
    real_r2: NDArray[np.float64],
    fake_r2: NDArray[np.float64],
    method: Method,
    chunk_rows: int | None = None,
    device: str | torch.device = "cpu",
) -> Memberships:
    """Which fakes lie strictly inside which real balls, and which reals inside fake balls.

    Parameters
    ----------
    real : ndarray, shape [N, d]
    fake : ndarray, shape [M, d]
    real_r2 : ndarray, shape [N]
        Squared radii of the real balls.
    fake_r2 : ndarray, shape [M]
        Squared radii of the fake balls.
    method : {"brute", "tree"}
    chunk_rows : int, optional
        Fake rows per GEMM block (brute only).
    device : str or torch.device, default "cpu"
        Where the brute back end runs, as in :func:`kth_neighbour_sqdist`.
    """
    dev = _check_device(method, device)
    if method == "tree":
        return _tree_memberships(real, fake, real_r2, fake_r2)
    return _brute_memberships(real, fake, real_r2, fake_r2, chunk_rows, dev)


def _check_device(method: Method, device: str | torch.device) -> torch.device:
    dev = resolve_device(device)
    if method == "tree" and dev.type != "cpu":
        raise ValueError(
            f"method 'tree' (scipy's k-d tree) runs on the CPU only, got device {str(dev)!r}; "
            "use method 'brute' or 'auto' on a GPU"
        )
    return dev


# --------------------------------------------------------------------------- brute force (torch)


def _unit_roundoff(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps) / 2.0


def _gemm_error_factor(dtype: torch.dtype, d: int) -> float:
    """c such that |GEMM d² − exact d²| ≤ c · (|a|² + |b|²) for rows a, b.

    The augmented GEMM sums K = d + 2 products whose absolute values add up to at most
    2(|a|² + |b|²); the textbook dot-product bound gives γ_K = K·u / (1 − K·u) on that sum.
    Rounding the inputs to the GEMM dtype adds ≤ 3u(|a|² + |b|²) more; 4u keeps a margin.
    """
    u = _unit_roundoff(dtype)
    kk = d + 2
    gamma = kk * u / (1.0 - kk * u)
    return 2.0 * gamma + 4.0 * u


def _tiles(m: int, tile_cols: int) -> list[tuple[int, int]]:
    """Column ranges [t0, t1) covering m columns: one range, or near-equal tiles ≤ tile_cols."""
    n_tiles = -(-m // tile_cols)
    if n_tiles <= 1:
        return [(0, m)]
    step = -(-m // n_tiles)
    return [(t0, min(m, t0 + step)) for t0 in range(0, m, step)]


def _rows_per_block(
    width: int, itemsize: int, chunk_rows: int | None, n_rows: int, block_bytes: int
) -> int:
    if chunk_rows is not None:
        return max(1, min(int(chunk_rows), n_rows))
    return max(1, min(n_rows, block_bytes // max(1, width * itemsize)))


def _upper(values: NDArray[np.float64], dtype: np.dtype[np.floating]) -> NDArray[np.floating]:
    """`values` cast to `dtype`, rounded up, so a `<=` test in `dtype` never loses a candidate."""
    cast = values.astype(dtype)
    if cast.dtype == np.float64:
        return cast
    return np.nextafter(cast, cast.dtype.type(np.inf))


def _upper_torch(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`_upper` for a float64 tensor, on its device."""
    cast = values.to(dtype)
    if dtype == torch.float64:
        return cast
    return torch.nextafter(cast, torch.full_like(cast, torch.inf))


def _sparse_nonzero(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(rows, cols) of the True entries of a C-contiguous [r, w] mask with w % 8 == 0.

    Candidates are sparse (about k per row), so scanning the mask as int64 words (8 entries
    each) and decoding only the non-zero words is several times faster than a plain nonzero.
    """
    r, w = mask.shape
    words = torch.from_numpy(mask).view(torch.int64)  # [r, w / 8]
    hits = torch.nonzero(words).numpy()
    if hits.size == 0:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    eight = mask.reshape(r, w // 8, 8)[hits[:, 0], hits[:, 1]]  # [h, 8]
    h, b = np.nonzero(eight)
    return hits[h, 0].astype(np.intp), (hits[h, 1] * 8 + b).astype(np.intp)


def _nonzero_batches(mask: torch.Tensor, max_pairs: int) -> Iterator[torch.Tensor]:
    """(row, col) pairs [p ≤ max_pairs, 2] of the True entries of `mask` [r, w], row-major.

    Usually one batch; when a band is wide (duplicated points) the exact re-checks of the pairs
    go `max_pairs` at a time, so their float64 temporaries stay bounded. (Counting the entries
    first, to bound the pairs themselves too, cost a full pass over the mask: 6 % of the time.)
    """
    pairs = torch.nonzero(mask)
    for p0 in range(0, pairs.shape[0], max_pairs):
        yield pairs[p0 : p0 + max_pairs]


class _PairwiseSq:
    """Squared distances between row chunks of `a` [n, d] and column tiles of `b` [m, d].

    The norms ride along as two extra columns, [a, 1, |a|²] · [−2b, |b|², 1]ᵀ = |a − b|², so a
    block costs a single GEMM and no further pass. Each tile is padded to a multiple of 8
    columns for `_sparse_nonzero`; padding columns hold a huge value, so they are never a
    neighbour, a minimum or a candidate. The GEMM operands and the block live on `device`.
    """

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        a_n2: NDArray[np.float64],
        b_n2: NDArray[np.float64],
        dtype: torch.dtype,
        chunk_rows: int | None,
    ) -> None:
        """`a` [n, d] and `b` [m, d]: float64 tensors on the device that runs the GEMMs;
        `a_n2` [n] and `b_n2` [m]: their squared norms (:func:`squared_norms`)."""
        m, d = b.shape
        device = b.device
        block_bytes, tile_cols = _block_layout(device)
        self.m = m
        self.tiles = _tiles(m, tile_cols)
        pad_value = float(torch.finfo(dtype).max) / 4.0
        # Assembled on the device (a host-side build cost 0.07 s per set at 100k × 64 on an
        # H100 machine); every value is copied or scaled by −2 exactly, then rounded to `dtype`
        # once, as on the host.
        ones = torch.ones((a.shape[0], 1), dtype=torch.float64, device=device)
        a_n2_t = torch.from_numpy(a_n2).to(device)[:, None]
        self.left = torch.cat([a, ones, a_n2_t], dim=1).to(dtype)
        b_n2_t = torch.from_numpy(b_n2).to(device)
        # Every tile is padded to one width, so one buffer (and its views) serves all blocks.
        self.width = max(-(-(t1 - t0) // 8) * 8 for t0, t1 in self.tiles)
        self.right_t: list[torch.Tensor] = []
        for t0, t1 in self.tiles:
            right_t = torch.zeros((d + 2, self.width), dtype=torch.float64, device=device)
            right_t[:d, : t1 - t0] = -2.0 * b[t0:t1].T
            right_t[d, : t1 - t0] = b_n2_t[t0:t1]
            right_t[d + 1, : t1 - t0] = 1.0
            right_t[d, t1 - t0 :] = pad_value
            self.right_t.append(right_t.to(dtype))
        self.rows = _rows_per_block(self.width, dtype.itemsize, chunk_rows, a.shape[0], block_bytes)
        self.block_bytes = block_bytes
        self.a_n2 = a_n2
        self.b_n2_max = float(b_n2.max())
        self.factor = _gemm_error_factor(dtype, d)
        self.dtype = dtype
        self.device = device
        self.np_dtype: np.dtype[np.floating] = np.dtype(
            np.float32 if dtype == torch.float32 else np.float64
        )
        self.buf = torch.empty((self.rows, self.width), dtype=dtype, device=device)

    def block(self, s: int, e: int, tile: int) -> torch.Tensor:
        """Approximate squared distances [e − s, width] for rows s..e−1 of `a` and one tile."""
        if e - s > self.rows:
            raise ValueError(f"block of {e - s} rows exceeds the buffer's {self.rows}")
        out = self.buf[: e - s]
        torch.mm(self.left[s:e], self.right_t[tile], out=out)
        return out

    def row(self, i: int) -> torch.Tensor:
        """Approximate squared distances [m] from row i of `a` to every row of `b`."""
        parts = [torch.mm(self.left[i : i + 1], r)[0] for r in self.right_t]
        return torch.cat([p[: t1 - t0] for p, (t0, t1) in zip(parts, self.tiles, strict=True)])

    def tol(self, s: int, e: int) -> float:
        """Bound on |approximate − exact| squared distance over the block's entries."""
        return self.factor * (float(self.a_n2[s:e].max()) + self.b_n2_max)


def _brute_kth_sqdist(
    x: NDArray[np.float64], k: int, chunk_rows: int | None, device: torch.device
) -> NDArray[np.float64]:
    n = x.shape[0]
    n2 = squared_norms(x)
    kk = min(n, k + 1 + _EXTRA_CANDIDATES)
    # A float32 GEMM is only trusted while matmuls really run in float32 (not bf16/TF32).
    first = torch.float32 if float32_matmul_is_ieee(device) else torch.float64
    # Both dtypes walk the same row chunks (a float64 redo replaces a float32 chunk), sized
    # for the first one.
    block_bytes, tile_cols = _block_layout(device)
    width = max(t1 - t0 for t0, t1 in _tiles(n, tile_cols))
    rows = _rows_per_block(width, first.itemsize, chunk_rows, n, block_bytes)
    engines: dict[torch.dtype, _PairwiseSq] = {}

    x_t = torch.from_numpy(x).to(device)  # on the CPU: the same memory

    def engine(dtype: torch.dtype) -> _PairwiseSq:
        if dtype not in engines:
            engines[dtype] = _PairwiseSq(x_t, x_t, n2, n2, dtype, rows)
        return engines[dtype]

    host = _on_host(device)
    out = np.empty(n)
    out_t = torch.empty(0 if host else n, dtype=torch.float64, device=device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        for dtype in (first, torch.float64):
            # None: the float32 band is wide against these radii (tight clusters far from the
            # origin, or many duplicates): redo the chunk in float64, whose band is ~1e-9 as
            # wide (float64 never asks for a redo).
            if host:
                r2 = _brute_radii_chunk(x, engine(dtype), s, e, k, kk)
                if r2 is not None:
                    out[s:e] = r2
                    break
            else:
                r2_t = _device_radii_chunk(x_t, engine(dtype), s, e, k, kk)
                if r2_t is not None:
                    out_t[s:e] = r2_t
                    break
        else:
            raise AssertionError("a float64 chunk asked for a redo")  # its band is never wide
    return out if host else out_t.cpu().numpy()


def _chunk_topk(g: _PairwiseSq, s: int, e: int, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GEMM values [e − s, kk] and column indices of the kk smallest entries of each row."""
    vals: list[torch.Tensor] = []
    idxs: list[torch.Tensor] = []
    for t, (t0, _) in enumerate(g.tiles):
        v, i = torch.topk(g.block(s, e, t), kk, dim=1, largest=False, sorted=False)
        vals.append(v)
        idxs.append(i + t0)
    if len(vals) == 1:
        return vals[0], idxs[0]
    # Merge: the kk smallest of the union of each tile's kk smallest are the row's kk smallest.
    v, j = torch.topk(torch.cat(vals, dim=1), kk, dim=1, largest=False, sorted=False)
    return v, torch.cat(idxs, dim=1).gather(1, j)


def _brute_radii_chunk(
    x: NDArray[np.float64], g: _PairwiseSq, s: int, e: int, k: int, kk: int
) -> NDArray[np.float64] | None:
    """k-th neighbour r² [e − s] for rows s..e−1 of `x`; None if float32 is too coarse here."""
    n, d = x.shape
    vals, idx_t = _chunk_topk(g, s, e, kk)
    idx = idx_t.numpy()
    rows = np.arange(s, e)
    # Exact distances to the candidates; self is excluded by index (not by value), so exact
    # copies of a point still count as neighbours at distance 0.
    cand = sqdist(np.repeat(x[s:e], kk, axis=0), x[idx.ravel()]).reshape(e - s, kk)
    cand[idx == rows[:, None]] = np.inf
    r2 = np.partition(cand, k - 1, axis=1)[:, k - 1]
    if kk == n:
        return r2  # every point was a candidate: nothing left to verify
    tol = g.tol(s, e)
    if g.dtype != torch.float64 and not tol <= _MAX_RELATIVE_BAND * _typical_sq_radius(r2):
        return None
    # Every non-candidate has GEMM value ≥ the largest candidate value, hence exact value
    # ≥ that − tol. If that is ≥ r², no non-candidate can be nearer than the k-th candidate.
    last = vals.max(dim=1).values.numpy().astype(np.float64)
    unsure = np.flatnonzero((r2 > 0) & (r2 > last - tol))
    for i in unsure.tolist():
        # Every point with exact d² ≤ r² has GEMM value ≤ r² + tol: check them all exactly.
        thr = _upper(np.array([r2[i] + tol]), g.np_dtype)[0]
        band = np.flatnonzero(g.row(s + i).numpy() <= thr)
        dd = sqdist(np.broadcast_to(x[s + i], (band.size, d)), x[band])
        dd[band == s + i] = np.inf
        r2[i] = np.partition(dd, k - 1)[k - 1]
    return r2


def _device_radii_chunk(
    x: torch.Tensor, g: _PairwiseSq, s: int, e: int, k: int, kk: int
) -> torch.Tensor | None:
    """:func:`_brute_radii_chunk` with every step on `x`'s device: r² [e − s] or None.

    `x` is the float64 point set [n, d] on the device of `g`.
    """
    n, d = x.shape
    vals, idx = _chunk_topk(g, s, e, kk)
    rows = torch.arange(s, e, device=x.device)
    cand = sqdist_torch(x[s:e].repeat_interleave(kk, dim=0), x[idx.reshape(-1)])
    cand = cand.reshape(e - s, kk)
    cand[idx == rows[:, None]] = torch.inf
    r2 = torch.kthvalue(cand, k, dim=1).values  # the k-th smallest, as np.partition's k − 1
    if kk == n:
        return r2
    tol = g.tol(s, e)
    # One round trip per chunk: the decisions below need the radii and the largest candidate
    # GEMM value of each row on the host.
    last = vals.max(dim=1).values.to(torch.float64)
    r2_h, last_h = torch.stack([r2, last]).cpu().numpy()
    if g.dtype != torch.float64 and not tol <= _MAX_RELATIVE_BAND * _typical_sq_radius(r2_h):
        return None
    unsure = np.flatnonzero((r2_h > 0) & (r2_h > last_h - tol))
    for i in unsure.tolist():
        thr = float(_upper(np.array([r2_h[i] + tol]), g.np_dtype)[0])
        band = torch.nonzero(g.row(s + i) <= thr).flatten()
        dd = sqdist_torch(x[s + i].expand(band.numel(), d), x[band])
        dd[band == s + i] = torch.inf
        r2[i] = torch.kthvalue(dd, k).values
    return r2


def _typical_sq_radius(*r2s: NDArray[np.float64]) -> float:
    medians = [float(np.median(r[r > 0])) for r in r2s if np.any(r > 0)]
    return min(medians) if medians else 0.0


def _brute_memberships(
    real: NDArray[np.float64],
    fake: NDArray[np.float64],
    real_r2: NDArray[np.float64],
    fake_r2: NDArray[np.float64],
    chunk_rows: int | None,
    device: torch.device,
) -> Memberships:
    real_n2 = squared_norms(real)
    fake_n2 = squared_norms(fake)
    d = real.shape[1]
    bound32 = _gemm_error_factor(torch.float32, d) * (float(real_n2.max()) + float(fake_n2.max()))
    use32 = float32_matmul_is_ieee(device) and (
        bound32 <= _MAX_RELATIVE_BAND * _typical_sq_radius(real_r2, fake_r2)
    )
    real_t = torch.from_numpy(real).to(device)  # on the CPU: the same memory
    fake_t = torch.from_numpy(fake).to(device)
    # Rows are fakes, columns reals: the per-fake reductions (ball count, nearest real) run along
    # contiguous rows and the per-real ones are gathered from the few candidate pairs.
    dtype = torch.float32 if use32 else torch.float64
    g = _PairwiseSq(fake_t, real_t, fake_n2, real_n2, dtype, chunk_rows)
    if _on_host(device):
        return _host_memberships(g, real, fake, real_r2, fake_r2)
    return _device_memberships(g, real_t, fake_t, real_r2, fake_r2)


def _host_memberships(
    g: _PairwiseSq,
    real: NDArray[np.float64],
    fake: NDArray[np.float64],
    real_r2: NDArray[np.float64],
    fake_r2: NDArray[np.float64],
) -> Memberships:
    """Memberships from CPU blocks of `g` (fakes × reals), candidates found by numpy."""
    n_real, n_fake = real.shape[0], fake.shape[0]
    cand_real = np.empty((g.rows, g.width), dtype=bool)
    cand_fake = np.empty((g.rows, g.width), dtype=bool)
    hi_col = np.full(g.width, -np.inf, dtype=g.np_dtype)  # padding columns: never candidates

    balls_per_fake = np.zeros(n_fake, dtype=np.int64)
    covered = np.zeros(n_real, dtype=bool)
    recalled = np.zeros(n_real, dtype=bool)
    nearest = np.zeros(n_fake, dtype=np.intp)
    nearest_val = np.empty(g.rows, dtype=g.np_dtype)
    for s in range(0, n_fake, g.rows):
        e = min(n_fake, s + g.rows)
        tol = g.tol(s, e)
        hi_real = _upper(real_r2 + tol, g.np_dtype)
        hi_row = _upper(fake_r2[s:e] + tol, g.np_dtype)[:, None]
        best = nearest_val[: e - s]
        best.fill(np.inf)
        for t, (t0, t1) in enumerate(g.tiles):
            block = g.block(s, e, t).numpy()  # shares memory; numpy's compares beat torch's
            # Candidates: any pair whose GEMM value is within the error bound of either
            # radius. The strict decision is then made on exact distances for these few pairs.
            hi_col[: t1 - t0] = hi_real[t0:t1]
            hi_col[t1 - t0 :] = -np.inf
            m_real = cand_real[: e - s]
            m_fake = cand_fake[: e - s]
            np.less_equal(block, hi_col, out=m_real)
            np.less_equal(block, hi_row, out=m_fake)
            np.logical_or(m_real, m_fake, out=m_real)
            m_real[:, t1 - t0 :] = False  # padding columns
            # Nearest real by GEMM value: exact up to near-ties within the rounding band.
            arg = np.argmin(block[:, : t1 - t0], axis=1)
            val = block[np.arange(e - s), arg]
            better = val < best
            best[better] = val[better]
            nearest[s:e][better] = arg[better] + t0
            jj, ii = _sparse_nonzero(m_real)
            if jj.size == 0:
                continue
            i = ii + t0
            j = jj + s
            d2 = sqdist(fake[j], real[i])
            in_real = d2 < real_r2[i]
            in_fake = d2 < fake_r2[j]
            balls_per_fake[s:e] += np.bincount(jj[in_real], minlength=e - s)
            covered[i[in_real]] = True
            recalled[i[in_fake]] = True
    return Memberships(balls_per_fake, covered, recalled, nearest)


def _device_memberships(
    g: _PairwiseSq,
    real_t: torch.Tensor,
    fake_t: torch.Tensor,
    real_r2: NDArray[np.float64],
    fake_r2: NDArray[np.float64],
) -> Memberships:
    """:func:`_host_memberships` with every step on `g`'s device; only the results come back.

    `real_t` [N, d] and `fake_t` [M, d] are the float64 points on that device.
    """
    dev = g.device
    n_real, n_fake = real_t.shape[0], fake_t.shape[0]
    real_r2_t = torch.from_numpy(real_r2).to(dev)
    fake_r2_t = torch.from_numpy(fake_r2).to(dev)
    # Exact re-checks go in batches whose float64 temporaries (gathered rows, differences,
    # squares: ~4 × [p, d]) fit in one block's memory.
    max_pairs = max(_MIN_PAIRS_PER_BATCH, g.block_bytes // (32 * real_t.shape[1]))
    cand_real = torch.empty((g.rows, g.width), dtype=torch.bool, device=dev)
    cand_fake = torch.empty((g.rows, g.width), dtype=torch.bool, device=dev)
    hi_col = torch.full((g.width,), -torch.inf, dtype=g.dtype, device=dev)

    balls_per_fake = torch.zeros(n_fake, dtype=torch.int64, device=dev)
    covered = torch.zeros(n_real, dtype=torch.bool, device=dev)
    recalled = torch.zeros(n_real, dtype=torch.bool, device=dev)
    nearest = torch.zeros(n_fake, dtype=torch.int64, device=dev)
    for s in range(0, n_fake, g.rows):
        e = min(n_fake, s + g.rows)
        tol = g.tol(s, e)
        hi_real = _upper_torch(real_r2_t + tol, g.dtype)
        hi_row = _upper_torch(fake_r2_t[s:e] + tol, g.dtype)[:, None]
        best = torch.full((e - s,), torch.inf, dtype=g.dtype, device=dev)
        for t, (t0, t1) in enumerate(g.tiles):
            block = g.block(s, e, t)
            hi_col[: t1 - t0] = hi_real[t0:t1]
            hi_col[t1 - t0 :] = -torch.inf
            m_real = cand_real[: e - s]
            m_fake = cand_fake[: e - s]
            torch.le(block, hi_col, out=m_real)
            torch.le(block, hi_row, out=m_fake)
            torch.logical_or(m_real, m_fake, out=m_real)
            m_real[:, t1 - t0 :] = False
            # min(dim) returns the first minimum, as np.argmin, and an earlier tile keeps a tie.
            val, arg = block[:, : t1 - t0].min(dim=1)
            better = val < best
            best = torch.where(better, val, best)
            nearest[s:e] = torch.where(better, arg + t0, nearest[s:e])
            for pairs in _nonzero_batches(m_real, max_pairs):
                j = pairs[:, 0] + s
                i = pairs[:, 1] + t0
                d2 = sqdist_torch(fake_t[j], real_t[i])
                in_real = d2 < real_r2_t[i]
                in_fake = d2 < fake_r2_t[j]
                hit = j[in_real]
                balls_per_fake.index_add_(0, hit, torch.ones_like(hit))
                covered[i[in_real]] = True
                recalled[i[in_fake]] = True
    return Memberships(
        balls_per_fake.cpu().numpy(),
        covered.cpu().numpy(),
        recalled.cpu().numpy(),
        nearest.cpu().numpy().astype(np.intp),
    )


# ------------------------------------------------------------------------------- k-d tree (scipy)


def _workers(n_queries: int) -> int:
    """scipy's `workers` for a query of `n_queries` points: all cores for big queries, one for
    small ones, where starting the threads costs more than the query (a client's held-out
    split of a few dozen points took ~5 ms with threads, ~0.3 ms without)."""
    return -1 if n_queries >= _PARALLEL_QUERY_ROWS else 1


def _tree_kth_sqdist(x: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    n, _ = x.shape
    tree = cKDTree(x)
    _, idx = tree.query(x, k=k + 1, workers=_workers(len(x)))
    idx = np.asarray(idx, dtype=np.intp)
    # Recompute the tree's candidates exactly so radii and ball tests share one formula; the
    # tree's own distances differ from it only in the last bits (ties within rounding aside,
    # its k + 1 neighbours are the exact ones).
    cand = sqdist(np.repeat(x, k + 1, axis=0), x[idx.ravel()]).reshape(n, k + 1)
    cand[idx == np.arange(n)[:, None]] = np.inf
    return np.partition(cand, k - 1, axis=1)[:, k - 1]


def _ball_pairs(
    centres: NDArray[np.float64],
    r2: NDArray[np.float64],
    points: NDArray[np.float64],
    tree: cKDTree,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Pairs (centre c, point p) with exact d² < r²[c]; `tree` indexes `points`.

    The tree query is inclusive (``<=``) and its distances are not bit-identical to
    :func:`sqdist`, so it is run on a radius nudged outwards and then filtered exactly; a zero
    radius contains nothing under ``<`` and is not queried at all.
    """
    centre_idx: list[NDArray[np.intp]] = []
    point_idx: list[NDArray[np.intp]] = []
    live = np.flatnonzero(r2 > 0)
    for s in range(0, live.size, _TREE_QUERY_ROWS):
        c = live[s : s + _TREE_QUERY_ROWS]
        radius = np.sqrt(r2[c]) * (1.0 + 1e-9)
        found = tree.query_ball_point(
            centres[c], radius, workers=_workers(len(centres[c])), return_sorted=False
        )
        lengths = np.fromiter((len(f) for f in found), dtype=np.intp, count=len(found))
        flat = np.fromiter(
            itertools.chain.from_iterable(found), dtype=np.intp, count=int(lengths.sum())
        )
        ci = np.repeat(c, lengths)
        keep = sqdist(centres[ci], points[flat]) < r2[ci]
        centre_idx.append(ci[keep])
        point_idx.append(flat[keep])
    if not centre_idx:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(centre_idx), np.concatenate(point_idx)


def _tree_memberships(
    real: NDArray[np.float64],
    fake: NDArray[np.float64],
    real_r2: NDArray[np.float64],
    fake_r2: NDArray[np.float64],
) -> Memberships:
    n_real, n_fake = real.shape[0], fake.shape[0]
    real_tree = cKDTree(real)
    fake_tree = cKDTree(fake)
    ri, fj = _ball_pairs(real, real_r2, fake, fake_tree)  # fake fj inside real ball ri
    balls_per_fake = np.bincount(fj, minlength=n_fake).astype(np.int64)
    covered = np.zeros(n_real, dtype=bool)
    covered[ri] = True
    _, rec = _ball_pairs(fake, fake_r2, real, real_tree)  # real rec inside a fake ball
    recalled = np.zeros(n_real, dtype=bool)
    recalled[rec] = True
    _, nearest = real_tree.query(fake, k=1, workers=_workers(len(fake)))
    return Memberships(balls_per_fake, covered, recalled, np.asarray(nearest, dtype=np.intp))
