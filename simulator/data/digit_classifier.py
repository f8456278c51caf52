"""A small MLP that labels 8×8 digit images, trained on the fly and cached on disk.

It labels *generated* samples (stacked-digit modes, class coverage) and gives penultimate
features for a Fréchet distance. Training takes about a second on one CPU thread and is seeded
(a rebuild on the same machine gives bit-identical weights); the weights and test accuracy are
cached under `$FEDGAN_CACHE` (default `~/.cache/fedgan`) keyed by `VERSION`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fedgan.simulator.data.base import DataError
from fedgan.simulator.data.digit_arrays import load_digit_arrays as load_digit_arrays
from torch import nn

# Bump whenever the architecture, split or training recipe changes: the version is part of the
# cache file's name and is checked inside it, so stale weights are never loaded.
VERSION = "digit-mlp-v1"
SEED = 0
TEST_FRACTION = 0.25
EPOCHS = 40
BATCH = 64
LR = 2e-3
N_PIXELS = 64
N_CLASSES = 10
FEATURE_DIM = 64


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override`, else `$FEDGAN_CACHE`, else `~/.cache/fedgan`."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("FEDGAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedgan"


def _split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices, int64 [n_train], [n_test]: a fixed per-class fraction."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(TEST_FRACTION * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the caller's setting afterwards.

    These matmuls are too small to gain from threads, and on a busy 2-core machine OpenMP's
    spinning threads made training ~50x slower (60 s instead of 1 s). One thread also makes
    the weights and predictions independent of the machine's core count.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build() -> nn.Sequential:
    # 64 → 128 → 64 → 10; layers [0:4] produce the 64-d features.
    return nn.Sequential(
        nn.Linear(N_PIXELS, 128),
        nn.ReLU(),
        nn.Linear(128, FEATURE_DIM),
        nn.ReLU(),
        nn.Linear(FEATURE_DIM, N_CLASSES),
    )


def _accuracy(net: nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad(), _one_thread():
        pred = net(torch.from_numpy(X)).argmax(dim=1).numpy()
    return float(np.mean(pred == y))


def _train(seed: int) -> tuple[nn.Sequential, float, float]:
    """Train from scratch; returns (net, test accuracy in [0, 1], training time in s)."""
    X, y = load_digit_arrays()
    tr, te = _split(y, seed)
    t0 = time.perf_counter()
    # fork_rng: seed initialization without disturbing the caller's global torch RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _build()
    with _one_thread():
        _fit(net, X[tr], y[tr], seed)
    seconds = time.perf_counter() - t0
    return net, _accuracy(net, X[te], y[te]), seconds


def _fit(net: nn.Sequential, X: np.ndarray, y: np.ndarray, seed: int) -> None:
    """Adam on cross-entropy, minibatches shuffled by a local seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=1e-4)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    net.train()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), BATCH):
            b = perm[start : start + BATCH]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(Xt[b]), yt[b])
            loss.backward()
            opt.step()
    net.eval()


