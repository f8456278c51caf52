"""The space image metrics run in: a small classifier trained on the real training split, or a
TorchScript feature extractor the user supplies (`evaluation.features`).

PRDC, Fréchet and per-group metrics on raw pixels measure pixel distances, which say little
about whether a generated image shows the right digit or face. As the bundled 8×8 digits
always have (`simulator.data.digit_classifier`, unchanged), other image data are compared in
the embedding of a classifier: a small conv net trained on the fly on the real training split
(seeded, one CPU thread, a bounded number of steps), cached on disk by a hash of its training
data, its architecture and recipe, so the server, the clients and reruns load the same
weights. Its
accuracy on a held-out tenth of the training split is reported (run folder `env.json`) with a
warning below `MIN_ACCURACY`.

What it learns:
- a class column — `label`, else a first group column that is not 0/1 ("class" of the
  digits): the classes (softmax); generated samples' predicted classes give the mode metrics
  (classes captured, reverse KL against the held-out class shares);
- else 0/1 attribute columns (CelebA-style): one sigmoid per attribute (accuracy: the mean
  per-attribute accuracy); no mode metrics;
- stacked data (`Dataset.info["stacked"]`): one classifier of single channels, trained on every
  channel of the training split labelled by its per-channel column; a sample's mode is
  Σ l_i·L^(k−1−i) over its k channels' predicted label indices l_i, its features the k channel
  embeddings concatenated; modes are all L^k, uniform (PacGAN's Stacked MNIST protocol).

Everything here imports torch: a scenario's validation never imports this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from fedgan.simulator.data.base import DataError, Dataset
from fedgan.simulator.data.digit_classifier import _one_thread, cache_dir, save_torch
from fedgan.simulator.metrics.frechet import frechet_distance
from fedgan.simulator.metrics.groups import group_sort_key
from fedgan.simulator.metrics.modes import histogram_stats
from fedgan.simulator.metrics.prdc import expected_coverage, prdc
from torch import nn

# Bump whenever the architecture, split or training recipe changes: the version is part of the
# cache key and is checked inside the file, so stale weights are never loaded.
VERSION = "image-conv-v1"
SEED = 0
VAL_FRACTION = 0.1
"""Share of the training split held out (stratified by class) to measure the accuracy."""
EPOCHS = 10
MAX_STEPS = 2000
"""Optimizer steps at most, whatever the data size: ≈ 1 minute on one CPU thread at 28×28
(a step count, not a time limit, so that the weights do not depend on the machine's speed)."""
MAX_TRAIN = 60_000
"""Training images at most (a seeded subsample of larger sets)."""
BATCH = 128
LR = 2e-3
WIDTHS = (16, 32, 64)
"""Channels of the stride-2 conv blocks (the last repeats when larger images need more)."""
FEATURE_DIM = 128
MIN_ACCURACY = 0.9
"""Below this held-out accuracy the feature space is flagged: metrics read in it mean less."""
FEATURES_KEY = "evaluation.features"
CHUNK = 1024
"""Images per forward pass when embedding (bounds memory for 26,000 stacked samples)."""

Kind = Literal["multiclass", "multilabel"]

_training_runs = 0


def training_runs() -> int:
    """Classifiers trained from scratch in this process (a cache hit trains none)."""
    return _training_runs


# ----------------------------------------------------------------------------------------------
# The classifier


class _ConvNet(nn.Module):
    """Stride-2 3×3 conv blocks until the map is about 4×4, a 4×4 average pool, a ReLU
    linear layer of FEATURE_DIM (the features) and a linear head of `n_out` logits.

    Input [B, C, H, W] in [−1, 1]. No BatchNorm: features of a sample do not depend on the
    batch it is embedded in.
    """

    def __init__(self, shape: tuple[int, int, int], n_out: int) -> None:
        super().__init__()
        c, h, w = shape
        n_down = max(1, math.ceil(math.log2(max(h, w) / 4)))  # 28 → 3 (14, 7, 4), 64 → 4
        layers: list[nn.Module] = []
        for i in range(n_down):
            out = WIDTHS[min(i, len(WIDTHS) - 1)]
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.ReLU()]
            c = out
        self.trunk = nn.Sequential(
            *layers,
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(c * 16, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@dataclass(frozen=True)
class Task:
    """What a classifier learns: `kind`, the `outputs` (class values for multiclass, attribute
    column names for multilabel) and the input image shape (C, H, W)."""

    kind: Kind
    outputs: tuple[Any, ...]
    shape: tuple[int, int, int]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "outputs": [_plain(v) for v in self.outputs],
            "shape": list(self.shape),
        }


class ImageClassifier:
    """A trained `_ConvNet` in eval mode.

    Attributes
    ----------
    task : Task
    accuracy : float
        On the held-out VAL_FRACTION of its training images, in [0, 1]: the share of correct
        classes (multiclass) or the mean per-attribute accuracy (multilabel).
    n_train, n_val : int
        Images it was fit on and measured on.
    train_seconds : float
        Wall time of the training run that produced the weights (also when loaded).
    loaded_from_cache : bool
    cache_path : Path or None
        The cache file (None if it could not be written).
    key : str
        The cache key: a hash of the training data, the task, the architecture and the recipe.
    """

    def __init__(
        self,
        net: _ConvNet,
        task: Task,
        accuracy: float,
        n_train: int,
        n_val: int,
        train_seconds: float,
        key: str,
        loaded_from_cache: bool,
        cache_path: Path | None,
    ) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.task = task
        self.accuracy = accuracy
        self.n_train = n_train
        self.n_val = n_val
        self.train_seconds = train_seconds
        self.key = key
        self.loaded_from_cache = loaded_from_cache
        self.cache_path = cache_path

    def _run(self, X: np.ndarray, part: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        a = np.ascontiguousarray(X, dtype=np.float32)
        d = math.prod(self.task.shape)
        if a.ndim != 2 or a.shape[1] != d:
            raise DataError(f"expected images of shape [n, {d}], got {a.shape}")
        out = []
        with torch.no_grad(), _one_thread():
            for start in range(0, max(len(a), 1), CHUNK):
                x = torch.from_numpy(a[start : start + CHUNK]).reshape(-1, *self.task.shape)
                out.append(part(x).numpy())
        return np.concatenate(out, axis=0)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Logits float32 [n, len(task.outputs)] of images X float32 [n, C·H·W] in [−1, 1]."""
        return self._run(X, self.net)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate ReLU activations float32 [n, FEATURE_DIM] of X float32 [n, C·H·W]."""
        return self._run(X, self.net.trunk)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices int64 [n] (multiclass) or 0/1 int64 [n, A] (multilabel) of X."""
        z = self.logits(X)
        if self.task.kind == "multiclass":
            return z.argmax(axis=1).astype(np.int64)
        return (z > 0).astype(np.int64)


def _split(y: np.ndarray, kind: Kind, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices int64: VAL_FRACTION of every class (multiclass) or of all rows
    (multilabel) held out, at least one row on each side when there are two."""
    rng = np.random.default_rng(seed)
    if kind == "multiclass":
        pools = [np.flatnonzero(y == c) for c in np.unique(y)]
    else:
        pools = [np.arange(len(y))]
    fit, val = [], []
    for idx in pools:
        idx = rng.permutation(idx)
        n_val = int(round(VAL_FRACTION * idx.size))
        if idx.size >= 2:
            n_val = min(max(n_val, 1), idx.size - 1)
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def _accuracy(clf: ImageClassifier, X: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return float("nan")
    return float(np.mean(clf.predict(X) == y))


def _fit(
    net: _ConvNet, X: np.ndarray, y: np.ndarray, task: Task, seed: int, epochs: int, max_steps: int
) -> None:
    """Adam on cross-entropy (multiclass) or per-attribute binary cross-entropy (multilabel),
    minibatches shuffled by a local seeded generator, for min(epochs over X, max_steps) steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    Xt = torch.from_numpy(X).reshape(-1, *task.shape)
    yt = torch.from_numpy(y)
    n = len(y)
    steps = min(max_steps, epochs * math.ceil(n / BATCH))
    net.train()
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            if done >= steps:
                break
            b = perm[start : start + BATCH]
            opt.zero_grad()
            z = net(Xt[b])
            if task.kind == "multiclass":
                loss = nn.functional.cross_entropy(z, yt[b])
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(z, yt[b].float())
            loss.backward()
            opt.step()
            done += 1
    net.eval()


def _train(
    X: np.ndarray, y: np.ndarray, task: Task, key: str, seed: int, epochs: int, max_steps: int
) -> ImageClassifier:
    global _training_runs
    _training_runs += 1
    rng = np.random.default_rng(seed)
    if len(y) > MAX_TRAIN:
        keep = np.sort(rng.choice(len(y), MAX_TRAIN, replace=False))
        X, y = X[keep], y[keep]
    fit, val = _split(y, task.kind, seed)
    t0 = time.perf_counter()
    # fork_rng: a seeded initialization that leaves the caller's global torch RNG stream alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _ConvNet(task.shape, len(task.outputs))
    with _one_thread():
        _fit(net, X[fit], y[fit], task, seed, epochs, max_steps)
    seconds = time.perf_counter() - t0
    clf = ImageClassifier(net, task, 0.0, len(fit), len(val), seconds, key, False, None)
    clf.accuracy = _accuracy(clf, X[val], y[val])
    return clf


def cache_key(X: np.ndarray, y: np.ndarray, task: Task, seed: int, epochs: int, steps: int) -> str:
    """Hash of everything the weights depend on: the training images X float32 [n, C·H·W],
    their targets y, the task, the architecture and the training recipe."""
    recipe = {
        "version": VERSION,
        "task": task.describe(),
        "seed": seed,
        "epochs": epochs,
        "max_steps": steps,
        "recipe": [VAL_FRACTION, MAX_TRAIN, BATCH, LR, list(WIDTHS), FEATURE_DIM],
        "torch": torch.__version__.split("+")[0],
    }
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(recipe, sort_keys=True).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float32).data)
    h.update(np.ascontiguousarray(y, dtype=np.int64).data)
    return h.hexdigest()


def _cache_file(directory: Path, key: str) -> Path:
    return directory / f"{VERSION}-{key}.pt"


def _load(path: Path, task: Task, key: str) -> ImageClassifier | None:
    """The cached classifier, or None if absent, damaged or not for this key."""
    if not path.is_file():
        return None
    try:
        blob: Any = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("version") != VERSION or blob.get("key") != key:
            raise ValueError("wrong version, key or layout")
        acc = float(blob["accuracy"])
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy {acc} out of range")
        net = _ConvNet(task.shape, len(task.outputs))
        net.load_state_dict(blob["state_dict"], strict=True)
        n_train, n_val, secs = int(blob["n_train"]), int(blob["n_val"]), float(blob["seconds"])
    except Exception as exc:  # any damage (truncated zip, pickle error, bad keys) → retrain
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"image classifier cache {str(path)!r} is unreadable ({type(exc).__name__}: {why}); "
            "retraining",
            stacklevel=3,
        )
        return None
    return ImageClassifier(net, task, acc, n_train, n_val, secs, key, True, path)


def _save(path: Path, clf: ImageClassifier) -> bool:
    blob = {
        "version": VERSION,
        "key": clf.key,
        "state_dict": clf.net.state_dict(),
        "accuracy": clf.accuracy,
        "n_train": clf.n_train,
        "n_val": clf.n_val,
        "seconds": clf.train_seconds,
    }
    return save_torch(path, blob, "image classifier")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (POSIX flock) so that processes starting together (a
    server and its clients) train once: the others wait, then load the file. A no-op where
    flock is missing or the folder is not writable."""
    try:
        import fcntl
    except ImportError:  # Windows: each process may train; the results are identical
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 - held for the duration of the block
    except OSError:
        yield
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        f.close()  # closing releases the lock


_MEMO: dict[tuple[Path, str], ImageClassifier] = {}
_LOCK = threading.Lock()


def image_classifier(
    X: np.ndarray,
    y: np.ndarray,
    task: Task,
    *,
    directory: str | os.PathLike[str] | None = None,
    seed: int = SEED,
    epochs: int = EPOCHS,
    max_steps: int = MAX_STEPS,
) -> ImageClassifier:
    """The classifier of `task` on images X float32 [n, C·H·W] in [−1, 1] with targets y
    (int64 [n] class indices, or int64 [n, A] 0/1 attributes): memoized in-process, else
    loaded from the cache folder, else trained (and cached).

    Parameters
    ----------
    directory : path, optional
        Cache folder; default `$FEDGAN_CACHE`, else `~/.cache/fedgan`.
    seed, epochs, max_steps :
        The training recipe (part of the cache key).
    """
    key = cache_key(X, y, task, seed, epochs, max_steps)
    where = cache_dir(directory).resolve()
    with _LOCK:  # one training run even if several client threads ask at once
        clf = _MEMO.get((where, key))
        if clf is not None:
            return clf
        path = _cache_file(where, key)
        with _file_lock(path.with_suffix(".lock")):
            clf = _load(path, task, key)
            if clf is None:
                clf = _train(X, y, task, key, seed, epochs, max_steps)
                if _save(path, clf):
                    clf.cache_path = path
        _MEMO[(where, key)] = clf
        return clf


def clear_memo() -> None:
    """Forget in-process classifiers (the disk cache stays), e.g. to test cache loading."""
    with _LOCK:
        _MEMO.clear()
        _SPACES.clear()


# ----------------------------------------------------------------------------------------------
# Targets of an image dataset


@dataclass(frozen=True)
class Stacked:
    """`Dataset.info["stacked"]`: k channels of `base_channels` each, channel i labelled by
    group column `columns[i]` with a value of `labels` (L of them)."""

    k: int
    base_channels: int
    columns: tuple[str, ...]
    labels: tuple[Any, ...]

    @property
    def n_modes(self) -> int:
        return len(self.labels) ** self.k

    @classmethod
    def of(cls, ds: Dataset) -> Stacked | None:
        spec = ds.info.get("stacked")
        if spec is None:
            return None
        try:
            out = cls(
                int(spec["k"]),
                int(spec["base_channels"]),
                tuple(str(c) for c in spec["columns"]),
                tuple(spec["labels"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"dataset {ds.name!r}: info['stacked'] is malformed ({exc})") from None
        assert ds.image_shape is not None
        if (
            out.k < 1
            or len(out.columns) != out.k
            or out.k * out.base_channels != ds.image_shape[0]
            or not out.labels
        ):
            raise DataError(
                f"dataset {ds.name!r}: info['stacked'] {spec} does not fit image shape "
                f"{ds.image_shape}"
            )
        return out

    def channels(self, X: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """Images X [n, k·C0·H·W] as their channels [n·k, C0·H·W], sample-major."""
        _, h, w = shape
        return np.ascontiguousarray(X, dtype=np.float32).reshape(-1, self.base_channels * h * w)

    def label_indices(self, groups: pd.DataFrame) -> np.ndarray:
        """int64 [n, k]: index in `labels` of each channel's label."""
        lookup = {_plain(v): i for i, v in enumerate(self.labels)}
        out = np.empty((len(groups), self.k), dtype=np.int64)
        for i, col in enumerate(self.columns):
            if col not in groups.columns:
                raise DataError(f"stacked data: no per-channel label column {col!r}")
            vals = [lookup.get(_plain(v), -1) for v in groups[col].to_numpy()]
            out[:, i] = vals
        if (out < 0).any():
            raise DataError(f"stacked data: a channel label is not one of {list(self.labels)}")
        return out

    def modes(self, idx: np.ndarray) -> np.ndarray:
        """Mode ids int64 [n] = Σ_i l_i·L^(k−1−i) of label indices idx [n, k]."""
        L = len(self.labels)
        out = np.zeros(len(idx), dtype=np.int64)
        for i in range(self.k):
            out = out * L + idx[:, i]
        return out


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value (JSON, dict keys); anything else as it is."""
    return v.item() if isinstance(v, np.generic) else v


MAX_CLASSES = 1000
"""A first group column with more distinct values than this is no class label."""


def _label_column(groups: pd.DataFrame) -> str | None:
    """The class column a multiclass classifier learns: `label` when there is one, else the
    first group column when it is not 0/1 and has 2..MAX_CLASSES values ("class" of the
    digits); None: attributes (or nothing) to learn."""
    if "label" in groups.columns:
        return "label"
    first = str(groups.columns[0])
    n = groups[first].nunique()
    if first in attribute_columns(groups[[first]]) or not 2 <= n <= MAX_CLASSES:
        return None
    return first


def attribute_columns(groups: pd.DataFrame) -> list[str]:
    """Group columns holding 0 and 1, both, nothing else (integer or bool): the attributes a
    multilabel classifier learns when there is no class column (a constant one teaches
    nothing)."""
    out = []
    for col in groups.columns:
        s = groups[col]
        if (pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s)) and set(
            pd.unique(s.astype(np.int64))
        ) == {0, 1}:
            out.append(str(col))
    return out


# ----------------------------------------------------------------------------------------------
# The feature space


@dataclass
class FeatureSpace:
    """Where an evaluation compares real and generated images, and how it labels modes.

    Attributes
    ----------
    kind : str
        "data" (raw data space), "digit-mlp" (the bundled 8×8 digits' classifier),
        "classifier" (a conv net trained on the training split) or "torchscript"
        (`evaluation.features`).
    embed : callable or None
        Data rows [n, d] → features [n, F]; None: the data space itself.
    labels : callable or None
        Data rows [n, d] → mode label [n] of each sample (class value or stacked mode id);
        None: no label-based mode metrics.
    mode_column : str or None
        The group column whose values `labels` predicts (the `mode_mass` rows' grouping).
    mode_ids, mode_weights : arrays or None
        Every mode [K] and its true share [K]; None: read from the held-out set's
        `mode_column` shares (classes, as the digits do).
    info : dict
        JSON-ready description for the run's env.json (accuracy, cache, ...).
    warnings : list of str
        What the user should hear (low accuracy, no labels to learn).
    classifier : ImageClassifier or None
    """

    kind: str
    embed: Callable[[np.ndarray], np.ndarray] | None = None
    labels: Callable[[np.ndarray], np.ndarray] | None = None
    mode_column: str | None = None
    mode_ids: np.ndarray | None = None
    mode_weights: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    classifier: ImageClassifier | None = None

    @property
    def accuracy(self) -> float | None:
        acc = self.info.get("accuracy")
        return None if acc is None else float(acc)

    def modes(self, held: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
        """(mode ids [K], true shares [K]) the label mode metrics read, None without labels."""
        if self.labels is None or self.mode_column is None:
            return None
        if self.mode_ids is not None and self.mode_weights is not None:
            return self.mode_ids, self.mode_weights
        true = held.groups[self.mode_column].value_counts(normalize=True).sort_index()
        return true.index.to_numpy(), true.to_numpy()


def feature_space(
    real: Dataset,
    train: Dataset | None = None,
    features: str | os.PathLike[str] | None = None,
    *,
    directory: str | os.PathLike[str] | None = None,
    epochs: int = EPOCHS,
    max_steps: int = MAX_STEPS,
) -> FeatureSpace:
    """The feature space of an evaluation against held-out set `real`.

    Parameters
    ----------
    real : Dataset
        The held-out set (its image shape and `info["stacked"]` decide the space).
    train : Dataset, optional
        The real training split the classifier learns (default: `real` itself, split inside).
    features : path, optional
        A TorchScript module mapping images [B, C, H, W] in [−1, 1] to features [B, F]
        (`evaluation.features`); when given, the classifier is not the embedding (stacked
        data still take their mode labels from it).
    directory, epochs, max_steps :
        The classifier's cache folder and training recipe (`image_classifier`).

    Non-image data: the data space. The bundled 8×8 digits (and any 8×8 images): the digit MLP,
    unchanged. Raises DataError (naming `evaluation.features`) on a bad feature module.
    """
    shape = real.image_shape
    if shape is None:
        if features is not None:
            raise DataError(
                f"{FEATURES_KEY}: a feature extractor needs image data; dataset {real.name!r} "
                "is not images"
            )
        return _table_space(real)
    if _bundled_digits(real):
        stacked = Stacked.of(real)
        space = _digit_space(shape, str(real.groups.columns[0]), stacked)
        if stacked is not None and real.name != "stacked_digits":
            # A new stack of the digits counts its modes as every other stack does: all L^k,
            # uniform. `stacked_digits` keeps the held-out shares its golden tables read.
            n = stacked.n_modes
            space.mode_ids, space.mode_weights = np.arange(n), np.full(n, 1.0 / n)
    else:
        space = _memo_classifier_space(real, train or real, directory, epochs, max_steps, features)
    if features is not None:
        space.embed, space.kind = _torchscript(features, real), "torchscript"
        space.info = {**space.info, "kind": "torchscript", "features": str(features)}
    return space


def _table_space(real: Dataset) -> FeatureSpace:
    """A mixed table's space (`encoding.prdc_space`): numbers standardized, each category a
    one-hot × 1/√2 hardened to its argmax — so a generated row's softmax output is compared
    as the category it would decode to, and two rows differing in one category are at
    distance 1 — except the generated group columns, whose categories are
    `GROUP_SEPARATION` apart (every ball inside one group: where a row lies and what it says
    it is agree). The data space itself for everything else (all-numeric tables included:
    there `prdc_space` would be X)."""
    enc = real.info.get("encoding")
    kinds = {c.get("kind") for c in enc["columns"]} if isinstance(enc, dict) else set()
    if not kinds & {"categorical", "mode_specific"}:
        return FeatureSpace("data")
    from fedgan.simulator.data.encoding import GROUP_SEPARATION, categorical_columns, prdc_space

    assert isinstance(enc, dict)
    generated = set(categorical_columns(enc))
    separate = tuple(str(c) for c in real.groups.columns if str(c) in generated)

    def embed(x: np.ndarray) -> np.ndarray:
        return prdc_space(enc, x, separate)

    space = "numbers standardized, categories one-hot × 1/√2"
    if separate:
        space += f"; group columns {', '.join(separate)} {GROUP_SEPARATION:g} apart"
    info = {"kind": "table", "space": space, "separated": list(separate)}
    return FeatureSpace("table", embed=embed, info=info)


def _bundled_digits(ds: Dataset) -> bool:
    """Whether `ds` holds scikit-learn's 8×8 digits (or stacks of them) at their own size."""
    if ds.image_shape is None or ds.image_shape[1:] != (8, 8):
        return False
    return ds.name in ("digits", "stacked_digits") or ds.info.get("base") == "digits"


def _digit_space(
    shape: tuple[int, int, int], mode_column: str, stacked: Stacked | None
) -> FeatureSpace:
    """The 8×8 digits: the digit MLP on every channel (features concatenated, mode = the
    channels' digits as decimal places, compared with the held-out set's first group column,
    its shares the true ones) — the behaviour golden tables depend on. Stacks of a subset of
    the digits number their modes by label index (`Stacked.modes`), a digit outside the
    subset giving mode −1 (off support)."""
    from fedgan.simulator.data.digit_classifier import get_digit_classifier

    clf = get_digit_classifier()
    c = shape[0]
    index = np.full(10, -1, dtype=np.int64)  # digit → its index among the stacked labels
    if stacked is not None:
        for i, v in enumerate(stacked.labels):
            if isinstance(_plain(v), int) and 0 <= int(v) < 10:
                index[int(v)] = i

    def embed(x: np.ndarray) -> np.ndarray:
        chans = x.reshape(len(x), c, 64)
        return np.concatenate([clf.features(chans[:, i]) for i in range(c)], axis=1)

    def labels(x: np.ndarray) -> np.ndarray:
        chans = x.reshape(len(x), c, 64)
        if stacked is not None and stacked.base_channels == 1:
            idx = index[np.stack([clf.predict(chans[:, i]) for i in range(c)], axis=1)]
            return np.where((idx < 0).any(axis=1), -1, stacked.modes(np.maximum(idx, 0)))
        out = np.zeros(len(x), dtype=np.int64)
        for i in range(c):
            out = out * 10 + clf.predict(chans[:, i])
        return out

    info = {
        "kind": "digit-mlp",
        "version": clf.version,
        "accuracy": clf.test_accuracy,
        "accuracy_of": "the digit classifier on a held-out quarter of the 1,797 digits",
        "loaded_from_cache": clf.loaded_from_cache,
        "cache": None if clf.cache_path is None else str(clf.cache_path),
    }
    space = FeatureSpace("digit-mlp", embed, labels, mode_column=mode_column, info=info)
    space.warnings = _accuracy_warning(clf.test_accuracy, "digit")
    return space


_SPACES: dict[tuple[Any, ...], tuple[weakref.ref[Dataset], FeatureSpace]] = {}
"""Classifier spaces by training set (its identity) and recipe: a federated run builds an
evaluator per target mixture and round over the same training split, and hashing 60,000
images (or finding a stack's distinct channels) each time would cost a second. Datasets are
never changed in place (`prepare_data` shares them), so identity stands for content."""


def _memo_classifier_space(
    real: Dataset,
    train: Dataset,
    directory: str | os.PathLike[str] | None,
    epochs: int,
    max_steps: int,
    features: str | os.PathLike[str] | None,
) -> FeatureSpace:
    """`_classifier_space`, remembered per training set (a copy: callers may set fields)."""
    spec = json.dumps(real.info.get("stacked"), sort_keys=True, default=str)
    where = str(cache_dir(directory).resolve())
    key = (id(train), real.image_shape, spec, where, epochs, max_steps, features is None)
    hit = _SPACES.get(key)
    if hit is not None and hit[0]() is train:
        return dataclasses.replace(hit[1], warnings=list(hit[1].warnings))
    space = _classifier_space(real, train, directory, epochs, max_steps, features)
    for k in [k for k, (ref, _) in _SPACES.items() if ref() is None]:
        del _SPACES[k]  # training sets gone: forget them
    _SPACES[key] = (weakref.ref(train), space)
    return dataclasses.replace(space, warnings=list(space.warnings))


def _classifier_space(
    real: Dataset,
    train: Dataset,
    directory: str | os.PathLike[str] | None,
    epochs: int,
    max_steps: int,
    features: str | os.PathLike[str] | None,
) -> FeatureSpace:
    """A conv classifier trained on `train` (see the module docstring for what it learns)."""
    shape = real.image_shape
    assert shape is not None
    if train.image_shape != shape:
        raise DataError(
            f"the training split's image shape {train.image_shape} differs from the held-out "
            f"set's {shape}"
        )
    stacked = Stacked.of(real)
    if stacked is not None:
        return _stacked_space(stacked, shape, train, directory, epochs, max_steps)
    if features is not None:
        # The user's extractor embeds; the classifier would only add class mode metrics,
        # not worth its training time when they bring their own.
        return FeatureSpace("torchscript", info={"kind": "torchscript"})
    label = _label_column(train.groups)
    if label is not None:
        values = train.groups[label]
        classes = tuple(sorted(pd.unique(values).tolist(), key=group_sort_key))
        lookup = {_plain(v): i for i, v in enumerate(classes)}
        y = np.array([lookup[_plain(v)] for v in values.to_numpy()], dtype=np.int64)
        task = Task("multiclass", classes, shape)
        clf = image_classifier(
            train.X, y, task, directory=directory, epochs=epochs, max_steps=max_steps
        )
        out = np.asarray(classes)

        def labels(x: np.ndarray) -> np.ndarray:
            return out[clf.predict(x)]

        what = "class"
        space = FeatureSpace("classifier", clf.features, labels, mode_column=label)
    else:
        attrs = attribute_columns(train.groups)
        if not attrs:
            return FeatureSpace(
                "data",
                info={"kind": "data"},
                warnings=[
                    f"dataset {real.name!r} has no class column and no 0/1 attribute "
                    "columns to train a feature classifier on: PRDC and the per-group "
                    f"metrics compare raw pixels; give {FEATURES_KEY} a feature extractor"
                ],
            )
        y = train.groups[attrs].to_numpy().astype(np.int64)
        task = Task("multilabel", tuple(attrs), shape)
        clf = image_classifier(
            train.X, y, task, directory=directory, epochs=epochs, max_steps=max_steps
        )
        what = "mean per-attribute"
        space = FeatureSpace("classifier", clf.features)
    space.classifier = clf
    space.info = _classifier_info(clf, what, len(train.X))
    space.warnings = _accuracy_warning(clf.accuracy, what)
    return space


def _stacked_space(
    st: Stacked,
    shape: tuple[int, int, int],
    train: Dataset,
    directory: str | os.PathLike[str] | None,
    epochs: int,
    max_steps: int,
) -> FeatureSpace:
    """One classifier of single channels; modes from the k channels' predictions."""
    _, h, w = shape
    chan_shape = (st.base_channels, h, w)
    chans = st.channels(train.X, shape)
    y = st.label_indices(train.groups).reshape(-1)
    # Stacked samples reuse base images (drawn with replacement): train and measure on each
    # distinct channel image once, so that no image is both fit and validated on.
    rows = chans.view(np.dtype((np.void, chans.dtype.itemsize * chans.shape[1]))).ravel()
    _, first = np.unique(rows, return_index=True)
    first = np.sort(first)
    task = Task("multiclass", st.labels, chan_shape)
    clf = image_classifier(
        chans[first], y[first], task, directory=directory, epochs=epochs, max_steps=max_steps
    )
    k = st.k

    def embed(x: np.ndarray) -> np.ndarray:
        f = clf.features(st.channels(x, shape))
        return f.reshape(len(x), k * f.shape[1])

    def labels(x: np.ndarray) -> np.ndarray:
        return st.modes(clf.predict(st.channels(x, shape)).reshape(len(x), k))

    n = st.n_modes
    space = FeatureSpace(
        "classifier",
        embed,
        labels,
        mode_column="mode",
        mode_ids=np.arange(n, dtype=np.int64),
        mode_weights=np.full(n, 1.0 / n),
    )
    space.classifier = clf
    what = "per-channel class"
    space.info = {**_classifier_info(clf, what, len(first)), "stacked_modes": n}
    space.warnings = _accuracy_warning(clf.accuracy, what)
    return space


def _classifier_info(clf: ImageClassifier, what: str, n_images: int) -> dict[str, Any]:
    return {
        "kind": "classifier",
        "version": VERSION,
        "task": clf.task.kind,
        "outputs": len(clf.task.outputs),
        "accuracy": clf.accuracy,
        "accuracy_of": f"{what} accuracy on a held-out {VAL_FRACTION:.0%} of the "
        f"{n_images:,} training images",
        "n_fit": clf.n_train,
        "n_val": clf.n_val,
        "train_seconds": round(clf.train_seconds, 3),
        "loaded_from_cache": clf.loaded_from_cache,
        "cache": None if clf.cache_path is None else str(clf.cache_path),
        "key": clf.key,
    }


def describe(info: dict[str, Any]) -> str | None:
    """One line for the user on a run's feature space (env.json's `feature_space`), None for
    data compared in data space: what embeds the images and the classifier's accuracy."""
    kind = info.get("kind")
    acc = info.get("accuracy")
    said = f"; accuracy {acc:.3f} ({info.get('accuracy_of', '')})" if acc is not None else ""
    if kind == "torchscript":
        return f"feature space: {info.get('features')} (evaluation.features)" + said
    if kind == "digit-mlp":
        return "feature space: the digit classifier" + said
    if kind == "table":
        return f"feature space: the table's, {info.get('space')}"
    if kind == "classifier":
        cached = " (cached)" if info.get("loaded_from_cache") else ""
        return f"feature space: a conv classifier trained on the training split{cached}" + said
    return None


def _accuracy_warning(acc: float, what: str) -> list[str]:
    if acc >= MIN_ACCURACY:
        return []
    return [
        f"the feature classifier's held-out {what} accuracy is {acc:.3f}, below "
        f"{MIN_ACCURACY:.2f}: PRDC, mode and per-group metrics read a feature space that does "
        f"not tell the images apart well (give {FEATURES_KEY} a trained feature extractor)"
    ]


def _torchscript(path: str | os.PathLike[str], real: Dataset) -> Callable[[np.ndarray], np.ndarray]:
    """The embedding of TorchScript module `path`, checked on two held-out images: it must
    load with torch.jit.load and map [B, C, H, W] to finite float features [B, F]."""
    shape = real.image_shape
    assert shape is not None
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{FEATURES_KEY}: no file at {str(p)!r}", FEATURES_KEY)
    try:
        with warnings.catch_warnings():  # torch ≥ 2.10 deprecates TorchScript for torch.export
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch says RuntimeError or ValueError, variously
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{FEATURES_KEY}: {str(p)!r} is not a TorchScript module (save one with "
            f"torch.jit.save(torch.jit.script(model), path)): {first}",
            FEATURES_KEY,
        ) from None
    module.eval()

    def embed(x: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(x, dtype=np.float32)
        out = []
        with torch.no_grad():
            for start in range(0, max(len(a), 1), CHUNK):
                b = torch.from_numpy(a[start : start + CHUNK]).reshape(-1, *shape)
                out.append(_checked_output(module(b), len(b), p))
        return np.concatenate(out, axis=0)

    probe = real.X[:2] if len(real.X) else np.zeros((1, math.prod(shape)), dtype=np.float32)
    try:
        embed(probe)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed on our images
        raise DataError(
            f"{FEATURES_KEY}: {str(p)!r} failed on images [{len(probe)}, "
            f"{', '.join(map(str, shape))}] in [-1, 1]: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            FEATURES_KEY,
        ) from None
    return embed


def check_features(path: str | os.PathLike[str], real: Dataset) -> list[str]:
    """Problems ('evaluation.features: ...' lines) of TorchScript module `path` on images of
    `real`: not a file, not TorchScript, failing or returning anything but [B, F]; [] if fine."""
    try:
        if real.image_shape is None:
            raise DataError(f"{FEATURES_KEY}: a feature extractor needs image data")
        _torchscript(path, real)
    except DataError as exc:
        return [str(exc)]
    return []


def _checked_output(out: Any, n: int, path: Path) -> np.ndarray:
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(
            f"{FEATURES_KEY}: {str(path)!r} must map images [B, C, H, W] to features [B, F]; "
            f"for B = {n} it returned {got}",
            FEATURES_KEY,
        )
    a = out.detach().to(torch.float32).cpu().numpy()
    if not np.isfinite(a).all():
        raise DataError(f"{FEATURES_KEY}: {str(path)!r} returned non-finite features", FEATURES_KEY)
    return a


# ----------------------------------------------------------------------------------------------
# Mode metrics from labels, and the ceiling real data reach


@dataclass(frozen=True)
class LabelModes:
    """Mode histogram of generated samples: `mass_per_mode` [K] over the modes `mode_ids`."""

    modes_captured: int
    mode_ids: np.ndarray
    mass_per_mode: np.ndarray
    reverse_kl: float
    min_mass_ratio: float
    off_support_rate: float


def label_mode_metrics(labels: np.ndarray, mode_ids: np.ndarray, weights: np.ndarray) -> LabelModes:
    """Mode metrics from classifier labels (digits, stacked digits, image classes).

    labels [M]: predicted mode of each generated sample; mode_ids [K] and weights [K]: the true
    modes and their shares. Modes captured = modes predicted at least once (PacGAN); the
    histogram is taken over samples whose label is a true mode (like high-quality samples of a
    mixture); reverse KL = Σ p log(p / w) with 0·log 0 = 0; min mass ratio = min p / w.
    """
    # get_indexer: class values may be ints or strings; −1 marks a label that is no true mode.
    idx = pd.Index(np.asarray(mode_ids)).get_indexer(np.asarray(labels)).astype(np.int64)
    inside = idx >= 0
    counts = np.bincount(idx[inside], minlength=len(mode_ids))
    mass, kl, ratio = histogram_stats(counts, np.asarray(weights, dtype=np.float64))
    off_support = float(1.0 - inside.mean()) if len(labels) else 1.0
    return LabelModes(int(np.count_nonzero(counts)), mode_ids, mass, kl, ratio, off_support)


def ceiling(
    space: FeatureSpace,
    held: Dataset,
    train: Dataset,
    k: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """What real data score through `space`: the ceiling a generator's scores compare with.

    Modes (when the space labels them): the held-out real samples' predicted modes, as a
    generator's would be — `modes_captured` of `modes_total`, `reverse_kl` against the true
    shares (uniform over L^k for stacked data), `off_support_rate`, and for stacked data
    `mode_accuracy`, the share of held-out samples whose every channel is read right.
    PRDC, Fréchet distance: the held-out set (as the "generated" side) against as many
    training points (a seeded subsample; the reference side), k neighbours.

    Note that modes captured depends on the sample size: n held-out samples over K uniform
    modes capture K·(1 − (1 − 1/K)^n) at best (≈ 918 of 1,000 at n = 2,500).
    """
    from fedgan.simulator.devices import resolve_device

    out: dict[str, float] = {"n_held": float(held.n), "n_train": float(train.n)}
    modes = space.modes(held)
    if modes is not None and space.labels is not None:
        pred = space.labels(held.X)
        lm = label_mode_metrics(pred, *modes)
        out |= {
            "modes_captured": float(lm.modes_captured),
            "modes_total": float(len(lm.mode_ids)),
            "reverse_kl": lm.reverse_kl,
            "min_mass_ratio": lm.min_mass_ratio,
            "off_support_rate": lm.off_support_rate,
        }
        if space.mode_column is not None and space.mode_column in held.groups.columns:
            truth = held.groups[space.mode_column].to_numpy()
            out["mode_accuracy"] = float(np.mean(pred == truth)) if len(truth) else float("nan")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(train.n, size=min(train.n, held.n), replace=False))
    embed = space.embed or (lambda x: x)
    ref, fake = embed(train.X[take]), embed(held.X)
    res = prdc(ref, fake, k=k, device=resolve_device(device))
    out |= {
        "precision": res.precision,
        "recall": res.recall,
        "density": res.density,
        "coverage": res.coverage,
        "expected_coverage": expected_coverage(len(ref), len(fake), k),
    }
    if space.embed is not None:
        out["frechet_distance"] = frechet_distance(ref, fake)
    return {key: float(v) for key, v in out.items()}
