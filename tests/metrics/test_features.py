"""The image feature space: a classifier trained on the training split (cached by data hash),
multi-label attributes, stacked modes, a user's TorchScript extractor, the ceiling, env.json.

Data are built here: 28×28 images of a Gaussian blob whose position on a circle is the class
(plus pixel noise), which a small conv net learns in a second.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.simulator.data.base import DataError, Dataset
from fedgan.simulator.evaluate import Evaluator, record_feature_space
from fedgan.simulator.metrics import features as F
from fedgan.simulator.scenario import ScenarioError, validate
from fedgan.simulator.store import RunStore

SIZE = 28


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default cache folder is a per-test temporary one; no classifier is remembered
    in-process from another test."""
    path = tmp_path_factory.mktemp("fedgan_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEDGAN_CACHE", str(path))
        F.clear_memo()
        yield path
    F.clear_memo()


def blob_images(classes: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, 28·28] in [−1, 1]: a blob (σ 3 px) at angle 2π·c/n_classes on a circle of
    radius 8 px around the centre, jittered by 1.5 px, plus N(0, 0.3) pixel noise."""
    n = len(classes)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    ang = 2 * np.pi * classes / n_classes
    cy = SIZE / 2 + 8 * np.sin(ang) + rng.normal(0, 1.5, n)
    cx = SIZE / 2 + 8 * np.cos(ang) + rng.normal(0, 1.5, n)
    d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    img = np.exp(-d2 / (2 * 3.0**2)) + rng.normal(0, 0.3, (n, SIZE, SIZE))
    return (2 * np.clip(img, 0, 1) - 1).reshape(n, -1).astype(np.float32)


def blobs(n: int, seed: int, n_classes: int = 4, random_labels: bool = False) -> Dataset:
    """Class c's images show blob c; with `random_labels` the `label` column is drawn
    independently of the image (nothing to learn)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    X = blob_images(y, n_classes, rng)
    label = rng.integers(0, n_classes, n) if random_labels else y
    return Dataset("blobs", X, pd.DataFrame({"label": label}), image_shape=(1, SIZE, SIZE))


def stacked_blobs(n: int, seed: int, labels: Sequence[int] = (3, 5, 7, 9), k: int = 3) -> Dataset:
    """k blob images per sample as channels; channel i's label `labels[l_i]`, l_i uniform.
    Groups as the `stacked` dataset makes them: "mode" = Σ l_i·L^(k−1−i), "label0".."label{k-1}".
    """
    rng = np.random.default_rng(seed)
    L = len(labels)
    idx = rng.integers(0, L, size=(n, k))
    chans = blob_images(idx.reshape(-1), L, rng).reshape(n, k * SIZE * SIZE)
    mode = sum(idx[:, i] * L ** (k - 1 - i) for i in range(k))
    groups = {"mode": mode} | {f"label{i}": np.asarray(labels)[idx[:, i]] for i in range(k)}
    info = {
        "stacked": {
            "k": k,
            "n_labels": L,
            "base_channels": 1,
            "columns": [f"label{i}" for i in range(k)],
            "labels": list(labels),
        }
    }
    return Dataset("stacked", chans, pd.DataFrame(groups), image_shape=(k, SIZE, SIZE), info=info)


# ---- the classifier and its cache --------------------------------------------------------------


def test_classifier_learns_blobs_and_the_second_build_loads_the_cache(_cache: Path) -> None:
    train, held = blobs(400, 0), blobs(200, 1)
    runs = F.training_runs()
    first = F.feature_space(held, train)
    assert F.training_runs() == runs + 1
    assert first.kind == "classifier" and first.classifier is not None
    assert first.accuracy is not None and first.accuracy > 0.9
    assert first.warnings == []
    path = first.classifier.cache_path
    assert path is not None and path.parent == _cache.resolve() and path.is_file()
    mtime = path.stat().st_mtime_ns

    F.clear_memo()  # a new process: only the disk cache is left
    second = F.feature_space(held, train)
    assert second.classifier is not None and second.classifier.loaded_from_cache
    assert F.training_runs() == runs + 1  # loaded, not trained again
    assert path.stat().st_mtime_ns == mtime  # and not rewritten
    assert second.accuracy == first.accuracy
    assert first.embed is not None and second.embed is not None
    np.testing.assert_array_equal(first.embed(held.X), second.embed(held.X))
    # The held-out set's classes, independently of the classifier's own validation split.
    assert first.labels is not None
    assert np.mean(first.labels(held.X) == held.groups["label"].to_numpy()) > 0.9


