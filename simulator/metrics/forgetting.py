"""Who is forgotten: the one definition of a group's generated mass, of a forgotten group and of
the worst-served client, which every view of the project reads.

- **mass** of a group g: the share of the generated samples that lie strictly inside the k-NN
  ball (radius from the real set) of at least one of g's held-out points. A sample inside no
  real ball is *off-support* and is given to no group, so stray samples between the modes are
  never credited to the group whose point happens to be nearest.
- g is **forgotten** when its mass is below `FORGOTTEN_MASS_RATIO` (0.1) × its true share of
  the on-support samples: mass_g < 0.1 · share_g · on_support, share_g the share of held-out
  points in g and on_support the share of samples inside any real ball (precision). Measuring
  against the on-support samples keeps "forgotten" a statement about which groups the
  generator neglects, apart from how many samples it throws off the data (fidelity's
  question): a blurred generator that reaches every group with a third of its samples
  forgets none of them. Groups with fewer held-out points than `min_group_size` are never
  called forgotten (rare: nothing reliable can be said); a generator with no sample on the
  data at all forgets every group that is not rare.
- a group is **kept** when its coverage is ≥ `KEEP_COVERAGE` (0.3): the findings' rule. A group
  can be neither kept nor forgotten (generated, but off-centre or too narrow to cover).
- a client is **served** by the share of its held-out points that lie in groups not forgotten;
  the **worst-served client** has the smallest share (ties: the smaller client id).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from fedgan.simulator.metrics.neighbours import _ball_pairs, sqdist
from fedgan.simulator.metrics.prdc import TREE_MAX_DIM
from numpy.typing import NDArray
from scipy.spatial import cKDTree

FORGOTTEN_MASS_RATIO = 0.1
"""A group is forgotten when its generated mass is below this × its share of the on-support
samples."""

KEEP_COVERAGE = 0.3
"""A group is kept when its coverage is at least this (with ≥ 100 held-out points a coverage
of 0.3 is known to about ±0.05)."""

_BLOCK_ENTRIES = 2**22
"""Fake × real distance entries per block of the GEMM path (32 MiB of float64)."""


def kept(coverage: float) -> bool:
    """Whether a group with this coverage is kept (NaN: not kept)."""
    return bool(coverage >= KEEP_COVERAGE)


def ball_pairs(
    real: NDArray[np.floating], fake: NDArray[np.floating], real_radii: NDArray[np.floating]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Every (real point i, generated sample j) with j strictly inside i's k-NN ball.

    Computed once per evaluation; each grouping then reads it through `ball_hits`.

    Parameters
    ----------
    real : ndarray, shape [N, d]
        Held-out real points (features), the centres of the balls.
    fake : ndarray, shape [M, d]
        Generated points in the same units.
    real_radii : ndarray, shape [N]
        Each real point's k-NN radius (PRDC's `real_radii`).

    Returns
    -------
    (ndarray of intp, ndarray of intp)
        The pairs' real indices and sample indices, of equal length.
    """
    real64 = np.asarray(real, dtype=np.float64)
    fake64 = np.asarray(fake, dtype=np.float64)
    r2 = np.asarray(real_radii, dtype=np.float64) ** 2
    if real64.shape[1] <= TREE_MAX_DIM:
        # The exact pairs PRDC's density counts (strict <, one rounding of the distances).
        return _ball_pairs(real64, r2, fake64, cKDTree(fake64))
    r = torch.from_numpy(real64)
    r_sq = (r * r).sum(1)
    r2_t = torch.from_numpy(r2)[None, :]
    rows = max(1, _BLOCK_ENTRIES // max(len(real64), 1))
    ri, fj = [], []
    for s in range(0, len(fake64), rows):
        f = torch.from_numpy(fake64[s : s + rows])
        d2 = (f * f).sum(1)[:, None] + r_sq[None, :] - 2.0 * f @ r.T
        j, i = torch.nonzero(d2 < r2_t, as_tuple=True)
        ri.append(i.numpy())
        fj.append(j.numpy() + s)
    if not ri:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    return np.concatenate(ri).astype(np.intp), np.concatenate(fj).astype(np.intp)


def ball_hits(
    pairs: tuple[NDArray[np.intp], NDArray[np.intp]],
    codes: NDArray[np.integer],
    n_groups: int,
    n_fake: int,
) -> NDArray[np.bool_]:
    """Which groups' balls hold each generated sample.

    Parameters
    ----------
    pairs : (ndarray, ndarray)
        `ball_pairs` of the evaluation.
    codes : ndarray of int, shape [N]
        Each real point's group under one grouping, 0 … n_groups − 1.
    n_groups, n_fake : int

    Returns
    -------
    ndarray of bool, shape [n_fake, n_groups]
        [j, g]: sample j lies strictly inside the ball of at least one point of group g.
    """
    ri, fj = pairs
    hits = np.zeros((n_fake, n_groups), dtype=bool)
    hits[fj, np.asarray(codes, dtype=np.intp)[ri]] = True
    return hits


def coverage_against(
    reference: NDArray[np.floating],
    points: NDArray[np.floating],
    fake: NDArray[np.floating],
    k: int,
) -> NDArray[np.bool_]:
    """Coverage terms of points outside a reference set: point i is covered when its nearest
    generated sample lies strictly inside its k-NN ball, the radius taken among `reference`.

    This is how a client scores its own held-out points without recall's trap: radii from the
    pooled held-out set (thousands of points, the radii the global evaluation uses) and the
    global evaluation's samples — never radii or samples from its own few points, whose
    large balls let a handful of stray samples "reach" a forgotten group.

    Parameters
    ----------
    reference : ndarray, shape [N, d], N ≥ k
        The pooled held-out points (features).
    points : ndarray, shape [n, d]
        The points to score (not in `reference`).
    fake : ndarray, shape [M, d], M ≥ 1
        Generated points.
    k : int

    Returns
    -------
    ndarray of bool, shape [n]
    """
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64)
    fk = np.asarray(fake, dtype=np.float64)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    if len(ref) < k or len(fk) < 1:
        raise ValueError(f"need ≥ k={k} reference points and a sample, got {len(ref)}, {len(fk)}")
    if ref.shape[1] <= TREE_MAX_DIM:
        _, ref_idx = cKDTree(ref).query(pts, k=k)
        kth = np.asarray(ref_idx).reshape(len(pts), k)[:, -1]
        _, fake_idx = cKDTree(fk).query(pts, k=1)
        r2 = sqdist(pts, ref[kth])
        d2 = sqdist(pts, fk[np.asarray(fake_idx, dtype=np.intp)])
        return np.asarray(d2 < r2)
    p = torch.from_numpy(pts)
    r2_t = torch.cdist(p, torch.from_numpy(ref)).pow(2).kthvalue(k, dim=1).values
    d2_t = torch.cdist(p, torch.from_numpy(fk)).pow(2).min(dim=1).values
    return np.asarray((d2_t < r2_t).numpy())


