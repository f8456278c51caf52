"""The `images` dataset end to end on files written here: scaling, groups, subsets, options,
the folder cache, errors, and a 60,000-image IDX file loaded in seconds."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
from fedgan.simulator.data import DataError, load_dataset
from fedgan.simulator.data.registry import path_params
from PIL import Image

from tests.data.test_image_formats import CELEBA, hand_images, idx_bytes


def scaled(u8: np.ndarray) -> np.ndarray:
    """The documented scaling of bytes, by hand in float64: p / 127.5 − 1."""
    return u8.astype(np.float64) / 127.5 - 1.0


@pytest.fixture
def idx_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    x, y = hand_images(n=6, h=5, w=7), np.array([2, 0, 2, 1, 0, 2], dtype=np.uint8)
    xi, yi = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    xi.write_bytes(gzip.compress(idx_bytes(x)))
    yi.write_bytes(gzip.compress(idx_bytes(y)))
    return xi, yi, x, y


def test_path_parameters_resolve_against_the_scenario_file() -> None:
    assert set(path_params("images")) == {"path", "labels", "attributes"}


def test_idx_dataset(idx_pair: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    xi, yi, x, y = idx_pair
    ds = load_dataset("images", None, 0, {"path": str(xi), "labels": str(yi)})
    assert ds.X.shape == (6, 35) and ds.X.dtype == np.float32 and ds.image_shape == (1, 5, 7)
    np.testing.assert_allclose(ds.X, scaled(x.reshape(6, 35)), atol=1e-6)
    assert list(ds.groups.columns) == ["label"] and ds.groups["label"].dtype == np.int64
    np.testing.assert_array_equal(ds.labels(), [2, 0, 2, 1, 0, 2])
    assert ds.info["format"] == "idx" and ds.info["original_shape"] == [1, 5, 7]
    assert "127.5" in ds.info["pixel_scaling"]
    assert ds.info["n_images_in_file"] == 6


def test_bytes_0_and_255_map_to_the_ends(tmp_path: Path) -> None:
    x = np.array([[[0, 255], [128, 127]]], dtype=np.uint8)
    p = tmp_path / "a-idx3-ubyte"
    p.write_bytes(idx_bytes(x))
    ds = load_dataset("images", None, 0, {"path": str(p)})
    assert ds.X[0, 0] == -1.0 and ds.X[0, 1] == 1.0
    assert list(ds.groups.columns) == ["all"] and set(ds.labels()) == {0}


def test_emnist_transpose_and_subset(idx_pair: tuple[Path, Path, np.ndarray, np.ndarray]) -> None:
    xi, yi, x, y = idx_pair
    ds = load_dataset("images", 4, 3, {"path": str(xi), "labels": str(yi), "transpose": True})
    assert ds.image_shape == (1, 7, 5) and ds.n == 4
    # Each row is the transposed image of its file row (the images differ pairwise), labels
    # along; rows kept in file order.
    rows = [
        next(i for i in range(6) if np.allclose(ds.X[r], scaled(x[i].T).ravel())) for r in range(4)
    ]
    assert rows == sorted(rows) and len(set(rows)) == 4
    np.testing.assert_array_equal(ds.labels(), y[rows])
    again = load_dataset("images", 4, 3, {"path": str(xi), "labels": str(yi), "transpose": True})
    np.testing.assert_array_equal(again.X, ds.X)
    with pytest.raises(DataError, match=r"n_samples=7 but .* holds 6 images"):
        load_dataset("images", 7, 0, {"path": str(xi)})


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((4, 5, 6), None), ((4, 5, 6, 3), None), ((4, 3, 5, 6), None), ((4, 3, 5, 3), "NHWC")],
)
def test_npz_and_npy_images(tmp_path: Path, shape: tuple[int, ...], layout: str | None) -> None:
    a = (np.arange(np.prod(shape)) * 7 % 256).astype(np.uint8).reshape(shape)
    nchw = (
        a[:, None] if a.ndim == 3 else (a.transpose(0, 3, 1, 2) if shape[1] != 3 or layout else a)
    )
    params: dict[str, object] = {"path": str(tmp_path / "x.npz")}
    if layout:
        params["layout"] = layout
    np.savez(tmp_path / "x.npz", x=a, y=np.array([5, 6, 5, 7]))
    ds = load_dataset("images", None, 0, params)
    assert ds.image_shape == nchw.shape[1:]
    np.testing.assert_allclose(ds.X, scaled(nchw.reshape(4, -1)), atol=1e-6)
    np.testing.assert_array_equal(ds.labels("label"), [5, 6, 5, 7])
    np.save(tmp_path / "x.npy", a)
    ds = load_dataset("images", None, 0, {**params, "path": str(tmp_path / "x.npy")})
    np.testing.assert_allclose(ds.X, scaled(nchw.reshape(4, -1)), atol=1e-6)
    assert list(ds.groups.columns) == ["all"]


def test_float_pixels(tmp_path: Path) -> None:
    unit = np.array([[[0.0, 0.25], [0.5, 1.0]]], dtype=np.float64)
    np.save(tmp_path / "u.npy", unit)
    ds = load_dataset("images", None, 0, {"path": str(tmp_path / "u.npy")})
    np.testing.assert_allclose(ds.X[0], [-1.0, -0.5, 0.0, 1.0], atol=1e-7)
    signed = np.array([[[-1.0, -0.2], [0.3, 0.9]]], dtype=np.float32)
    np.save(tmp_path / "s.npy", signed)
    ds = load_dataset("images", None, 0, {"path": str(tmp_path / "s.npy")})
    np.testing.assert_allclose(ds.X[0], [-1.0, -0.2, 0.3, 0.9], atol=1e-7)
    np.save(tmp_path / "b.npy", unit * 255)
    with pytest.raises(DataError, match=r"\[0, 1\] or \[−1, 1\], found \[0, 255\].*uint8"):
        load_dataset("images", None, 0, {"path": str(tmp_path / "b.npy")})


def test_resize_and_channels_on_arrays(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(2).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", x=a)
    ds = load_dataset(
        "images", None, 0, {"path": str(tmp_path / "c.npz"), "size": 12, "channels": 1}
    )
    assert ds.image_shape == (1, 12, 12)
    grey = (a.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[:, None]  # [3, 1, 8, 8]
    want = torch.nn.functional.interpolate(
        torch.from_numpy(grey), size=(12, 12), mode="bilinear", align_corners=False
    ).numpy()
    np.testing.assert_allclose(ds.X, scaled(want.reshape(3, -1)), atol=1e-5)
    ds = load_dataset("images", None, 0, {"path": str(tmp_path / "c.npz"), "crop": [4, 6]})
    assert ds.image_shape == (3, 4, 6)
    np.testing.assert_allclose(
        ds.X, scaled(a.transpose(0, 3, 1, 2)[:, :, 2:6, 1:7].reshape(3, -1)), atol=1e-6
    )


def test_options_that_do_not_apply_are_refused(
    tmp_path: Path, idx_pair: tuple[Path, Path, np.ndarray, np.ndarray]
) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="labels .* applies to IDX") as e:
        load_dataset("images", None, 0, {"path": str(tmp_path / "x.npz"), "labels": "y"})
    assert e.value.key == "labels"
    with pytest.raises(DataError, match="attributes .* applies to a folder"):
        load_dataset("images", None, 0, {"path": str(idx_pair[0]), "attributes": "a.txt"})
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        load_dataset("images", None, 0, {"path": str(idx_pair[0]), "channels": 2})
    with pytest.raises(DataError, match=r"no group column\(s\) \['Male'\]"):
        load_dataset("images", None, 0, {"path": str(idx_pair[0]), "columns": ["Male"]})
    with pytest.raises(DataError, match="no such file"):
        load_dataset("images", None, 0, {"path": str(tmp_path / "nope.npz")})


def _celeba_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Three 6×8 RGB PNGs a, b, c (pixel values known) and the CelebA attribute file."""
    root = tmp_path / "img"
    root.mkdir()
    rng = np.random.default_rng(0)
    pix = {n: rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8) for n in "abc"}
    for n, arr in pix.items():
        Image.fromarray(arr, "RGB").save(root / f"{n}.png")
    (tmp_path / "list_attr_celeba.txt").write_text(CELEBA)
    return root, pix


