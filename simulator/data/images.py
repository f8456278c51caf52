"""The `images` dataset: the user's own image files (IDX, .npy/.npz, PNG/JPEG folders, CIFAR)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import fedgan.simulator.data.image_formats as fmt
import numpy as np
import pandas as pd
from fedgan.simulator.data.base import DataError, Dataset, check_int, check_n_samples
from fedgan.simulator.data.registry import DATASETS

CONSTANT_COLUMN = "all"
"""The one group column (every row 0) of images with neither labels nor attributes: a Dataset
needs at least one group column."""

SCALINGS = {
    "uint8": "x / 127.5 − 1 (0..255 → [−1, 1])",
    "unit": "2x − 1 (floats in [0, 1] → [−1, 1])",
    "signed": "x (floats already in [−1, 1])",
}
"""How stored pixel values become X in [−1, 1], by the kind `pixel_kind` finds."""


def _pair(name: str, value: object) -> tuple[int, int] | None:
    """An int s → (s, s); a list [h, w] → (h, w); None stays None. Both >= 1."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if len(value) != 2:
            raise DataError(f"{name} must be one integer or [height, width], got {value!r}", name)
        h, w = (check_int(f"{name} entry", v, minimum=1) for v in value)
        return h, w
    s = check_int(name, value, minimum=1)
    return s, s


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    names = [value] if isinstance(value, str) else list(value)
    if not names or not all(isinstance(c, str) for c in names):
        raise DataError(f"columns must be one or more column names, got {value!r}", "columns")
    if len(set(names)) != len(names):
        raise DataError(f"columns lists a column twice: {names}", "columns")
    return names


def pixel_kind(pixels: np.ndarray, where: str) -> str:
    """ "uint8", "unit" or "signed" (keys of `SCALINGS`) for pixel values as stored.

    uint8, and integers within 0..255, are bytes. Floats all within [0, 1] are read as [0, 1]
    (so a [−1, 1] array whose values happen all to be >= 0 is read as [0, 1]); else floats
    within [−1, 1] are kept. Anything else is refused.
    """
    if pixels.dtype == np.uint8:
        return "uint8"
    if pixels.size == 0:
        return "uint8" if pixels.dtype.kind in "ui" else "unit"
    lo, hi = float(pixels.min()), float(pixels.max())
    if pixels.dtype.kind in "ui":
        if lo >= 0 and hi <= 255:
            return "uint8"
        raise DataError(f"{where}: integer pixels must lie in 0..255, found {lo:g}..{hi:g}", "path")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"{where}: the pixels hold NaN or infinite values", "path")
    if lo >= 0.0 and hi <= 1.0:
        return "unit"
    if lo >= -1.0 and hi <= 1.0:
        return "signed"
    raise DataError(
        f"{where}: float pixels must lie in [0, 1] or [−1, 1], found [{lo:g}, {hi:g}]"
        + ("; for 0..255 values save uint8" if hi <= 255 and lo >= 0 else ""),
        "path",
    )


def to_unit_range(pixels: np.ndarray, kind: str) -> np.ndarray:
    """[n, C, H, W] pixels of `kind` → float32 [n, C·H·W] in [−1, 1], converted once (one
    float32 array; the arithmetic in place)."""
    n = pixels.shape[0]
    X = np.empty((n, int(np.prod(pixels.shape[1:]))), dtype=np.float32)
    X.reshape(pixels.shape)[...] = pixels
    if kind == "uint8":
        np.divide(X, np.float32(127.5), out=X)
        np.subtract(X, np.float32(1.0), out=X)
    elif kind == "unit":
        np.multiply(X, np.float32(2.0), out=X)
        np.subtract(X, np.float32(1.0), out=X)
    # Rounding can step a hair outside [−1, 1] (float64 input cast to float32): clamp.
    np.clip(X, -1.0, 1.0, out=X)
    return X