def group_mass(hits: NDArray[np.bool_]) -> tuple[NDArray[np.float64], float]:
    """(mass [G], on-support share) from `ball_hits` [M, G]: the share of samples inside some
    ball of each group, and inside any real ball at all. A sample on a border of two groups
    counts for both."""
    if len(hits) == 0:
        return np.zeros(hits.shape[1]), 0.0
    return hits.mean(axis=0), float(hits.any(axis=1).mean())


def mass_ratios(
    mass: NDArray[np.floating], shares: NDArray[np.floating], on_support: float
) -> NDArray[np.float64]:
    """mass_g / (share_g · on_support) [G]: 1 when a group gets its share of the on-support
    samples, 0 when none; 0 for every group when no sample is on the data.

    >>> import numpy as np
    >>> mass_ratios(np.array([0.005, 0.25, 0.245]), np.array([0.1, 0.5, 0.4]), 0.5).round(3)
    array([0.1  , 1.   , 1.225])
    """
    mass = np.asarray(mass, dtype=np.float64)
    denom = np.asarray(shares, dtype=np.float64) * on_support
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, mass / np.where(denom > 0, denom, 1.0), 0.0)
    return np.asarray(out, dtype=np.float64)


def forgotten_groups(
    ratios: Mapping[Any, float], sizes: Mapping[Any, int], min_group_size: int
) -> list[Any]:
    """The groups forgotten under the project's one rule: mass ratio (`mass_ratios`) below
    `FORGOTTEN_MASS_RATIO`, among the groups with at least `min_group_size` held-out points.
    In the order of `ratios`. Group "3" is as empty as group "0" but has too few held-out
    points to be called forgotten:

    >>> forgotten_groups({"0": 0.0, "1": 0.05, "2": 1.2, "3": 0.0},
    ...                  {"0": 100, "1": 100, "2": 500, "3": 5}, min_group_size=20)
    ['0', '1']
    """
    return [
        g
        for g, r in ratios.items()
        if sizes.get(g, 0) >= min_group_size and not float(r) >= FORGOTTEN_MASS_RATIO
    ]


def served_share(group_n: Mapping[Any, float], forgotten: Sequence[Any]) -> float:
    """The share of a client's held-out points that lie in groups not forgotten (NaN for a
    client without held-out points). `group_n`: the client's points per group.

    The quickstart's client 0 holds out 80 points of each minority mode and 288 of the others;
    with both minority modes forgotten it is served 288 / 448:

    >>> served_share({"0": 80, "1": 80, "2-7": 288}, forgotten=["0", "1"])
    0.6428571428571429
    """
    total = float(sum(group_n.values()))
    if total <= 0:
        return float("nan")
    lost = {str(g) for g in forgotten}
    return float(sum(n for g, n in group_n.items() if str(g) not in lost)) / total


def worst_client(served: Mapping[Hashable, float]) -> Hashable | None:
    """The worst-served client: the smallest served share (ties: the smallest id; NaN, a
    client without held-out points, is never the worst). None when no client has a share.

    >>> worst_client({0: 0.64, 1: 1.0, 2: float("nan"), 3: 0.64})
    0
    >>> worst_client({}) is None
    True
    """
    valid = [(v, c) for c, v in served.items() if np.isfinite(v)]
    if not valid:
        return None
    return min(valid, key=lambda t: (t[0], _sort_key(t[1])))[1]


def _sort_key(c: Hashable) -> tuple[int, Any]:
    try:
        return (0, float(c))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(c))


Rule = Callable[[Mapping[Any, float], Mapping[Any, int], int], list[Any]]
"""The signature of the forgotten rule (`forgotten_groups`), as the registry holds it."""