def test_png_folder_with_celeba_attributes(tmp_path: Path) -> None:
    root, pix = _celeba_folder(tmp_path)
    params = {"path": str(root), "attributes": str(tmp_path / "list_attr_celeba.txt")}
    ds = load_dataset("images", None, 0, params)
    assert ds.image_shape == (3, 6, 8) and ds.n == 3
    assert list(ds.groups.columns) == ["Male", "Young", "Smiling"]
    # Rows in the attribute file's order: b, a, c.
    for r, n in enumerate("bac"):
        np.testing.assert_allclose(ds.X[r], scaled(pix[n].transpose(2, 0, 1).ravel()), atol=1e-6)
    np.testing.assert_array_equal(ds.groups.to_numpy(), [[1, 0, 1], [0, 1, 1], [1, 1, 0]])
    assert ds.info["format"] == "folder" and ds.info["from_cache"] is False
    # Decoded once: the second load reads the cache, with the same pixels.
    again = load_dataset("images", None, 0, params)
    assert again.info["from_cache"] is True and Path(again.info["cache_file"]).is_file()
    np.testing.assert_array_equal(again.X, ds.X)
    # A subset of attribute columns, in the order given.
    sub = load_dataset("images", None, 0, {**params, "columns": ["Smiling", "Male"]})
    assert list(sub.groups.columns) == ["Smiling", "Male"]