def images(
    n_samples: int | None = None,
    seed: int = 0,
    *,
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    attributes: str | os.PathLike[str] | None = None,
    columns: str | Sequence[str] | None = None,
    transpose: bool = False,
    crop: int | Sequence[int] | None = None,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    layout: Literal["NHWC", "NCHW"] | None = None,
    x_key: str = "x",
    y_key: str | None = "y",
) -> Dataset:
    """The user's images: X float32 [n, C·H·W] in [−1, 1], image_shape (C, H, W).

    The format is found from `path` (suffix, magic number, folder contents):

    - IDX (MNIST, Fashion-MNIST, EMNIST, KMNIST): `path` the images (`*-idx3-ubyte`, magic
      0x00000803, gzipped or not), `labels` the matching idx1 file (magic 0x00000801).
      EMNIST stores images transposed: `transpose: true` turns them upright. Labels are kept
      as stored (EMNIST `letters` runs 1..26).
    - .npy (the images) or .npz (images under `x_key`, optional labels under `y_key`): [N,H,W],
      [N,H,W,C] or [N,C,H,W] with C ∈ {1, 3}; `layout` (NHWC/NCHW) decides a shape where
      both axis 1 and the last could be channels. Pickled arrays are refused.
    - A folder of PNG/JPEG images with `attributes`: a CSV (a column of file names, relative to
      the folder, then attribute columns) or CelebA's list_attr_celeba.txt. Without
      `attributes`, every image in the folder (no groups), or one class per sub-folder (column
      "label", the sub-folders in sorted order numbered from 0). Decoded once into a cached
      uint8 array (`$FEDGAN_CACHE/images`, keyed by the files' names, sizes and times and by
      crop/size/channels).
    - CIFAR-10/100 python batches: a folder (its data_batch_* — the training split; the
      test_batch alone when there is none) or one batch file, read by a restricted unpickler
      that builds only bytes, lists and numeric arrays.

    Parameters
    ----------
    n_samples : int or None
        None: every image; a number: a seeded random subset of that many (kept in file order).
    path, labels, attributes : file paths
        As above; relative paths resolve against the scenario file.
    columns : column name(s), optional
        The group columns to keep, in this order (the first is the default group column);
        default: "label" then the attributes in file order.
    transpose : bool
        Swap height and width (EMNIST); `crop` and `size` are in the turned orientation.
    crop : int or [h, w], optional
        Centre crop (top = (H − h) // 2, left = (W − w) // 2), before `size`.
    size : int or [h, w], optional
        Resize to h×w with Pillow's bilinear filter (antialiased when shrinking).
    channels : 1 or 3, optional
        Grey (ITU-R 601-2 luma, as Pillow's "L") or colour (grey repeated); default: as stored
        (a folder: 3 if any image has colour).
    layout, x_key, y_key
        For .npy/.npz only, as above.

    Groups are int64: "label" for class labels; attributes under their own names, a column
    whose values are all −1 or 1 (CelebA) mapped to 0/1 (−1 → 0); string attributes coded
    0, 1, … in sorted order (`info["categories"]`). With neither labels nor attributes, one
    column "all" of zeros. Pixels: uint8 (and integers in 0..255) → x / 127.5 − 1; floats all
    in [0, 1] → 2x − 1; other floats in [−1, 1] kept; anything else is refused.
    `info` records the source, format, original and final shapes and the scaling.
    """
    n_req = check_n_samples(n_samples, None)
    if not isinstance(transpose, bool):
        raise DataError(f"transpose must be true or false, got {transpose!r}", "transpose")
    crop_hw, size_hw = _pair("crop", crop), _pair("size", size)
    if channels is not None and check_int("channels", channels) not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}", "channels")
    want_cols = _names(columns)
    p = Path(path).expanduser()
    kind = fmt.detect_format(p)
    where = repr(str(p))
    _check_options(kind, labels, attributes, layout, x_key, y_key)
    lab = Path(labels).expanduser() if labels is not None else None
    att = Path(attributes).expanduser() if attributes is not None else None
    info: dict[str, Any] = {"path": str(p), "format": kind}

    if kind == "folder":
        listing = fmt.list_folder(p, att)
        n_all = len(listing.names)
        col_all = listing.columns
        extra = dict(listing.info)
        files = [str(p)] + ([str(att)] if att is not None else [])
    else:
        if kind == "idx":
            raw = fmt.read_idx_images(p, lab)
        elif kind in ("npy", "npz"):
            raw = fmt.read_array_file(p, kind, x_key, y_key, layout)
        else:
            raw = fmt.read_cifar(p)
        n_all = raw.pixels.shape[0]
        col_all = raw.columns
        extra = dict(raw.info)
        files = raw.files
    if n_all == 0:
        raise DataError(f"{where}: holds no images", "path")
    group_cols = _select_columns(col_all, want_cols, n_all, where)
    rows: np.ndarray | None = None
    if n_req is not None and n_req != n_all:
        if n_req > n_all:
            raise DataError(f"n_samples={n_req} but {where} holds {n_all:,} images", "n_samples")
        rows = np.sort(np.random.default_rng(seed).choice(n_all, size=n_req, replace=False))

    if kind == "folder":
        # Decoding applies crop/size in the file's orientation: swap them when turning after.
        dc = crop_hw[::-1] if (transpose and crop_hw) else crop_hw
        ds_ = size_hw[::-1] if (transpose and size_hw) else size_hw
        pix, facts = fmt.decode_folder(listing, rows, dc, ds_, channels)
        extra.update(facts)  # cache_file, from_cache, original_sizes
        if transpose:
            pix = pix.transpose(0, 1, 3, 2)
        scale = pixel_kind(pix, where)
    else:
        full = raw.pixels
        info["original_shape"] = list(full.shape[1:])
        scale = pixel_kind(full, where)  # on every image: a subset must not change the reading
        pix = full if rows is None else full[rows]
        if transpose:
            pix = pix.transpose(0, 1, 3, 2)
        if crop_hw is not None:
            pix = fmt.center_crop(pix, crop_hw, where)
        if channels is not None:
            pix = fmt.to_channels(pix, channels, where)
        if size_hw is not None:
            pix = fmt.resize(pix, size_hw)

    X = to_unit_range(pix, scale)
    shape = (int(pix.shape[1]), int(pix.shape[2]), int(pix.shape[3]))
    if rows is not None:
        group_cols = {k: v[rows] for k, v in group_cols.items()}
    info.update(
        {
            "files": files,
            "n_images_in_file": n_all,
            "image_shape": list(shape),
            "pixel_scaling": SCALINGS[scale],
            "transpose": transpose,
            "crop": list(crop_hw) if crop_hw else None,
            "size": list(size_hw) if size_hw else None,
            "channels": shape[0],
            "group_columns": list(group_cols),
            **extra,
        }
    )
    return Dataset(
        name="images",
        X=X,
        groups=pd.DataFrame({k: v.astype(np.int64, copy=False) for k, v in group_cols.items()}),
        image_shape=shape,
        info=info,
    )