def test_training_is_deterministic_across_cache_folders(tmp_path: Path) -> None:
    train, held = blobs(300, 0), blobs(50, 1)
    a = F.feature_space(held, train, directory=tmp_path / "a", epochs=3)
    b = F.feature_space(held, train, directory=tmp_path / "b", epochs=3)
    assert a.classifier is not None and b.classifier is not None
    assert not a.classifier.loaded_from_cache and not b.classifier.loaded_from_cache
    assert a.embed is not None and b.embed is not None
    np.testing.assert_array_equal(a.embed(held.X), b.embed(held.X))


def test_changed_data_or_labels_change_the_cache_key() -> None:
    train, held = blobs(200, 0), blobs(50, 1)
    task = F.Task("multiclass", (0, 1, 2, 3), (1, SIZE, SIZE))
    y = train.groups["label"].to_numpy()
    key = F.cache_key(train.X, y, task, F.SEED, F.EPOCHS, F.MAX_STEPS)
    X2 = train.X.copy()
    X2[7, 100] += 0.5  # one pixel of one image
    y2 = y.copy()
    y2[3] = (y2[3] + 1) % 4
    assert F.cache_key(X2, y, task, F.SEED, F.EPOCHS, F.MAX_STEPS) != key
    assert F.cache_key(train.X, y2, task, F.SEED, F.EPOCHS, F.MAX_STEPS) != key
    assert F.cache_key(train.X, y, task, F.SEED, F.EPOCHS + 1, F.MAX_STEPS) != key
    assert F.cache_key(train.X.copy(), y.copy(), task, F.SEED, F.EPOCHS, F.MAX_STEPS) == key
    # Two datasets, two cache files.
    a = F.feature_space(held, train, epochs=2)
    changed = Dataset("blobs", X2, train.groups, image_shape=train.image_shape)
    b = F.feature_space(held, changed, epochs=2)
    assert a.classifier is not None and b.classifier is not None
    assert a.classifier.cache_path != b.classifier.cache_path


def test_a_damaged_cache_file_is_retrained(tmp_path: Path) -> None:
    train, held = blobs(200, 0), blobs(50, 1)
    first = F.feature_space(held, train, directory=tmp_path, epochs=2)
    assert first.classifier is not None and first.classifier.cache_path is not None
    first.classifier.cache_path.write_bytes(b"not a torch file")
    F.clear_memo()
    runs = F.training_runs()
    with pytest.warns(UserWarning, match="unreadable.*retraining"):
        again = F.feature_space(held, train, directory=tmp_path, epochs=2)
    assert F.training_runs() == runs + 1
    assert again.accuracy == first.accuracy


def test_unlearnable_labels_give_a_low_accuracy_and_the_warning() -> None:
    train, held = blobs(400, 0, random_labels=True), blobs(100, 1, random_labels=True)
    space = F.feature_space(held, train)
    assert space.accuracy is not None and space.accuracy < 0.6  # chance is 0.25
    assert len(space.warnings) == 1
    assert "below 0.90" in space.warnings[0] and "evaluation.features" in space.warnings[0]


def test_evaluator_counts_classes_in_the_classifier_space() -> None:
    train, held = blobs(400, 0), blobs(200, 1)
    ev = Evaluator(held, train=train)
    assert ev.space.kind == "classifier"
    two = held.X[np.isin(held.groups["label"].to_numpy(), [0, 1])]
    e = ev(two)
    assert e.summary["modes_captured"] == 2
    assert e.summary["modes_total"] == 4
    mass = {r["group"]: r["value"] for r in e.rows if r["metric"] == "mode_mass"}
    assert set(mass) == {0, 1, 2, 3}
    assert mass[2] == 0.0 and mass[3] == 0.0
    assert all(r["group_by"] == "label" for r in e.rows if r["metric"] == "mode_mass")
    assert "frechet_distance" in e.summary