def test_folder_cache_follows_files_and_options(tmp_path: Path) -> None:
    root, pix = _celeba_folder(tmp_path)
    params = {"path": str(root), "attributes": str(tmp_path / "list_attr_celeba.txt")}
    first = load_dataset("images", None, 0, params)
    # A changed image (new size on disk and time) gives a new cache entry, new pixels.
    new = np.zeros((6, 8, 3), np.uint8)
    Image.fromarray(new, "RGB").save(root / "a.png")
    os.utime(root / "a.png", ns=(1, 1))
    second = load_dataset("images", None, 0, params)
    assert (
        second.info["from_cache"] is False and second.info["cache_file"] != first.info["cache_file"]
    )
    np.testing.assert_array_equal(second.X[1], -np.ones(144, np.float32))
    # Crop, size and channels are part of the key and are applied.
    opts = {**params, "crop": [4, 4], "size": 2, "channels": 1}
    small = load_dataset("images", None, 0, opts)
    assert small.image_shape == (1, 2, 2) and small.info["from_cache"] is False
    # b's centre 4×4 (rows 1..4, cols 2..5), grey, then shrunk to 2×2 by an antialiased
    # bilinear filter (torch's as the reference), within the uint8 roundings of each step.
    torch = pytest.importorskip("torch")
    g = pix["b"].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    want = torch.nn.functional.interpolate(
        torch.from_numpy(g[1:5, 2:6][None, None]),
        size=(2, 2),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    ).numpy()
    np.testing.assert_allclose((small.X[0] + 1) * 127.5, want.ravel(), atol=1.5)


def test_png_folder_with_csv_and_greyscale(tmp_path: Path) -> None:
    root = tmp_path / "g"
    root.mkdir()
    arrs = [np.full((4, 4), v, np.uint8) for v in (0, 51, 255)]
    for i, a in enumerate(arrs):
        Image.fromarray(a, "L").save(root / f"{i}.png")
    (tmp_path / "attr.csv").write_text("file,smile,glasses\n2.png,1,0\n0.png,-1,1\n")
    ds = load_dataset(
        "images", None, 0, {"path": str(root), "attributes": str(tmp_path / "attr.csv")}
    )
    assert ds.image_shape == (1, 4, 4) and ds.n == 2  # 1.png is not in the table: left out
    np.testing.assert_array_equal(ds.X[:, 0], [1.0, -1.0])
    np.testing.assert_array_equal(ds.labels("smile"), [1, 0])
    np.testing.assert_array_equal(ds.labels("glasses"), [0, 1])
    rgb = load_dataset(
        "images",
        None,
        0,
        {"path": str(root), "attributes": str(tmp_path / "attr.csv"), "channels": 3},
    )
    assert rgb.image_shape == (3, 4, 4)


