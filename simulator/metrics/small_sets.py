"""Recall and coverage terms of PRDC for many small, independent point sets at once.

Each federated client judges the generator it receives on its own held-out split: a few dozen
points. Run one by one, a thousand such PRDC calls cost more than the batched GAN math of the
round. Here all clients' sets are padded into one tensor and decided together, on any device,
with the very same definitions and rounding as `simulator.metrics.prdc` (squared distances from
`sqdist_torch`, which rounds bit for bit as the CPU path; strict `<`; duplicates count as
neighbours at distance 0), so the per-point answers are identical (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from fedgan.simulator.metrics.neighbours import sqdist_torch
from numpy.typing import NDArray

_CHUNK_BYTES = 256 * 2**20
"""Bound on the pairwise-distance work per chunk of sets (float64 entries × their d)."""


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances [c, n, m] between the rows of a [c, n, d] and b [c, m, d]."""
    c, n, d = a.shape
    m = b.shape[1]
    left = a[:, :, None, :].expand(c, n, m, d).reshape(-1, d)
    right = b[:, None, :, :].expand(c, n, m, d).reshape(-1, d)
    return sqdist_torch(left, right).reshape(c, n, m)


def _kth_sq_radius(d2: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance [c, n] of each point to its k-th nearest other point of its own set."""
    n = d2.shape[1]
    masked = d2.masked_fill(~valid[:, None, :], float("inf"))
    eye = torch.eye(n, dtype=torch.bool, device=d2.device)
    masked = masked.masked_fill(eye, float("inf"))  # self is not its own neighbour
    return masked.kthvalue(k, dim=2).values


def recall_coverage_terms(
    reals: Sequence[NDArray[np.floating]],
    fakes: Sequence[NDArray[np.floating]],
    k: int,
    device: torch.device | str = "cpu",
) -> list[tuple[NDArray[np.bool_], NDArray[np.bool_]]]:
    """For each set c: (recall_per_real, coverage_per_real) of fakes[c] against reals[c].

    reals[c] [n_c, d] and fakes[c] [m_c, d], both more than k points. As in `prdc`: real i is
    recalled when it lies strictly inside some fake's k-NN ball (radius from the fakes), and
    covered when its own k-NN ball (radius from the reals) strictly contains its nearest fake.
    """
    for c, (r, f) in enumerate(zip(reals, fakes, strict=True)):
        if len(r) <= k or len(f) <= k:
            raise ValueError(f"set {c}: needs more than k={k} real and fake points")
    out: list[tuple[NDArray[np.bool_], NDArray[np.bool_]]] = []
    if not reals:
        return out
    d = reals[0].shape[1]
    width = max(max(len(r), len(f)) for r, f in zip(reals, fakes, strict=True))
    per_set = 3 * width * width * d * 8 * 3  # three distance blocks, their expanded operands
    step = max(1, _CHUNK_BYTES // per_set)
    for s in range(0, len(reals), step):
        out += _chunk(reals[s : s + step], fakes[s : s + step], k, device)
    return out


def _pad(sets: Sequence[NDArray[np.floating]], device: torch.device | str) -> torch.Tensor:
    n = max(len(x) for x in sets)
    buf = np.zeros((len(sets), n, sets[0].shape[1]), dtype=np.float64)
    for i, x in enumerate(sets):
        buf[i, : len(x)] = x
    return torch.from_numpy(buf).to(device)


def _chunk(
    reals: Sequence[NDArray[np.floating]],
    fakes: Sequence[NDArray[np.floating]],
    k: int,
    device: torch.device | str,
) -> list[tuple[NDArray[np.bool_], NDArray[np.bool_]]]:
    real, fake = _pad(reals, device), _pad(fakes, device)
    n_real = torch.tensor([len(r) for r in reals], device=real.device)
    n_fake = torch.tensor([len(f) for f in fakes], device=real.device)
    real_ok = torch.arange(real.shape[1], device=real.device)[None, :] < n_real[:, None]
    fake_ok = torch.arange(fake.shape[1], device=real.device)[None, :] < n_fake[:, None]
    real_r2 = _kth_sq_radius(_pairwise(real, real), real_ok, k)  # [c, n]
    fake_r2 = _kth_sq_radius(_pairwise(fake, fake), fake_ok, k)  # [c, m]
    cross = _pairwise(real, fake)  # [c, n, m]
    inside = (cross < fake_r2[:, None, :]) & fake_ok[:, None, :]
    recalled = inside.any(dim=2)
    nearest = cross.masked_fill(~fake_ok[:, None, :], float("inf")).min(dim=2).values
    covered = nearest < real_r2
    rec, cov = recalled.cpu().numpy(), covered.cpu().numpy()
    return [(rec[i, : len(r)], cov[i, : len(r)]) for i, r in enumerate(reals)]