def test_first_group_column_is_the_class_without_a_label_column() -> None:
    train, held = blobs(400, 0), blobs(100, 1)
    rename = {"label": "class"}
    train = Dataset("d", train.X, train.groups.rename(columns=rename), image_shape=(1, SIZE, SIZE))
    held = Dataset("d", held.X, held.groups.rename(columns=rename), image_shape=(1, SIZE, SIZE))
    space = F.feature_space(held, train)
    assert space.classifier is not None and space.classifier.task.kind == "multiclass"
    assert space.mode_column == "class"


# ---- multi-label attributes --------------------------------------------------------------------


def attribute_images(n: int, seed: int) -> Dataset:
    """Attribute `right`: the blob is on the right (else the left); attribute `bright`: the
    image is brightened by +0.6 (else not). No class column."""
    rng = np.random.default_rng(seed)
    right = rng.integers(0, 2, n)
    bright = rng.integers(0, 2, n)
    X = blob_images(np.where(right == 1, 0, 2), 4, rng)  # angle 0: right, angle π: left
    X = np.clip(X + 0.6 * bright[:, None], -1, 1).astype(np.float32)
    groups = pd.DataFrame({"right": right, "bright": bright})
    return Dataset("attrs", X, groups, image_shape=(1, SIZE, SIZE))


def test_attribute_only_data_get_a_multilabel_classifier() -> None:
    train, held = attribute_images(400, 0), attribute_images(200, 1)
    space = F.feature_space(held, train)
    clf = space.classifier
    assert clf is not None and clf.task.kind == "multilabel"
    assert clf.task.outputs == ("right", "bright")
    assert space.labels is None and space.modes(held) is None  # no mode metrics
    assert space.accuracy is not None and space.accuracy > 0.9
    assert "per-attribute" in space.info["accuracy_of"]
    # Per attribute, on the held-out set: the mean of the two attributes' accuracies.
    pred = clf.predict(held.X)
    truth = held.groups[["right", "bright"]].to_numpy()
    per = [np.mean(pred[:, j] == truth[:, j]) for j in range(2)]
    assert min(per) > 0.9
    e = Evaluator(held, train=train)(held.X)
    assert "modes_captured" not in e.summary
    assert {r["group_by"] for r in e.rows if r.get("group_by")} == {"right", "bright"}


def test_no_labels_at_all_fall_back_to_pixels_with_a_warning() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, SIZE * SIZE)).astype(np.float32)
    ds = Dataset(
        "raw", X, pd.DataFrame({"all": np.zeros(60, dtype=np.int64)}), image_shape=(1, 28, 28)
    )
    space = F.feature_space(ds, ds)
    assert space.kind == "data" and space.embed is None
    assert "no class column" in space.warnings[0]


# ---- stacked data ------------------------------------------------------------------------------


def test_stacked_modes_combine_the_channel_label_indices_by_hand() -> None:
    st = F.Stacked(3, 1, ("label0", "label1", "label2"), (3, 5, 7, 9))
    # Labels (5, 9, 3) are indices (1, 3, 0): 1·16 + 3·4 + 0 = 28; (9, 9, 9): 3·21 = 63.
    groups = pd.DataFrame({"label0": [5, 9], "label1": [9, 9], "label2": [3, 9]})
    idx = st.label_indices(groups)
    np.testing.assert_array_equal(idx, [[1, 3, 0], [3, 3, 3]])
    np.testing.assert_array_equal(st.modes(idx), [28, 63])
    assert st.n_modes == 64
    with pytest.raises(DataError, match="not one of"):
        st.label_indices(pd.DataFrame({"label0": [4], "label1": [5], "label2": [5]}))


