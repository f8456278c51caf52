"""Fréchet distance between Gaussian fits of two feature sets (FID formula, Heusel et al. 2017)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from fedgan.simulator.metrics.validation import as_features, check_same_dim
from numpy.typing import ArrayLike, NDArray


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, *, eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance between the Gaussians fitted to two feature sets.

    d² = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^{1/2}), with sample means and unbiased
    (n − 1) sample covariances; in squared feature units (FID when the features are
    Inception pool features).

    Parameters
    ----------
    feats_a : array_like, shape [n, f]
        n ≥ 2 samples.
    feats_b : array_like, shape [m, f]
        m ≥ 2 samples.
    eps : float, default 1e-6
        Diagonal offset added to both covariances, only if the square root of their product
        is not finite (singular covariances, e.g. fewer samples than features).

    Returns
    -------
    float
        The squared distance d² (≥ 0 up to rounding).

    Raises
    ------
    ValueError
        If the inputs are not finite 2-D arrays with the same f and ≥ 2 rows, or if
        (Σa Σb)^{1/2} has a non-negligible imaginary part (a numerical failure).
    """
    a = as_features(feats_a, "feats_a")
    b = as_features(feats_b, "feats_b")
    check_same_dim(a, b, "feats_a", "feats_b")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = _sqrtm_product(cov_a, cov_b, eps)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def _sqrtm_product(
    cov_a: NDArray[np.float64], cov_b: NDArray[np.float64], eps: float
) -> NDArray[np.float64]:
    """(Σa Σb)^{1/2}, real part, with the usual guards against numerical failure."""
    with warnings.catch_warnings():
        # A singular product (e.g. features that are constant, like dead ReLU units) is
        # expected: it is handled just below, so scipy's warning says nothing new.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = np.asarray(scipy.linalg.sqrtm(cov_a @ cov_b))
    if not np.isfinite(covmean).all():
        # Singular product: a small ridge makes the square root well defined.
        offset = eps * np.eye(cov_a.shape[0])
        covmean = np.asarray(scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset)))
    if np.iscomplexobj(covmean):
        # Σa Σb is similar to a PSD matrix, so its root is real in exact arithmetic; rounding
        # can leave tiny imaginary parts, which are dropped. Large ones mean a real failure.
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ValueError(f"sqrtm(Σa Σb) has an imaginary component of {imag:.3g}")
        covmean = covmean.real
    return covmean.astype(np.float64)