def test_folder_without_attributes(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    for i in range(3):
        Image.fromarray(np.full((2, 3, 3), 60 * i, np.uint8), "RGB").save(root / f"{i}.jpg")
    ds = load_dataset("images", None, 0, {"path": str(root)})
    assert ds.image_shape == (3, 2, 3) and list(ds.groups.columns) == ["all"]
    # JPEG is lossy, but a flat colour survives within a unit or two.
    np.testing.assert_allclose((ds.X[:, 0] + 1) * 127.5, [0, 60, 120], atol=2)


def test_folder_missing_images_and_bad_png(tmp_path: Path) -> None:
    root, _ = _celeba_folder(tmp_path)
    (root / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    params = {"path": str(root), "attributes": str(tmp_path / "list_attr_celeba.txt")}
    with pytest.raises(DataError, match=r"c\.png.*unreadable image"):
        load_dataset("images", None, 0, params)
    (root / "c.png").unlink()
    with pytest.raises(DataError, match=r"names 1 image\(s\) not in folder.*c\.png") as e:
        load_dataset("images", None, 0, params)
    assert e.value.key == "attributes"


def test_cifar_dataset(tmp_path: Path) -> None:
    import pickle

    from tests.data.test_image_formats import cifar_batch

    batch, rows = cifar_batch(4, 32, 9)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    ds = load_dataset("images", None, 0, {"path": str(tmp_path)})
    assert ds.image_shape == (3, 32, 32) and ds.info["format"] == "cifar"
    np.testing.assert_allclose(ds.X, scaled(rows), atol=1e-6)  # R, G, B planes = C·H·W order
    np.testing.assert_array_equal(ds.labels(), [9, 0, 1, 2])


def test_sixty_thousand_mnist_sized_images_load_in_seconds(tmp_path: Path) -> None:
    n = 60_000
    x = np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = (np.arange(n) % 10).astype(np.uint8)
    (tmp_path / "i-idx3-ubyte").write_bytes(idx_bytes(x))
    (tmp_path / "l-idx1-ubyte").write_bytes(idx_bytes(y))
    t = time.perf_counter()
    ds = load_dataset(
        "images",
        None,
        0,
        {"path": str(tmp_path / "i-idx3-ubyte"), "labels": str(tmp_path / "l-idx1-ubyte")},
    )
    took = time.perf_counter() - t
    assert ds.X.shape == (n, 784) and ds.X.dtype == np.float32
    assert took < 10.0, f"{took:.1f} s"
    np.testing.assert_allclose(ds.X[12345], scaled(x[12345].ravel()), atol=1e-6)
    assert np.bincount(ds.labels()).tolist() == [6000] * 10


def test_cifar100_folder_fine_and_coarse_labels(tmp_path: Path) -> None:
    import pickle

    from tests.data.test_image_formats import cifar_batch

    batch, rows = cifar_batch(3, 32, 0)
    del batch[b"labels"]
    batch[b"fine_labels"], batch[b"coarse_labels"] = [55, 3, 99], [1, 0, 19]
    (tmp_path / "train").write_bytes(pickle.dumps(batch, protocol=2))
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"x"]}, protocol=2))
    ds = load_dataset("images", None, 0, {"path": str(tmp_path)})
    assert list(ds.groups.columns) == ["label", "coarse_label"]
    np.testing.assert_array_equal(ds.labels("label"), [55, 3, 99])
    np.testing.assert_array_equal(ds.labels("coarse_label"), [1, 0, 19])
    np.testing.assert_allclose(ds.X, scaled(rows), atol=1e-6)


def test_folder_subset_before_any_cache_and_mixed_colour(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(8):
        Image.fromarray(np.full((3, 3), 10 * i, np.uint8), "L").save(root / f"g{i}.png")
    colour = np.zeros((3, 3, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour, "RGB").save(root / "z.png")
    # A dry run's few rows: decoded alone, no cache written; one colour image → 3 channels.
    few = load_dataset("images", 2, 1, {"path": str(root)})
    assert few.image_shape == (3, 3, 3) and few.info["from_cache"] is False
    assert not Path(few.info["cache_file"]).exists()
    full = load_dataset("images", None, 0, {"path": str(root)})
    assert Path(full.info["cache_file"]).is_file()
    # Same seed, same rows, same pixels, whichever way they were decoded.
    again = load_dataset("images", 2, 1, {"path": str(root)})
    assert again.info["from_cache"] is True
    np.testing.assert_array_equal(again.X, few.X)
    # Grey images repeated into R, G, B; the colour one kept (R 200, G 0, B 0).
    np.testing.assert_allclose((full.X[1].reshape(3, 9) + 1) * 127.5, 10, atol=1e-4)
    np.testing.assert_allclose((full.X[8].reshape(3, 9)[:, 0] + 1) * 127.5, [200, 0, 0], atol=1e-4)