def test_stacked_samples_are_labelled_per_channel() -> None:
    train, held = stacked_blobs(400, 0), stacked_blobs(300, 1)
    space = F.feature_space(held, train)
    clf = space.classifier
    assert clf is not None
    assert clf.task.shape == (1, SIZE, SIZE) and clf.task.outputs == (3, 5, 7, 9)
    assert space.accuracy is not None and space.accuracy > 0.9
    assert space.info["stacked_modes"] == 64
    assert space.labels is not None and space.embed is not None
    # Expected modes from the labels the data were built with: "mode" is Σ l_i·4^(2−i).
    truth = held.groups["mode"].to_numpy()
    by_hand = sum(
        np.searchsorted([3, 5, 7, 9], held.groups[f"label{i}"].to_numpy()) * 4 ** (2 - i)
        for i in range(3)
    )
    np.testing.assert_array_equal(truth, by_hand)
    assert np.mean(space.labels(held.X) == truth) > 0.9
    assert space.embed(held.X[:5]).shape == (5, 3 * F.FEATURE_DIM)
    ids, w = space.modes(held)  # type: ignore[misc]
    np.testing.assert_array_equal(ids, np.arange(64))
    np.testing.assert_allclose(w, np.full(64, 1 / 64))
    # A generator of one mode: one mode captured of 64; KL(p ‖ uniform) = log 64 for p a point.
    one = held.X[truth == 28][:20]
    e = Evaluator(held, train=train)(np.repeat(one, 5, axis=0))
    assert e.summary["modes_total"] == 64
    assert e.summary["modes_captured"] <= 3
    if e.summary["modes_captured"] == 1:
        assert e.summary["reverse_kl"] == pytest.approx(math.log(64))


def test_ceiling_of_real_stacked_samples() -> None:
    train, held = stacked_blobs(600, 0), stacked_blobs(400, 1)
    space = F.feature_space(held, train)
    c = F.ceiling(space, held, train, k=5)
    truth = held.groups["mode"].to_numpy()
    assert c["modes_total"] == 64
    assert c["mode_accuracy"] > 0.9
    # Read through a perfect classifier, the held-out set captures the modes it holds, with
    # KL(its mode shares ‖ uniform); the classifier's few mistakes move both a little.
    counts = np.bincount(truth, minlength=64)
    p = counts[counts > 0] / counts.sum()
    kl = float(np.sum(p * np.log(p * 64)))
    assert abs(c["modes_captured"] - np.count_nonzero(counts)) <= 2
    assert c["reverse_kl"] == pytest.approx(kl, abs=0.05)
    # Real against real: coverage near what k-NN balls give equal distributions.
    assert c["coverage"] == pytest.approx(c["expected_coverage"], abs=0.1)
    assert c["recall"] > 0.8 and c["precision"] > 0.8
    assert c["n_held"] == 400 and c["n_train"] == 600


# ---- a user's TorchScript extractor ------------------------------------------------------------


