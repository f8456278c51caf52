"""Precision, recall, density and coverage of a generated sample against a real one.

Precision and recall follow Kynkäänniemi et al. 2019 ("Improved precision and recall metric for
assessing generative models"), density and coverage Naeem et al. 2020 ("Reliable fidelity and
diversity metrics for generative models"); the definitions are exactly those of the reference
implementation ``prdc.compute_prdc`` (strict ``<`` everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from fedgan.simulator.devices import resolve_device
from fedgan.simulator.metrics.neighbours import Method, kth_neighbour_sqdist, memberships
from fedgan.simulator.metrics.validation import as_features, check_k, check_same_dim
from numpy.typing import ArrayLike, NDArray

# At or below this dimension a k-d tree prunes well; above it, brute force GEMM wins.
TREE_MAX_DIM = 8


PER_SAMPLE = (
    "precision_per_fake",
    "density_per_fake",
    "recall_per_real",
    "coverage_per_real",
    "real_radii",
    "fake_radii",
)
"""The per-sample arrays of a `PRDC` result (two back ends agree when all of these are equal)."""


@dataclass(frozen=True, eq=False)
class PRDC:
    """Totals and per-sample terms of precision, recall, density and coverage.

    Attributes
    ----------
    precision, recall, density, coverage : float
        The four totals; density may exceed 1.
    precision_per_fake : ndarray of bool, shape [M]
        Fake j lies strictly inside at least one real ball; its mean is `precision`.
    density_per_fake : ndarray of float, shape [M]
        Number of real balls strictly containing fake j, divided by k; its mean is `density`.
    recall_per_real : ndarray of bool, shape [N]
        Real i lies strictly inside at least one fake ball; its mean is `recall`.
    coverage_per_real : ndarray of bool, shape [N]
        Real i's own ball strictly contains its nearest fake; its mean is `coverage`.
    real_radii : ndarray, shape [N]
        Distance from each real point to its k-th nearest real neighbour (self excluded),
        in feature units.
    fake_radii : ndarray, shape [M]
        The same within the fake set.
    nearest_real_index : ndarray of intp, shape [M]
        Index into the real set of each fake's nearest real point (to attribute fakes to
        groups). With the brute method, near-ties within float32 rounding may pick either.
    k : int
        Neighbour count used for the radii.
    method : {"brute", "tree"}
        Back end that computed the result.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    precision_per_fake: NDArray[np.bool_]
    density_per_fake: NDArray[np.float64]
    recall_per_real: NDArray[np.bool_]
    coverage_per_real: NDArray[np.bool_]
    real_radii: NDArray[np.float64]
    fake_radii: NDArray[np.float64]
    nearest_real_index: NDArray[np.intp]
    k: int
    method: Method

    def as_dict(self) -> dict[str, float]:
        """The four totals as plain floats, e.g. for logging."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "density": self.density,
            "coverage": self.coverage,
        }


def prdc(
    real: ArrayLike,
    fake: ArrayLike,
    k: int = 5,
    *,
    method: Literal["auto", "brute", "tree"] = "auto",
    chunk_rows: int | None = None,
    device: str | torch.device = "cpu",
) -> PRDC:
    """Precision, recall, density and coverage of `fake` against `real` with k-NN balls.

    Definitions (r_i: distance from a point to its k-th nearest neighbour in its own set, self
    excluded; B(x, r): the open ball, membership by strict ``<``)::

        precision = 1/M Σ_j 1[∃i: fake_j ∈ B(real_i, r_i)]
        recall    = 1/N Σ_i 1[∃j: real_i ∈ B(fake_j, r_j)]
        density   = 1/(kM) Σ_j Σ_i 1[fake_j ∈ B(real_i, r_i)]        (not capped at 1)
        coverage  = 1/N Σ_i 1[min_j ‖real_i − fake_j‖ < r_i]

    Degenerate sets: a point with at least k exact copies in its own set has radius 0, and under
    the strict ``<`` a zero ball contains nothing, not even the copies. So a fully collapsed
    generator (all M > k fakes identical) has fake radii 0 and recall exactly 0. Its coverage
    is the share of real balls that contain the collapse point: small, and exactly 0 (with
    precision and density) when that point lies off the real manifold. A collapsed real set
    gives precision = density = coverage = 0. Nothing is divided by a radius or a count that
    can be 0, so no case returns NaN.

    Parameters
    ----------
    real : array_like, shape [N, d]
        Real features, any units; N > k.
    fake : array_like, shape [M, d]
        Generated features in the same units; M > k.
    k : int, default 5
        Neighbour count for the radii.
    method : {"auto", "brute", "tree"}, default "auto"
        "tree" (scipy k-d tree) for d ≤ 8 on the CPU, else "brute" (chunked torch GEMM). Both
        give the same result; memory is O((N + M)·d + chunk) either way, never N × M.
    chunk_rows : int, optional
        Rows per GEMM block for "brute" (default: as many as fit an 8 MiB block on the CPU,
        1 GiB but at most 1/8 of the free memory on a GPU).
    device : str or torch.device, default "cpu"
        "cpu", "cuda", "cuda:<index>" or "auto" (a GPU if there is one). On a GPU "brute" runs
        its GEMM, top-k, candidate masks, exact float64 re-checks and counts there, with the
        same result as on the CPU (near-ties of `nearest_real_index` aside); "tree" is CPU-only.

    Returns
    -------
    PRDC

    Raises
    ------
    ValueError
        If an input is not a finite 2-D array, the dimensions differ, k is not a positive
        integer, N ≤ k or M ≤ k, `method` is unknown, `device` is unknown or unavailable, or
        `method` is "tree" on a GPU.

    Examples
    --------
    A sample far off the data scores 0 on all four. A copy of the real sample scores 1 on all
    four: each real ball holds its own copy and the copies of the k − 1 nearer neighbours
    strictly inside (the k-th lies on the border), so density is k / k.

    >>> import numpy as np
    >>> real = np.random.default_rng(0).normal(size=(500, 2))
    >>> r = prdc(real, real + 100.0, k=5)
    >>> r.precision, r.recall, r.density, r.coverage
    (0.0, 0.0, 0.0, 0.0)
    >>> r = prdc(real, real.copy(), k=5)
    >>> r.precision, r.recall, r.density, r.coverage
    (1.0, 1.0, 1.0, 1.0)
    """
    real_x = as_features(real, "real")
    fake_x = as_features(fake, "fake")
    check_same_dim(real_x, fake_x, "real", "fake")
    k = check_k(k)
    for name, x in (("real", real_x), ("fake", fake_x)):
        if x.shape[0] <= k:
            raise ValueError(f"{name} needs more than k={k} samples, got {x.shape[0]}")
    if method not in ("auto", "brute", "tree"):
        raise ValueError(f"method must be 'auto', 'brute' or 'tree', got {method!r}")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or int(chunk_rows) < 1):
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    dev = resolve_device(device)
    # The k-d tree is CPU-only: on a GPU brute force wins at any dimension.
    auto: Method = "tree" if real_x.shape[1] <= TREE_MAX_DIM and dev.type == "cpu" else "brute"
    used: Method = auto if method == "auto" else method

    # Distances are translation invariant; centring on the real mean shrinks the norms that
    # bound the GEMM rounding error (and so the number of pairs to re-check exactly).
    centre = real_x.mean(axis=0)
    real_c = real_x - centre
    fake_c = fake_x - centre

    real_r2 = kth_neighbour_sqdist(real_c, k, used, chunk_rows, dev)
    fake_r2 = kth_neighbour_sqdist(fake_c, k, used, chunk_rows, dev)
    m = memberships(real_c, fake_c, real_r2, fake_r2, used, chunk_rows, dev)

    precision_per_fake = m.real_balls_per_fake > 0
    density_per_fake = m.real_balls_per_fake / float(k)
    return PRDC(
        precision=float(precision_per_fake.mean()),
        recall=float(m.real_recalled.mean()),
        # (1/k) · mean(count), the order of the reference: equal to mean(density_per_fake) up to
        # rounding in the last bit.
        density=float((1.0 / k) * m.real_balls_per_fake.mean()),
        coverage=float(m.real_covered.mean()),
        precision_per_fake=precision_per_fake,
        density_per_fake=density_per_fake,
        recall_per_real=m.real_recalled,
        coverage_per_real=m.real_covered,
        real_radii=np.sqrt(real_r2),
        fake_radii=np.sqrt(fake_r2),
        nearest_real_index=m.nearest_real,
        k=k,
        method=used,
    )


def expected_coverage(n_real: int, n_fake: int, k: int) -> float:
    """Expected coverage when real and fake are drawn from the same distribution.

    1 − Π_{i=1..k} (N − i)/(M + N − i) (Naeem et al. 2020, eq. 6): the chance that, among the
    k nearest real neighbours of a real point pooled with M exchangeable fakes, at least one
    fake falls inside the ball. About 1 − 2^−k for M = N (0.875 at k=3, 0.969 at k=5).

    Parameters
    ----------
    n_real, n_fake : int
        Sample sizes N and M (N > k, M ≥ 1).
    k : int
        Neighbour count.

    Examples
    --------
    >>> round(expected_coverage(1000, 1000, 5), 3)  # about 1 − 2^−5 for M = N
    0.969
    >>> round(expected_coverage(1000, 1000, 3), 3)
    0.875
    """
    k = check_k(k)
    if n_real <= k or n_fake < 1:
        raise ValueError(f"need n_real > k and n_fake ≥ 1, got {n_real}, {n_fake}, k={k}")
    i = np.arange(1, k + 1, dtype=np.float64)
    return float(1.0 - np.prod((n_real - i) / (n_fake + n_real - i)))
