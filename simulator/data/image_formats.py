"""Readers of the user's image files (IDX, .npy/.npz, PNG/JPEG folders, CIFAR) and the array
transforms of the `images` dataset; pixels come back in the file's own units as [N, C, H, W]."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import math
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fedgan.simulator.data.base import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files a folder is read for (case-insensitive)."""

FOLDER_CACHE_VERSION = "images-folder-v1"
"""Part of a decoded folder's cache key: bump when decoding changes (crop, resize, convert)."""

LUMA = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B: what Pillow's convert("L") uses, so a colour array and
a colour folder turn grey alike."""

_GZIP_MAGIC = b"\x1f\x8b"
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"

# IDX data type codes (the third magic byte) → big-endian numpy dtypes (LeCun's spec).
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_IDX_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass
class RawImages:
    """Images as read from the user's files, before subsetting and scaling.

    Attributes
    ----------
    pixels : ndarray [N, C, H, W]
        uint8 (0..255) or the file's own float/integer values; may be a read-only view or a
        memory map.
    columns : dict of str → int64 [N]
        Labels and attributes in file order; the first is the default group column.
    format : str
        "idx", "npy", "npz", "folder" or "cifar".
    files : list of str
        The files read.
    info : dict
        Further facts for `Dataset.info` (e.g. the names behind integer codes).
    """

    pixels: np.ndarray
    columns: dict[str, np.ndarray]
    format: str
    files: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Format detection


def detect_format(path: Path) -> str:
    """The format of `path` from its suffix, magic number or folder contents.

    Returns "idx", "npy", "npz", "cifar" or "folder"; DataError when it is none of them.
    """
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if any(n.startswith("data_batch_") for n in names) or "test_batch" in names:
            return "cifar"
        if {"train", "meta"} <= names and (path / "train").is_file():  # CIFAR-100's folder
            return "cifar"
        return "folder"
    if not path.exists():
        raise DataError(f"{str(path)!r}: no such file or folder", "path")
    if not path.is_file():
        raise DataError(f"{str(path)!r}: not a file or folder", "path")
    head = _head(path, 8)
    suffix = path.suffix.lower()
    if suffix == ".npy" or head.startswith(_NPY_MAGIC):
        return "npy"
    if suffix == ".npz" or head.startswith(_ZIP_MAGIC):
        return "npz"
    if suffix in IMAGE_SUFFIXES:
        raise DataError(
            f"{str(path)!r} is one image; give the folder that holds the images", "path"
        )
    if head.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(4)
        except (OSError, EOFError) as exc:
            raise DataError(f"{str(path)!r}: unreadable gzip file: {exc}", "path") from None
    if len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_TYPES:
        return "idx"
    if head[:1] == b"\x80":  # pickle protocol >= 2: a CIFAR python batch
        return "cifar"
    raise DataError(
        f"{str(path)!r}: unrecognised image data (first bytes {head[:4].hex()}); expected an "
        "IDX file (MNIST-style *-idx3-ubyte, optionally .gz), a .npy/.npz array file, a CIFAR "
        "python batch, or a folder of PNG/JPEG images",
        "path",
    )


def _head(path: Path, n: int) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError as exc:
        raise DataError(f"{str(path)!r}: cannot read: {exc}", "path") from None


# ----------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, EMNIST, KMNIST)


def _read_bytes(path: Path, key: str) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic number."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{str(path)!r}: cannot read: {exc}", key) from None
    if data.startswith(_GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except EOFError:
            raise DataError(
                f"{str(path)!r}: truncated gzip file (the compressed stream ends early)", key
            ) from None
        except (OSError, zipfile.BadZipFile) as exc:  # BadGzipFile is an OSError
            raise DataError(f"{str(path)!r}: corrupt gzip file: {exc}", key) from None
    return data


def read_idx(path: Path, ndim: int, key: str) -> np.ndarray:
    """An IDX array with `ndim` dimensions (3: images N×H×W, 1: labels N), gzip or not.

    The header is two zero bytes, a type byte (0x08 unsigned byte, …), a dimension count, then
    each dimension as a big-endian uint32; the data follow, big-endian, row-major. Returns a
    read-only array in the native byte order of the stored type.
    """
    data = _read_bytes(path, key)
    what = "images (N×H×W)" if ndim == 3 else f"{ndim}-dimensional data"
    if ndim == 1:
        what = "labels (N)"
    expected = f"0x{0x0800 + ndim:08X} (IDX, unsigned bytes, {ndim} dimension(s): {what})"
    if len(data) < 4:
        raise DataError(
            f"{str(path)!r}: truncated IDX file ({len(data)} bytes); expected the magic number "
            f"{expected}",
            key,
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(
            f"{str(path)!r}: not an IDX file: magic number 0x{magic:08X}, expected {expected}",
            key,
        )
    if data[3] != ndim:
        hint = ""
        if ndim == 3 and data[3] == 1:
            hint = "; this looks like a labels file (idx1): give it as `labels`, the idx3 as `path`"
        elif ndim == 1 and data[3] == 3:
            hint = (
                "; this looks like an images file (idx3): give it as `path`, the idx1 as `labels`"
            )
        raise DataError(
            f"{str(path)!r}: IDX magic number 0x{magic:08X} has {data[3]} dimension(s), "
            f"expected {expected}{hint}",
            key,
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{str(path)!r}: truncated IDX file: the header needs {header} bytes, "
            f"the file has {len(data)}",
            key,
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    need = math.prod(dims) * dtype.itemsize
    have = len(data) - header
    shape = "×".join(map(str, dims))
    if have != need:
        problem = "truncated" if have < need else f"{have - need} bytes too long"
        raise DataError(
            f"{str(path)!r}: IDX file {problem}: its header says {shape} "
            f"{_IDX_TYPE_NAMES[data[2]]} values = {need:,} bytes of data, the file has {have:,}",
            key,
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx_images(path: Path, labels: Path | None) -> RawImages:
    """IDX images [N, H, W] (→ [N, 1, H, W]) and, given, the idx1 labels as column "label"."""
    x = read_idx(path, 3, "path")
    files = [str(path)]
    columns: dict[str, np.ndarray] = {}
    if labels is not None:
        y = read_idx(labels, 1, "labels")
        if y.shape[0] != x.shape[0]:
            raise DataError(
                f"{str(labels)!r} holds {y.shape[0]:,} labels but {str(path)!r} holds "
                f"{x.shape[0]:,} images; expected one label per image",
                "labels",
            )
        columns["label"] = integer_column(y, "label", str(labels), "labels")
        files.append(str(labels))
    return RawImages(x[:, None], columns, "idx", files)


# ----------------------------------------------------------------------------------------------
# .npy / .npz


def read_array_file(
    path: Path, fmt: str, x_key: str, y_key: str | None, layout: str | None
) -> RawImages:
    """A .npy array of images, or a .npz with images under `x_key` and optional labels under
    `y_key` (column "label"). Pickled (object) arrays are refused: loading one runs code."""
    columns: dict[str, np.ndarray] = {}
    where = repr(str(path))
    try:
        if fmt == "npy":
            # A memory map: a seeded subset of a large array reads only its rows.
            x = np.load(path, mmap_mode="r", allow_pickle=False)
            if not isinstance(x, np.ndarray):
                raise DataError(f"{where}: not a single .npy array", "path")
        else:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if x_key not in keys:
                    raise DataError(
                        f"{where}: no array {x_key!r} (the images); the file has {keys}; name "
                        "the images' array with x_key (and the labels' with y_key)",
                        "x_key" if x_key != "x" else "path",
                    )
                x = z[x_key]
                y = z[y_key] if y_key is not None and y_key in keys else None
                if y is not None:
                    assert y_key is not None
                    y = np.asarray(y)
                    if y.ndim == 2 and y.shape[1] == 1:
                        y = y[:, 0]
                    if y.ndim != 1:
                        raise DataError(
                            f"{where}: labels {y_key!r} must have shape [N], got {y.shape}",
                            "path",
                        )
                    if y.shape[0] != x.shape[0]:
                        raise DataError(
                            f"{where}: {y.shape[0]:,} labels ({y_key!r}) but {x.shape[0]:,} "
                            f"images ({x_key!r}); expected one label per image",
                            "path",
                        )
                    columns["label"] = integer_column(y, "label", str(path), "path")
    except DataError:
        raise
    except ValueError as exc:
        if any(w in str(exc) for w in ("allow_pickle", "Object arrays", "Python objects")):
            raise DataError(
                f"{where}: holds pickled Python objects, which are not loaded (unpickling runs "
                "code); save plain numeric arrays",
                "path",
            ) from None
        if "mmap length" in str(exc) or "cannot reshape" in str(exc):
            raise DataError(
                f"{where}: truncated {fmt} file (its header promises more data than it holds)",
                "path",
            ) from None
        raise DataError(f"{where}: unreadable {fmt} file: {exc}", "path") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(
            f"{where}: unreadable {fmt} file: {type(exc).__name__}: {exc}", "path"
        ) from None
    return RawImages(to_nchw(x, where, layout), columns, fmt, [str(path)])


def to_nchw(x: np.ndarray, where: str, layout: str | None) -> np.ndarray:
    """[N,H,W] → [N,1,H,W]; [N,H,W,C] or [N,C,H,W] (C ∈ {1, 3}) → [N,C,H,W] (a view).

    A 4-D shape is read as channels-last when only its last axis can be a channel count,
    channels-first when only axis 1 can; `layout` ("NHWC"/"NCHW") decides when both can.
    """
    if x.dtype.kind not in "uif":
        raise DataError(
            f"{where}: images must be numbers (uint8 or float), got dtype {x.dtype}", "path"
        )
    if x.ndim == 3:
        if layout is not None:
            raise DataError(
                f"{where}: layout {layout!r} applies to 4-D arrays; this one is [N,H,W] {x.shape}",
                "layout",
            )
        return x[:, None]
    if x.ndim != 4:
        raise DataError(
            f"{where}: images must have shape [N,H,W], [N,H,W,C] or [N,C,H,W], got {x.shape}",
            "path",
        )
    last, first = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
    if layout is None:
        if last and first:
            raise DataError(
                f"{where}: shape {x.shape} is ambiguous: both axis 1 and the last axis could "
                "hold the channels (1 or 3); say which with layout: NHWC or layout: NCHW",
                "layout",
            )
        if not (last or first):
            raise DataError(
                f"{where}: shape {x.shape} has no channel axis of size 1 or 3 (axis 1 or the "
                "last); expected [N,H,W], [N,H,W,C] or [N,C,H,W] with C = 1 or 3",
                "path",
            )
        layout = "NHWC" if last else "NCHW"
    if layout == "NHWC":
        if not last:
            raise DataError(
                f"{where}: layout NHWC but the last axis of {x.shape} is not 1 or 3", "layout"
            )
        return x.transpose(0, 3, 1, 2)
    if not first:
        raise DataError(f"{where}: layout NCHW but axis 1 of {x.shape} is not 1 or 3", "layout")
    return x


# ----------------------------------------------------------------------------------------------
# CIFAR python batches


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global the restricted unpickler does not build."""