class _Project(torch.nn.Module):
    """Features [B, 3]: the mean of each image's top, middle and bottom thirds of rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.mean(dim=(1, 3))  # [B, H]
        return torch.stack([rows[:, :9].mean(1), rows[:, 9:19].mean(1), rows[:, 19:].mean(1)], 1)


class _Flat(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))  # [B]: one number, not [B, F]


class _RGB(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def _script(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # torch ≥ 2.10 deprecates TorchScript for torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_torchscript_features_replace_the_classifier(tmp_path: Path) -> None:
    train, held = blobs(200, 0), blobs(100, 1)
    path = _script(_Project(), tmp_path / "trunk.pt")
    runs = F.training_runs()
    space = F.feature_space(held, train, path)
    assert F.training_runs() == runs  # no classifier for a labelled, unstacked set
    assert space.kind == "torchscript" and space.info["features"] == str(path)
    assert space.embed is not None
    imgs = held.X.reshape(-1, SIZE, SIZE)
    by_hand = np.stack(
        [imgs[:, :9].mean((1, 2)), imgs[:, 9:19].mean((1, 2)), imgs[:, 19:].mean((1, 2))], 1
    )
    np.testing.assert_allclose(space.embed(held.X), by_hand, atol=1e-6)
    e = Evaluator(held, train=train, features=str(path))(held.X)
    assert e.summary["frechet_distance"] == pytest.approx(0.0, abs=1e-6)


def test_torchscript_on_stacked_data_keeps_the_classifier_modes(tmp_path: Path) -> None:
    train, held = stacked_blobs(300, 0), stacked_blobs(100, 1)

    class Means(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))  # [B, 3]

    path = _script(Means(), tmp_path / "means.pt")
    space = F.feature_space(held, train, path)
    assert space.kind == "torchscript" and space.classifier is not None
    assert space.embed is not None and space.embed(held.X[:4]).shape == (4, 3)
    assert space.labels is not None and space.accuracy is not None


def test_bad_feature_modules_are_data_errors_naming_the_key(tmp_path: Path) -> None:
    held = blobs(50, 1)
    with pytest.raises(DataError, match=r"evaluation\.features: no file at"):
        F.feature_space(held, held, tmp_path / "missing.pt")
    plain = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    with pytest.raises(DataError, match=r"evaluation\.features: .* is not a TorchScript module"):
        F.feature_space(held, held, plain)
    flat = _script(_Flat(), tmp_path / "flat.pt")
    with pytest.raises(DataError, match=r"features \[B, F\]; for B = 2 it returned \(2,\)"):
        F.feature_space(held, held, flat)
    rgb = _script(_RGB(), tmp_path / "rgb.pt")
    with pytest.raises(DataError, match=r"evaluation\.features: .* failed on images \[2, 1, 28"):
        F.feature_space(held, held, rgb)
    table = Dataset("t", np.zeros((5, 2), np.float32), pd.DataFrame({"g": [0] * 5}))
    with pytest.raises(DataError, match="needs image data"):
        F.feature_space(table, table, flat)


def test_the_scenario_checks_the_features_file_without_torch(tmp_path: Path) -> None:
    good = _script(_Project(), tmp_path / "trunk.pt")
    s = validate({"evaluation": {"features": str(good)}})
    assert s.evaluation.features == str(good)
    here = os.getcwd()
    try:
        os.chdir(tmp_path)  # a relative path from the command line: the current folder
        assert validate({"evaluation": {"features": "trunk.pt"}}).evaluation.features == str(good)
    finally:
        os.chdir(here)
    plain = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    for bad, why in ((tmp_path / "nope.pt", "no file at"), (plain, "not a TorchScript module")):
        with pytest.raises(ScenarioError, match=rf"evaluation\.features: .*{why}"):
            validate({"evaluation": {"features": str(bad)}})


# ---- the run folder ----------------------------------------------------------------------------


def test_env_json_gets_the_accuracy_and_low_accuracy_an_event(tmp_path: Path) -> None:
    train, held = blobs(400, 0, random_labels=True), blobs(100, 1, random_labels=True)
    space = F.feature_space(held, train)
    store = RunStore.create(tmp_path, "run", "name: run\n", {"engine": "centralized", "seed": 0})
    record_feature_space(store, space)
    env = json.loads((store.path / "env.json").read_text())
    assert env["engine"] == "centralized" and "versions" in env  # the rest is kept
    assert env["feature_space"]["accuracy"] == space.accuracy
    assert env["feature_space"]["kind"] == "classifier"
    assert env["feature_space"]["cache"] == str(space.classifier.cache_path)  # type: ignore[union-attr]
    events = [json.loads(x) for x in (store.path / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["warning"]
    assert "below 0.90" in events[0]["detail"]
    record_feature_space(store, space)  # a resumed run: written again, not warned twice
    assert len((store.path / "events.jsonl").read_text().splitlines()) == 1


def test_digits_keep_their_classifier() -> None:
    from fedgan.simulator.data import load_dataset
    from fedgan.simulator.data.digit_classifier import get_digit_classifier

    held = load_dataset("digits", 300, 0, {})
    space = F.feature_space(held, held)
    clf = get_digit_classifier()
    assert space.kind == "digit-mlp" and space.accuracy == clf.test_accuracy
    assert space.embed is not None
    np.testing.assert_array_equal(space.embed(held.X), clf.features(held.X))


def test_stacks_of_a_digit_subset_number_modes_by_label_index() -> None:
    """The 8×8 digits keep the digit MLP; a stack of digits 1, 4, 7 two deep has 9 modes,
    3·l_0 + l_1 with l_i the digit's index among (1, 4, 7), all equally likely."""
    from fedgan.simulator.data import load_dataset

    params = {"base": "digits", "base_params": {"classes": [1, 4, 7]}, "k": 2}
    ds = load_dataset("stacked", 600, 0, params)
    space = F.feature_space(ds, ds)
    assert space.kind == "digit-mlp" and space.labels is not None
    ids, w = space.modes(ds)  # type: ignore[misc]
    np.testing.assert_array_equal(ids, np.arange(9))
    np.testing.assert_allclose(w, np.full(9, 1 / 9))
    index = {1: 0, 4: 1, 7: 2}
    by_hand = [3 * index[a] + index[b] for a, b in ds.groups[["label0", "label1"]].to_numpy()]
    assert np.mean(space.labels(ds.X) == np.array(by_hand)) > 0.9
    # A digit outside the stack's labels is off support: the channels of a stack of 0s.
    zeros = load_dataset("digits", 50, 0, {"classes": [0]}).X
    assert (space.labels(np.concatenate([zeros, zeros], axis=1)) == -1).mean() > 0.9


