"""The `stacked` dataset: k labelled images as channels (Stacked MNIST: 3 digits, 1,000 modes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from fedgan.simulator.data.base import DataError, Dataset, check_int, check_n_samples
from fedgan.simulator.data.registry import DATASETS

MAX_MODES = 2**62
"""The mode id Σ lᵢ·L^(k−1−i) must fit an int64."""


def stack_images(
    X: np.ndarray,
    y: np.ndarray,
    image_shape: tuple[int, int, int],
    n: int,
    k: int,
    seed: int,
    column_prefix: str,
) -> tuple[np.ndarray, pd.DataFrame, tuple[int, int, int], dict[str, Any]]:
    """n samples of k images of (X [m, C0·H·W], labels y [m]) stacked as channels.

    Each channel's label is uniform over the L distinct labels (so the L^k label tuples are
    equally likely), then its image uniform among the images of that label.

    Returns
    -------
    X : float32 [n, k·C0·H·W]
        Channel-major: channel block i (C0 planes) is the i-th image, so image_shape is
        (k·C0, H, W).
    groups : DataFrame
        "mode" = Σ lᵢ·L^(k−1−i) with lᵢ the i-th label's index in sorted order (0..L−1), then
        one column per channel, `{column_prefix}{i}`, holding the label as in `y`.
    image_shape : (k·C0, H, W)
    stacked : dict
        {"k", "n_labels", "base_channels", "columns", "labels"}: how to label a generated
        sample per channel (`labels` [L] sorted: index → label value).
    """
    values = np.unique(y)  # sorted
    L = int(values.size)
    if L**k > MAX_MODES:
        raise DataError(f"{L} labels stacked {k} deep give {L}^{k} modes, too many for int64", "k")
    pools = [np.flatnonzero(y == v) for v in values]
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, L, size=(n, k))
    idx = np.empty((n, k), dtype=np.int64)
    for c, pool in enumerate(pools):
        hit = lab == c
        idx[hit] = pool[rng.integers(0, pool.size, size=int(hit.sum()))]
    # [n, k, C0·H·W] → [n, k·C0·H·W]: image i's planes are channels i·C0 .. (i+1)·C0 − 1.
    out = X[idx].reshape(n, k * X.shape[1])
    mode = np.zeros(n, dtype=np.int64)
    for i in range(k):
        mode = mode * L + lab[:, i]
    names = [f"{column_prefix}{i}" for i in range(k)]
    cols: dict[str, np.ndarray] = {"mode": mode}
    for i, name in enumerate(names):
        cols[name] = values[lab[:, i]]
    c0, h, w = image_shape
    stacked = {
        "k": k,
        "n_labels": L,
        "base_channels": c0,
        "columns": names,
        "labels": values.tolist(),
    }
    return out, pd.DataFrame(cols), (k * c0, h, w), stacked


def stacked(
    n_samples: int | None = 10000,
    seed: int = 0,
    base: str = "digits",
    base_params: Mapping[str, Any] | None = None,
    k: int = 3,
    label: str | None = None,
) -> Dataset:
    """k images of the labelled image dataset `base` stacked as channels.

    X float32 [n, k·C0·H·W], image_shape (k·C0, H, W) for base images (C0, H, W). Each
    channel's label is uniform over the base's L labels, then its image uniform among that
    label's images: the L^k label tuples ("modes") are equally likely (3 MNIST digits: 1,000).

    Parameters
    ----------
    n_samples : int or None
        Stacked samples drawn (with replacement from the base's images); None: 10,000.
    base : str
        The base dataset's name (a registered name or plug-in spec); it must have images.
    base_params : mapping, optional
        The base's parameters (e.g. {path: ..., labels: ...} for `images`, {size: 28} for
        `digits`). Its file paths are taken as given: a relative one is relative to the
        current directory, not to the scenario file.
    k : int
        Images per sample (channels blocks), >= 1.
    label : str, optional
        The base's label column; default "label" when the base has one, else its first group
        column ("class" for `digits`).

    Groups: "mode" = Σ lᵢ·L^(k−1−i) (lᵢ: the i-th label's index in sorted order), then
    "label0", "label1", … (the labels as the base gives them). `info["stacked"]` is
    {"k", "n_labels", "base_channels", "columns", "labels"}: how the feature space labels a
    generated sample per channel.
    """
    from fedgan.simulator.data.registry import load_dataset
    from fedgan.simulator.registry import RegistryError

    n = check_n_samples(n_samples, 10000)
    assert n is not None
    kk = check_int("k", k, minimum=1)
    if not isinstance(base, str) or not base:
        raise DataError(f"base must be a dataset name, got {base!r}", "base")
    if base_params is not None and not isinstance(base_params, Mapping):
        raise DataError(f"base_params must be a mapping, got {base_params!r}", "base_params")
    if label is not None and not isinstance(label, str):
        raise DataError(f"label must be a column name, got {label!r}", "label")
    try:
        ds = load_dataset(base, None, seed, dict(base_params or {}))
    except RegistryError as exc:
        raise DataError(f"base: {exc}", "base") from exc
    except DataError as exc:
        raise DataError(f"base_params: {exc}", "base_params") from exc
    if ds.image_shape is None:
        raise DataError(f"base dataset {base!r} has no images (no image_shape)", "base")
    columns = list(map(str, ds.groups.columns))
    col = label if label is not None else ("label" if "label" in columns else columns[0])
    if col not in columns:
        raise DataError(
            f"base dataset {base!r} has no group column {col!r}; available: {columns}", "label"
        )
    y = ds.groups[col].to_numpy()
    X, groups, shape, info_stacked = stack_images(ds.X, y, ds.image_shape, n, kk, seed, "label")
    return Dataset(
        name="stacked",
        X=X,
        groups=groups,
        image_shape=shape,
        info={
            "base": base,
            "base_params": dict(base_params or {}),
            "base_label": col,
            "base_info": ds.info,
            "n_modes": info_stacked["n_labels"] ** kk,
            "stacked": info_stacked,
        },
    )


DATASETS.add("stacked", stacked)