def _numpy_global(module: str, name: str) -> Any:
    import importlib

    for mod in (module.replace("numpy.core", "numpy._core", 1), module):
        try:
            with warnings.catch_warnings():  # numpy.core is a deprecated alias of numpy._core
                warnings.simplefilter("ignore", DeprecationWarning)
                return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise RefusedGlobal(f"numpy has no {module}.{name}")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes use it, with latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise RefusedGlobal(f"refused _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


# (module, name) → how to get it. Exactly what a pickled dict of bytes, lists and numeric numpy
# arrays needs: numpy's array/scalar reconstructors, ndarray and dtype (numpy 1 names
# numpy.core.*, numpy 2 numpy._core.*), and bytes as protocol 2 writes them.
_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1,
    **{
        (mod, name): functools.partial(_numpy_global, mod, name)
        for mod, name in (
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        )
    },
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only bytes, str, numbers, lists, tuples, dicts and numeric numpy
    arrays: `find_class` refuses every other global, so a pickle cannot call os.system or any
    other function while loading."""

    def find_class(self, module: str, name: str) -> Any:
        get = _ALLOWED_GLOBALS.get((module, name))
        if get is None:
            raise RefusedGlobal(f"refused to load global {module}.{name}")
        return get()


def load_restricted_pickle(path: Path) -> Any:
    """The object pickled in `path`, built by `RestrictedUnpickler` with encoding="bytes"
    (Python 2's str → bytes, as CIFAR's batches need)."""
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"{str(path)!r}: not loaded: {exc} (a CIFAR batch holds only bytes, lists and "
            "numpy arrays; nothing else is built from a pickle)",
            "path",
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        OSError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as exc:
        raise DataError(
            f"{str(path)!r}: unreadable pickle (truncated or not a CIFAR batch): "
            f"{type(exc).__name__}: {exc}",
            "path",
        ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    """d[key] whether the pickle wrote the key as bytes (Python 2) or str (Python 3)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def cifar_batch_files(path: Path) -> list[Path]:
    """The batches to read: `path` itself, or in a folder every data_batch_* (the training
    split; test_batch alone when there is none), or CIFAR-100's `train`."""
    if path.is_file():
        return [path]
    batches = sorted(
        (p for p in path.iterdir() if p.name.startswith("data_batch_") and p.is_file()),
        key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)],
    )
    if batches:
        return batches
    for name in ("test_batch", "train"):
        if (path / name).is_file():
            return [path / name]
    raise DataError(f"{str(path)!r}: no CIFAR batches (data_batch_*, test_batch)", "path")