def test_stacked_digits_keep_their_held_out_mode_shares() -> None:
    from fedgan.simulator.data import load_dataset

    ds = load_dataset("stacked_digits", 300, 0, {})
    space = F.feature_space(ds, ds)
    ids, w = space.modes(ds)  # type: ignore[misc]
    shares = ds.groups["mode"].value_counts(normalize=True).sort_index()
    np.testing.assert_array_equal(ids, shares.index.to_numpy())
    np.testing.assert_allclose(w, shares.to_numpy())


def test_describe_says_what_embeds_and_the_accuracy() -> None:
    info = {"kind": "classifier", "accuracy": 0.9861, "accuracy_of": "class accuracy on x"}
    assert F.describe(info) == (
        "feature space: a conv classifier trained on the training split; accuracy 0.986 "
        "(class accuracy on x)"
    )
    assert F.describe({"kind": "data"}) is None
    assert F.describe({"kind": "torchscript", "features": "/m.pt"}) == (
        "feature space: /m.pt (evaluation.features)"
    )


def test_a_training_set_is_hashed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    train, held = blobs(200, 0), blobs(50, 1)
    first = F.feature_space(held, train, epochs=2)
    calls: list[int] = []
    real_key = F.cache_key
    monkeypatch.setattr(F, "cache_key", lambda *a: calls.append(1) or real_key(*a))
    again = F.feature_space(held.subset(np.arange(20)), train, epochs=2)  # another held-out set
    assert calls == [] and again.classifier is first.classifier
    F.feature_space(held, Dataset("blobs", train.X.copy(), train.groups, image_shape=(1, 28, 28)))
    assert calls == [1]  # a new training set is hashed


def test_preflight_problems_of_the_features_file(tmp_path: Path) -> None:
    from fedgan.simulator.evaluate import feature_problems

    held = blobs(30, 1)
    good = _script(_Project(), tmp_path / "trunk.pt")
    assert F.check_features(good, held) == []
    (problem,) = F.check_features(_script(_Flat(), tmp_path / "flat.pt"), held)
    assert problem.startswith("evaluation.features: ") and "[B, F]" in problem
    # On 8×8 digits the bottom third of 28 rows is empty: its mean is NaN, which is refused.
    s = validate({"data": {"dataset": "digits"}, "evaluation": {"features": str(good)}})
    (problem,) = feature_problems(s)
    assert problem.endswith("returned non-finite features")

    class Stats(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))], 1)

    stats = _script(Stats(), tmp_path / "stats.pt")
    s = validate({"data": {"dataset": "digits"}, "evaluation": {"features": str(stats)}})
    assert feature_problems(s) == []
    rgb = _script(_RGB(), tmp_path / "rgb.pt")
    s = validate({"data": {"dataset": "digits"}, "evaluation": {"features": str(rgb)}})
    (problem,) = feature_problems(s)
    assert "failed on images [2, 1, 8, 8]" in problem


def test_a_centralized_run_on_28px_digits_records_its_feature_space(tmp_path: Path) -> None:
    from fedgan.simulator.centralized import run_centralized

    s = validate(
        {
            "name": "d28",
            "data": {"dataset": "digits", "n_samples": 400, "params": {"size": 28}},
            "gan": {
                "generator": {"kind": "dcgan", "widths": [4, 8]},
                "critic": {"kind": "dcgan", "widths": [4, 8]},
                "batch_size": 16,
            },
            "train": {"steps": 1},
            "evaluation": {"every": 1, "n_samples": 50, "min_group_size": 2},
        }
    )
    result = run_centralized(s, tmp_path)
    env = json.loads((result.path / "env.json").read_text())
    fs = env["feature_space"]
    assert fs["kind"] == "classifier" and fs["outputs"] == 10
    assert 0.0 <= fs["accuracy"] <= 1.0 and fs["n_fit"] + fs["n_val"] == 320  # the train split
    m = result.metrics
    assert m.loc[m["metric"] == "modes_total", "value"].tolist() == [10.0]
    assert (m["metric"] == "frechet_distance").sum() == 1