class DigitClassifier:
    """A trained digit MLP in eval mode.

    Attributes
    ----------
    test_accuracy : float
        Accuracy on the held-out stratified split, in [0, 1].
    train_seconds : float
        Wall time of the training run that produced the weights (also when loaded from cache).
    loaded_from_cache : bool
        Whether the weights came from `cache_path` instead of a training run in this process.
    cache_path : Path or None
        The cache file (None if it could not be written).
    """

    def __init__(
        self,
        net: nn.Sequential,
        test_accuracy: float,
        train_seconds: float,
        loaded_from_cache: bool,
        cache_path: Path | None,
    ) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.test_accuracy = test_accuracy
        self.train_seconds = train_seconds
        self.loaded_from_cache = loaded_from_cache
        self.cache_path = cache_path
        self.version = VERSION

    @staticmethod
    def _input(X: np.ndarray, width: int) -> np.ndarray:
        a = np.asarray(X, dtype=np.float32)
        if a.ndim != 2 or a.shape[1] != width:
            raise DataError(f"expected images of shape [n, {width}], got {a.shape}")
        return np.ascontiguousarray(a)

    def _run(self, X: np.ndarray, upto: int | None) -> np.ndarray:
        layers = self.net if upto is None else self.net[:upto]
        out = []
        with torch.no_grad(), _one_thread():
            # Chunks bound memory when labelling hundreds of thousands of generated samples.
            for start in range(0, max(len(X), 1), 16384):
                out.append(layers(torch.from_numpy(X[start : start + 16384])).numpy())
        return np.concatenate(out, axis=0)

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Class logits float32 [n, 10] of images X float32 [n, 64] in [−1, 1]."""
        return self._run(self._input(X, N_PIXELS), None)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted digits int64 [n] of images X float32 [n, 64] in [−1, 1]."""
        return self.logits(X).argmax(axis=1).astype(np.int64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax class probabilities float32 [n, 10] of X float32 [n, 64]."""
        z = self.logits(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def features(self, X: np.ndarray) -> np.ndarray:
        """Penultimate ReLU activations float32 [n, 64] of X float32 [n, 64], for Fréchet."""
        return self._run(self._input(X, N_PIXELS), 4)

    def predict_stacked(self, X: np.ndarray) -> np.ndarray:
        """Mode ids int64 [n] = 100·d0 + 10·d1 + d2 of 3-channel images X float32 [n, 192].

        Channel c is columns c·64 .. c·64+63 (rows are flattened C·H·W).
        """
        a = self._input(X, 3 * N_PIXELS)
        d = self.predict(a.reshape(-1, N_PIXELS)).reshape(-1, 3)
        return (100 * d[:, 0] + 10 * d[:, 1] + d[:, 2]).astype(np.int64)


def _cache_file(directory: Path) -> Path:
    return directory / f"{VERSION}-seed{SEED}.pt"


def _load(path: Path) -> DigitClassifier | None:
    """The cached classifier, or None if the file is absent, corrupt or from another version."""
    if not path.is_file():
        return None
    try:
        blob: Any = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("version") != VERSION:
            raise ValueError("wrong version or layout")
        acc, secs = float(blob["test_accuracy"]), float(blob["train_seconds"])
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"test_accuracy {acc} out of range")
        net = _build()
        net.load_state_dict(blob["state_dict"], strict=True)
    except Exception as exc:  # any damage (truncated zip, pickle error, bad keys) → retrain
        warnings.warn(
            f"digit classifier cache {str(path)!r} is unreadable ({type(exc).__name__}: {exc}); "
            "retraining",
            stacklevel=3,
        )
        return None
    return DigitClassifier(net, acc, secs, loaded_from_cache=True, cache_path=path)


def save_torch(path: Path, blob: dict[str, object], what: str) -> bool:
    """`torch.save(blob)` to `path` atomically (temp file in the same directory, then
    os.replace); False, with a warning naming `what`, when it cannot be written."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
        # Concurrent trainers each replace the file with identical bytes; readers never see a
        # half-written file.
        os.replace(tmp, path)
        return True
    except OSError as exc:  # read-only home, full disk: the classifier still works uncached
        warnings.warn(f"cannot cache the {what} at {str(path)!r}: {exc}", stacklevel=4)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return False


def _save(path: Path, clf: DigitClassifier) -> bool:
    blob = {
        "version": VERSION,
        "state_dict": clf.net.state_dict(),
        "test_accuracy": clf.test_accuracy,
        "train_seconds": clf.train_seconds,
    }
    return save_torch(path, blob, "digit classifier")


_MEMO: dict[Path, DigitClassifier] = {}
_LOCK = threading.Lock()


def get_digit_classifier(directory: str | os.PathLike[str] | None = None) -> DigitClassifier:
    """The digit classifier: memoized per cache directory, else loaded from disk, else trained.

    Parameters
    ----------
    directory : path, optional
        Cache directory; default `$FEDGAN_CACHE`, else `~/.cache/fedgan`.
    """
    where = cache_dir(directory).resolve()
    with _LOCK:  # one training run even if several client threads ask at once
        clf = _MEMO.get(where)
        if clf is not None:
            return clf
        path = _cache_file(where)
        clf = _load(path)
        if clf is None:
            net, acc, secs = _train(SEED)
            clf = DigitClassifier(net, acc, secs, loaded_from_cache=False, cache_path=path)
            if not _save(path, clf):
                clf.cache_path = None
        _MEMO[where] = clf
        return clf


def clear_memo() -> None:
    """Forget in-process classifiers (the disk cache stays), e.g. to test cache loading."""
    with _LOCK:
        _MEMO.clear()
