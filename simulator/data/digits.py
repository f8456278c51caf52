"""8×8 digit images (scikit-learn's bundled set, offline) and the 1000-mode stacked digits."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from fedgan.simulator.data.base import (
    DataError,
    Dataset,
    allocate_counts,
    check_int,
    check_n_samples,
    normalize_weights,
)
from fedgan.simulator.data.registry import DATASETS
from fedgan.simulator.data.stacked import stack_images

IMAGE_SHAPE = (1, 8, 8)
STACKED_SHAPE = (3, 8, 8)
N_CLASSES = 10
SIDE = 8


def _classes(classes: Sequence[int] | None) -> list[int]:
    if classes is None:
        return list(range(N_CLASSES))
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence | np.ndarray):
        raise DataError(f"classes must be a list of digits 0..9, got {classes!r}")
    out = [check_int("classes entry", c) for c in classes]
    if not out:
        raise DataError("classes must list at least one digit 0..9, got []")
    bad = [c for c in out if not 0 <= c < N_CLASSES]
    if bad:
        raise DataError(f"classes {bad} out of range; digits are 0..9")
    if len(set(out)) != len(out):
        raise DataError(f"classes has repeated digits: {out}")
    return out


def _max_n(avail: np.ndarray, w: np.ndarray) -> int:
    """Largest n whose largest-remainder counts for weights w fit the available counts."""
    pos = w > 0
    n = int(np.floor(np.min(avail[pos] / w[pos]) + 1e-9))
    # Rounding can push one class a point over its stock; step down until it fits (≤ K steps).
    while n > 0 and np.any(allocate_counts(n, w) > avail):
        n -= 1
    return n


def digits(
    n_samples: int | None = None,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    size: int = SIDE,
) -> Dataset:
    """scikit-learn's 1,797 8×8 digits; X float32 [n, size²] in [−1, 1], image_shape
    (1, size, size).

    Parameters
    ----------
    n_samples : int or None
        None = as many as exist (for the chosen classes and weights).
    classes : list of int, optional
        Keep only these digits.
    weights : list of float, optional
        Per-class weights, one per entry of `classes` (normalized). Per-class counts are
        largest-remainder roundings of n·w, so a minority class has an exact size. Default:
        the classes' natural frequencies (a stratified subsample).
    size : int
        Side of the images in pixels: the 8×8 originals upsampled to size×size with Pillow's
        bilinear filter (pixel centres aligned), so networks for 28×28 or 32×32 images can be
        measured on them. 8 (default) gives the originals unchanged.

    The group column "class" holds the digit.
    """
    n_req = check_n_samples(n_samples, None)
    cls = _classes(classes)
    side = check_int("size", size, minimum=1)
    X_all, y_all = _digit_arrays(side)
    pools = [np.flatnonzero(y_all == c) for c in cls]
    avail = np.array([p.size for p in pools], dtype=np.int64)
    if weights is None:
        w = avail / avail.sum()
        # With natural weights n·w_k ≤ avail_k always holds, so only the total can run out.
        n = int(avail.sum()) if n_req is None else n_req
        if n > avail.sum():
            raise DataError(
                f"n_samples={n} but only {int(avail.sum())} digit images exist for classes {cls}"
            )
    else:
        w = normalize_weights("weights", weights, len(cls))
        n_max = _max_n(avail, w)
        n = n_max if n_req is None else n_req
        if n > n_max:
            raise DataError(
                f"n_samples={n} with weights {np.round(w, 4).tolist()} needs more images than "
                f"exist (per class {dict(zip(cls, avail.tolist(), strict=True))}); at most "
                f"{n_max} samples fit these weights"
            )
    counts = allocate_counts(n, w)
    rng = np.random.default_rng(seed)
    idx = np.concatenate(
        [rng.choice(p, size=int(c), replace=False) for p, c in zip(pools, counts, strict=True)]
    )
    idx = idx[rng.permutation(idx.size)]
    return Dataset(
        name="digits",
        X=X_all[idx],
        groups=pd.DataFrame({"class": y_all[idx]}),
        image_shape=(1, side, side),
        info={
            "source": "sklearn.datasets.load_digits",
            "classes": cls,
            "class_counts": dict(zip(cls, counts.tolist(), strict=True)),
            "size": side,
        },
    )


def stacked_digits(n_samples: int | None = 10000, seed: int = 0) -> Dataset:
    """Three random 8×8 digits stacked as channels; X float32 [n, 192], image_shape (3, 8, 8).

    The `stacked` construction (`stacked.stack_images`) over all 1,797 digits: each channel's
    digit is uniform on 0..9 (then a uniform image of that digit), so the 1000 modes
    100·d0 + 10·d1 + d2 are equally likely. Groups: "mode", "digit0", "digit1", "digit2";
    `info["stacked"]` says how to label generated samples per channel.
    """
    n = check_n_samples(n_samples, 10000)
    assert n is not None
    X_all, y_all = _digit_arrays(SIDE)
    X, groups, shape, info_stacked = stack_images(X_all, y_all, IMAGE_SHAPE, n, 3, seed, "digit")
    return Dataset(
        name="stacked_digits",
        X=X,
        groups=groups.astype(np.int64),
        image_shape=shape,
        info={
            "source": "sklearn.datasets.load_digits",
            "n_modes": N_CLASSES**3,
            "stacked": info_stacked,
        },
    )


DATASETS.add("digits", digits)
DATASETS.add("stacked_digits", stacked_digits)


@functools.lru_cache(maxsize=4)
def _digit_arrays(side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (`digit_arrays.load_digit_arrays`) at side×side, read-only:
    X float32 [1797, side²] in [−1, 1], y int64 [1797]. Imported on use: scikit-learn takes a
    second to import, which a scenario on other data never needs."""
    from fedgan.simulator.data.digit_arrays import load_digit_arrays

    X, y = load_digit_arrays()
    if side == SIDE:
        return X, y
    from fedgan.simulator.data.image_formats import resize

    # Bilinear weights are non-negative and sum to 1: the result stays in [−1, 1].
    big = resize(X.reshape(-1, 1, SIDE, SIDE), (side, side)).reshape(len(X), side * side)
    big.setflags(write=False)
    return big, y