def _check_options(
    kind: str,
    labels: object,
    attributes: object,
    layout: object,
    x_key: object,
    y_key: object,
) -> None:
    """Refuse an option that does not apply to the format found (rather than ignore it)."""
    names = {
        "idx": "IDX images",
        "npy": "a .npy array",
        "npz": "a .npz file",
        "folder": "a folder of images",
        "cifar": "CIFAR batches",
    }
    what = names[kind]
    if labels is not None and kind != "idx":
        raise DataError(
            f"labels (an IDX idx1 file) applies to IDX images; path is {what}"
            + ("; a .npz holds its labels under y_key" if kind == "npz" else ""),
            "labels",
        )
    if attributes is not None and kind != "folder":
        raise DataError(
            f"attributes (a CSV or list_attr_celeba.txt) applies to a folder of images; path "
            f"is {what}",
            "attributes",
        )
    if layout is not None and kind not in ("npy", "npz"):
        raise DataError(f"layout applies to .npy/.npz arrays; path is {what}", "layout")
    if layout not in (None, "NHWC", "NCHW"):
        raise DataError(f"layout must be NHWC or NCHW, got {layout!r}", "layout")
    if kind != "npz" and (x_key != "x" or y_key != "y"):
        raise DataError(f"x_key and y_key apply to .npz files; path is {what}", "x_key")
    for k, v in (("x_key", x_key), ("y_key", y_key)):
        if not (isinstance(v, str) or (k == "y_key" and v is None)):
            raise DataError(f"{k} must be an array name, got {v!r}", k)


def _select_columns(
    available: dict[str, np.ndarray], wanted: list[str] | None, n: int, where: str
) -> dict[str, np.ndarray]:
    """The group columns to keep (`wanted`, in its order; default all), or the constant
    column of `n` zeros when the files give none."""
    if wanted is None:
        return dict(available) if available else {CONSTANT_COLUMN: np.zeros(n, dtype=np.int64)}
    absent = [c for c in wanted if c not in available]
    if absent:
        raise DataError(
            f"{where}: no group column(s) {absent}; available: {list(available) or 'none'}",
            "columns",
        )
    return {c: available[c] for c in wanted}


DATASETS.add("images", images)