def read_cifar(path: Path) -> RawImages:
    """CIFAR-10/100 python batches: rows of 3·s·s uint8 (the R plane, then G, then B, each s×s
    row-major; s = 32 for CIFAR) → [N, 3, s, s]; labels → "label" (CIFAR-100: fine labels, and
    "coarse_label")."""
    chunks: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {}
    files = cifar_batch_files(path)
    for f in files:
        batch = load_restricted_pickle(f)
        where = repr(str(f))
        if not isinstance(batch, dict):
            raise DataError(
                f"{where}: expected a CIFAR batch (a dict with 'data' and 'labels'), got "
                f"{type(batch).__name__}",
                "path",
            )
        data = _get(batch, "data")
        if data is None:
            raise DataError(f"{where}: the batch has no 'data' entry", "path")
        try:
            x = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{where}: 'data' is not an array: {exc}", "path") from None
        if x.dtype.kind not in "ui" or x.ndim != 2:
            raise DataError(
                f"{where}: 'data' must be rows of uint8 pixels [N, 3·H·W], got dtype {x.dtype} "
                f"shape {x.shape}",
                "path",
            )
        side = math.isqrt(x.shape[1] // 3)
        if 3 * side * side != x.shape[1] or side == 0:
            raise DataError(
                f"{where}: rows of {x.shape[1]} pixels are not 3 square colour planes "
                "(3·32·32 = 3072 for CIFAR)",
                "path",
            )
        if chunks and chunks[0].shape[1:] != (3, side, side):
            raise DataError(
                f"{where}: {side}×{side} images, but {str(files[0])!r} holds "
                f"{chunks[0].shape[2]}×{chunks[0].shape[3]}",
                "path",
            )
        if x.dtype != np.uint8:
            if x.size and (x.min() < 0 or x.max() > 255):
                raise DataError(f"{where}: 'data' values outside 0..255", "path")
            x = x.astype(np.uint8)
        chunks.append(x.reshape(-1, 3, side, side))
        fine = _get(batch, "labels")
        found = {
            "label": fine if fine is not None else _get(batch, "fine_labels"),
            "coarse_label": _get(batch, "coarse_labels"),
        }
        for name, value in found.items():
            if value is None:
                continue
            y = np.asarray(value)
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise DataError(
                    f"{where}: {y.shape[0] if y.ndim else 0:,} labels for {x.shape[0]:,} images; "
                    "expected one label per image",
                    "path",
                )
            cols.setdefault(name, []).append(integer_column(y, name, str(f), "path"))
    n_chunks = len(chunks)
    columns = {k: np.concatenate(v) for k, v in cols.items() if len(v) == n_chunks}
    pixels = chunks[0] if n_chunks == 1 else np.concatenate(chunks)
    return RawImages(pixels, columns, "cifar", [str(f) for f in files])


# ----------------------------------------------------------------------------------------------
# Label columns


def integer_column(values: np.ndarray, name: str, where: str, key: str) -> np.ndarray:
    """int64 [N] from integer (or integral float) labels; DataError naming the file otherwise."""
    v = np.asarray(values)
    if v.dtype.kind in "b":
        return v.astype(np.int64)
    if v.dtype.kind in "ui":
        return v.astype(np.int64)
    if v.dtype.kind == "f" and np.all(np.isfinite(v)) and np.all(v == np.round(v)):
        return v.astype(np.int64)
    raise DataError(
        f"{where!r}: {name} must be integers, got dtype {v.dtype}"
        + (f" (e.g. {v.ravel()[:3].tolist()})" if v.size else ""),
        key,
    )


def pm1_to_01(v: np.ndarray) -> np.ndarray:
    """A column whose values are all −1 or 1 (CelebA's attributes) as 0/1; others unchanged."""
    if v.size and np.all((v == -1) | (v == 1)):
        return (v > 0).astype(np.int64)
    return v


# ----------------------------------------------------------------------------------------------
# Folders of PNG/JPEG images


@dataclass
class FolderListing:
    """The images of a folder and their groups, before decoding.

    Attributes
    ----------
    root : Path
    names : list of str
        Image paths relative to `root`, one per row.
    columns : dict of str → int64 [N]
    info : dict
    """

    root: Path
    names: list[str]
    columns: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def list_folder(root: Path, attributes: Path | None) -> FolderListing:
    """The images of `root` and their group columns.

    With `attributes` (a CSV, or CelebA's list_attr_celeba.txt), its rows name the images (paths
    relative to `root`) and give the columns; images it does not name are left out. Without,
    every image in `root` (sorted by name) with no columns; or, when `root` holds no image but
    sub-folders of them, one class per sub-folder: column "label" = the sub-folder's index in
    sorted order, `info["label_names"]` the sub-folders.
    """
    if attributes is not None:
        listed, columns, info = read_attributes(attributes)
        missing = [n for n in listed if not (root / n).is_file()]
        if missing:
            raise DataError(
                f"{str(attributes)!r} names {len(missing):,} image(s) not in folder "
                f"{str(root)!r}, e.g. {missing[:3]}",
                "attributes",
            )
        return FolderListing(root, listed, columns, info)
    top = sorted(p.name for p in root.iterdir() if _is_image(p))
    if top:
        return FolderListing(root, top, {})
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names: list[str] = []
    labels: list[int] = []
    kept: list[str] = []
    for c in classes:
        files = sorted(p.name for p in (root / c).iterdir() if _is_image(p))
        if files:
            labels.extend([len(kept)] * len(files))
            kept.append(c)
            names.extend(f"{c}/{f}" for f in files)
    if not names:
        raise DataError(
            f"{str(root)!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder or its "
            "sub-folders, and no CIFAR batches",
            "path",
        )
    return FolderListing(
        root, names, {"label": np.asarray(labels, dtype=np.int64)}, {"label_names": kept}
    )


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """(image names, int64 columns, info) from a CSV (by suffix) or CelebA's text format.

    CelebA: line 1 the number of images, line 2 the attribute names, then per line an image
    name and one value per attribute, separated by runs of spaces. CSV: the first column of
    strings names the images; every other column is an attribute (integers; strings are coded
    0, 1, … in sorted order, the names in `info["categories"]`). In either, a column whose
    values are all −1 or 1 becomes 0/1 (CelebA's "absent"/"present").
    """
    if not path.is_file():
        raise DataError(f"attributes file {str(path)!r} not found", "attributes")
    if path.suffix.lower() == ".csv":
        return _read_attribute_csv(path)
    return _read_celeba_txt(path)


def _read_celeba_txt(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    where = repr(str(path))
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot read: {exc}", "attributes") from None
    expected = (
        "expected CelebA's format: a count line, a line of attribute names, then per line an "
        "image name and one ±1 value per attribute (or a .csv)"
    )
    if len(lines) < 2:
        raise DataError(f"{where}: {len(lines)} line(s); {expected}", "attributes")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(
            f"{where}: line 1 is {lines[0][:40]!r}, not a count; {expected}", "attributes"
        ) from None
    attr_names = lines[1].split()
    if not attr_names or len(set(attr_names)) != len(attr_names):
        raise DataError(f"{where}: line 2 must name distinct attributes; {expected}", "attributes")
    rows = [(i, line.split()) for i, line in enumerate(lines[2:], start=3) if line.strip()]
    if len(rows) != count:
        raise DataError(
            f"{where}: line 1 says {count:,} images but {len(rows):,} rows follow", "attributes"
        )
    width = len(attr_names) + 1
    for i, fields in rows:
        if len(fields) != width:
            raise DataError(
                f"{where}: line {i} has {len(fields)} fields, expected {width} (an image name "
                f"and {len(attr_names)} values)",
                "attributes",
            )
    names = [f[0] for _, f in rows]
    try:
        values = np.array([f[1:] for _, f in rows], dtype=np.int64).reshape(
            len(rows), len(attr_names)
        )
    except ValueError:
        bad = next(i for i, f in rows if not all(re.fullmatch(r"[+-]?\d+", v) for v in f[1:]))
        raise DataError(f"{where}: line {bad} has a non-integer value", "attributes") from None
    _no_duplicates(names, where)
    columns = {a: pm1_to_01(values[:, j]) for j, a in enumerate(attr_names)}
    return names, columns, {}


def _read_attribute_csv(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    import pandas as pd
    from pandas.api import types as ptypes

    where = repr(str(path))
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # parser errors have many types; report the file
        raise DataError(
            f"{where}: cannot read: {type(exc).__name__}: {exc}", "attributes"
        ) from None
    if len(df) == 0:
        raise DataError(f"{where}: the attribute table is empty", "attributes")
    df.columns = pd.Index([str(c) for c in df.columns])
    name_col = next((c for c in df.columns if not ptypes.is_numeric_dtype(df[c])), None)
    if name_col is None:
        raise DataError(
            f"{where}: no column of image file names (expected a column of strings such as "
            "image_id, then attribute columns)",
            "attributes",
        )
    names = [str(v) for v in df[name_col]]
    _no_duplicates(names, where)
    columns: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    for c in df.columns:
        if c == name_col:
            continue
        s = df[c]
        if s.isna().any():
            raise DataError(
                f"{where}: attribute {c!r} has missing values in {int(s.isna().sum())} rows",
                "attributes",
            )
        if ptypes.is_numeric_dtype(s) or ptypes.is_bool_dtype(s):
            columns[c] = pm1_to_01(integer_column(s.to_numpy(), c, str(path), "attributes"))
        else:
            cats = sorted({str(v) for v in s})
            code = {v: i for i, v in enumerate(cats)}
            columns[c] = np.array([code[str(v)] for v in s], dtype=np.int64)
            categories[c] = cats
    if not columns:
        raise DataError(f"{where}: no attribute columns besides {name_col!r}", "attributes")
    return names, columns, ({"categories": categories} if categories else {})


def _no_duplicates(names: list[str], where: str) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise DataError(f"{where}: image {dup!r} is listed twice", "attributes")


def folder_cache_key(
    listing: FolderListing,
    crop: tuple[int, int] | None,
    size: tuple[int, int] | None,
    channels: int | None,
) -> str:
    """A hash of the listed files' names, sizes and modification times and the decoding
    options: any change to an image or an option gives another cache file."""
    h = hashlib.sha256()
    h.update(repr((FOLDER_CACHE_VERSION, crop, size, channels)).encode())
    for n in listing.names:
        st = (listing.root / n).stat()
        h.update(f"\0{n}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def images_cache_dir() -> Path:
    """Where decoded folders are cached: `$FEDGAN_CACHE/images` (default ~/.cache/fedgan/images),
    under the digit classifier's cache folder (`digit_classifier.cache_dir`, which is not
    imported: that module imports torch, which loading images must not)."""
    env = os.environ.get("FEDGAN_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "fedgan"
    return base / "images"


def decode_folder(
    listing: FolderListing,
    rows: np.ndarray | None,
    crop: tuple[int, int] | None,
    size: tuple[int, int] | None,
    channels: int | None,
    cache: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The listed images as uint8 [N, C, H, W] (or only `rows`, int64 [m], in that order).

    Each image is centre-cropped to `crop` (h, w), resized to `size` (h, w) with Pillow's
    bilinear filter, and converted to `channels` (1: Pillow's "L", 3: "RGB"; None: 3 when
    any image has colour, else 1). All rows are decoded once and cached as an .npz under
    `images_cache_dir()` keyed by `folder_cache_key`; a request for a few rows (a dry run)
    with no cache yet decodes only those. Returns the pixels and facts for `info`.
    """
    key = folder_cache_key(listing, crop, size, channels)
    cache_file = images_cache_dir() / f"folder-{key}.npz"
    facts: dict[str, Any] = {"cache_file": str(cache_file)}
    if cache and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                names, pixels, sizes = z["names"], z["pixels"], z["sizes"]
            if names.tolist() == listing.names and pixels.ndim == 4:
                facts["from_cache"] = True
                facts["original_sizes"] = sizes.tolist()
                return (pixels if rows is None else pixels[rows]), facts
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged or foreign file: decode again and replace it
    few = rows is not None and 4 * rows.size < len(listing.names)
    names = [listing.names[i] for i in rows] if (few and rows is not None) else listing.names
    pixels, sizes = _decode(listing.root, names, listing.names, crop, size, channels)
    facts["from_cache"] = False
    facts["original_sizes"] = sizes
    if few:
        return pixels, facts
    if cache:
        _write_cache(cache_file, pixels, listing.names, sizes)
    return (pixels if rows is None else pixels[rows]), facts


def _write_cache(path: Path, pixels: np.ndarray, names: list[str], sizes: list[list[int]]) -> None:
    """Write atomically (a temp file renamed into place), so a crash or a second process never
    leaves half a cache file; a read-only cache folder only costs the next run a decode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, pixels=pixels, names=np.array(names, dtype=str), sizes=np.array(sizes))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        warnings.warn(f"decoded images not cached in {str(path)!r}: {exc}", stacklevel=3)


def _decode(
    root: Path,
    names: Sequence[str],
    every: Sequence[str],
    crop: tuple[int, int] | None,
    size: tuple[int, int] | None,
    channels: int | None,
) -> tuple[np.ndarray, list[list[int]]]:
    """Decode `names` (relative to `root`) into uint8 [N, C, H, W]; also the distinct original
    (width, height) sizes of `every` (the whole listing, `names` among them). A header pass
    over `every` first (cheap: Pillow reads no pixels) refuses unreadable headers and ragged
    sizes and finds the channel count, so a few rows decode as they would among all."""
    from PIL import Image, UnidentifiedImageError

    modes: list[str] = []
    first: tuple[str, tuple[int, int]] | None = None
    out_hw: tuple[int, int] | None = size
    sizes: dict[tuple[int, int], None] = {}
    for n in every:
        f = root / n
        try:
            with Image.open(f) as im:
                mode, wh = im.mode, im.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{str(f)!r}: unreadable image: {exc}", "path") from None
        modes.append(mode)
        sizes[wh] = None
        w, h = wh
        if crop is not None and (crop[0] > h or crop[1] > w):
            raise DataError(
                f"{str(f)!r} is {w}×{h} (width×height), smaller than crop {crop[1]}×{crop[0]}",
                "crop",
            )
        hw = crop if crop is not None else (h, w)
        if first is None:
            first = (n, hw)
            out_hw = size if size is not None else hw
        elif size is None and hw != first[1]:
            raise DataError(
                f"images of different sizes: {str(root / first[0])!r} is "
                f"{first[1][1]}×{first[1][0]}, {str(f)!r} is {hw[1]}×{hw[0]} (width×height"
                + (", after the crop" if crop is not None else "")
                + "); give size: to resize them all",
                "size",
            )
    if channels is None:
        channels = 1 if all(m in _GREY_MODES for m in modes) else 3
    assert out_hw is not None
    out = np.empty((len(names), out_hw[0], out_hw[1], channels), dtype=np.uint8)
    pil_mode = "L" if channels == 1 else "RGB"
    for i, n in enumerate(names):
        f = root / n
        try:
            with Image.open(f) as im:
                im.load()
                img: Image.Image = im
                if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    # 16-bit grey: keep the top byte (convert("L") would clip at 255).
                    arr16 = np.asarray(img, dtype=np.uint32)
                    img = Image.fromarray((arr16 >> 8).clip(0, 255).astype(np.uint8), "L")
                if crop is not None:
                    w, h = img.size
                    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
                    img = img.crop((left, top, left + crop[1], top + crop[0]))
                if size is not None and img.size != (size[1], size[0]):
                    if img.mode not in ("L", "RGB"):
                        img = img.convert("RGB" if img.mode not in _GREY_MODES else "L")
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                if img.mode != pil_mode:
                    img = img.convert(pil_mode)
                arr = np.asarray(img, dtype=np.uint8)
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{str(f)!r}: unreadable image: {exc}", "path") from None
        out[i] = arr.reshape(out_hw[0], out_hw[1], channels)
    return out.transpose(0, 3, 1, 2), [list(s) for s in sizes]


# ----------------------------------------------------------------------------------------------
# Array transforms ([N, C, H, W], any numeric dtype → float32 where they compute)


def center_crop(x: np.ndarray, hw: tuple[int, int], where: str) -> np.ndarray:
    """The centre h×w window of [N, C, H, W] images (top = (H − h) // 2, left = (W − w) // 2,
    as for folders); a view."""
    h, w = hw
    H, W = x.shape[2], x.shape[3]
    if h > H or w > W:
        raise DataError(f"{where}: crop {h}×{w} is larger than the {H}×{W} images", "crop")
    top, left = (H - h) // 2, (W - w) // 2
    return x[:, :, top : top + h, left : left + w]


def resize(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """[N, C, H, W] → float32 [N, C, h, w] with Pillow's bilinear filter (pixel centres
    aligned, antialiased when shrinking), one plane at a time in float ("F") mode: values stay
    within each plane's range (the filter's weights are non-negative and sum to 1)."""
    from PIL import Image

    n, c = x.shape[:2]
    h, w = hw
    out = np.empty((n, c, h, w), dtype=np.float32)
    if (x.shape[2], x.shape[3]) == (h, w):
        out[...] = x
        return out
    for i in range(n):
        for j in range(c):
            plane = np.ascontiguousarray(x[i, j], dtype=np.float32)
            img = Image.fromarray(plane)  # float32 2-D → mode "F"
            out[i, j] = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR))
    return out


def to_channels(x: np.ndarray, channels: int, where: str) -> np.ndarray:
    """[N, C, H, W] with C ∈ {1, 3} → `channels` ∈ {1, 3}: grey repeated into R, G, B, or
    colour to grey by the ITU-R 601-2 luma weights (float32)."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return np.repeat(x, 3, axis=1)
    if c == 3 and channels == 1:
        w = np.asarray(LUMA, dtype=np.float32)
        return np.einsum("nchw,c->nhw", x.astype(np.float32, copy=False), w)[:, None]
    raise DataError(f"{where}: cannot turn {c} channels into {channels}", "channels")


__all__ = [
    "IMAGE_SUFFIXES",
    "FolderListing",
    "RawImages",
    "RestrictedUnpickler",
    "center_crop",
    "decode_folder",
    "detect_format",
    "images_cache_dir",
    "integer_column",
    "list_folder",
    "load_restricted_pickle",
    "read_array_file",
    "read_attributes",
    "read_cifar",
    "read_idx",
    "read_idx_images",
    "resize",
    "to_channels",
    "to_nchw",
]
