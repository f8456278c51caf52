"""The image readers on small files written here: IDX (plain and gzip), .npy/.npz layouts,
CIFAR batches through the restricted unpickler, PNG folders with attribute files."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from fedgan.simulator.data import DataError
from fedgan.simulator.data import image_formats as fmt
from PIL import Image


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file by LeCun's spec, written with struct: 0, 0, type, ndim, dims (>u4), data."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    head = struct.pack(">BBBB", 0, 0, type_code, arr.ndim)
    head += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return head + arr.astype(dtype).tobytes()


def hand_images(n: int = 5, h: int = 4, w: int = 6) -> np.ndarray:
    """uint8 [n, h, w] with pixel (i, r, c) = (40·i + 7·r + 3·c) mod 256: every pixel known."""
    i, r, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    return ((40 * i + 7 * r + 3 * c) % 256).astype(np.uint8)


# -- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_pair_reads_pixels_and_labels(tmp_path: Path, gz: bool) -> None:
    x, y = hand_images(), np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    xi, yi = tmp_path / f"t-images-idx3-ubyte{suffix}", tmp_path / f"t-labels-idx1-ubyte{suffix}"
    for p, a in ((xi, x), (yi, y)):
        data = idx_bytes(a)
        p.write_bytes(gzip.compress(data) if gz else data)
    assert fmt.detect_format(xi) == "idx"
    raw = fmt.read_idx_images(xi, yi)
    assert raw.pixels.shape == (5, 1, 4, 6) and raw.pixels.dtype == np.uint8
    np.testing.assert_array_equal(raw.pixels[:, 0], x)
    assert raw.pixels[2, 0, 3, 5] == (80 + 21 + 15) % 256  # one pixel by hand: 116
    np.testing.assert_array_equal(raw.columns["label"], [3, 1, 4, 1, 5])
    assert raw.columns["label"].dtype == np.int64


def test_idx_other_types_are_read_by_their_type_byte(tmp_path: Path) -> None:
    p = tmp_path / "labels-idx1"
    p.write_bytes(idx_bytes(np.array([70000, -2, 9]), 0x0C))  # int32, big-endian
    np.testing.assert_array_equal(fmt.read_idx(p, 1, "labels"), [70000, -2, 9])


def test_idx_wrong_magic_names_file_and_expected_number(tmp_path: Path) -> None:
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
    with pytest.raises(DataError, match=r"x-idx3-ubyte.*0x12340803.*expected 0x00000803"):
        fmt.read_idx(p, 3, "path")


def test_idx_labels_given_as_images_gets_a_hint(tmp_path: Path) -> None:
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"0x00000801.*expected 0x00000803.*labels file"):
        fmt.read_idx(p, 3, "path")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path: Path, gz: bool) -> None:
    data = idx_bytes(hand_images())
    p = tmp_path / "cut-idx3-ubyte"
    if gz:
        p.write_bytes(gzip.compress(data)[:-12])  # the stream's end cut off
        needle = r"cut-idx3-ubyte.*truncated gzip"
    else:
        p.write_bytes(data[:-7])  # 5·4·6 = 120 data bytes expected, 113 present
        needle = r"cut-idx3-ubyte.*truncated.*5×4×6.*120 bytes.*113"
    with pytest.raises(DataError, match=needle):
        fmt.read_idx(p, 3, "path")
    p.write_bytes(data[:10])  # inside the header (16 bytes for 3 dims)
    with pytest.raises(DataError, match="header needs 16 bytes"):
        fmt.read_idx(p, 3, "path")


def test_idx_trailing_bytes_refused(tmp_path: Path) -> None:
    p = tmp_path / "long-idx3-ubyte"
    p.write_bytes(idx_bytes(hand_images()) + b"\0\0\0")
    with pytest.raises(DataError, match="3 bytes too long"):
        fmt.read_idx(p, 3, "path")


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    xi, yi = tmp_path / "a-idx3-ubyte", tmp_path / "a-idx1-ubyte"
    xi.write_bytes(idx_bytes(hand_images(n=5)))
    yi.write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(DataError, match=r"a-idx1-ubyte.*4 labels.*a-idx3-ubyte.*5 images"):
        fmt.read_idx_images(xi, yi)


# -- npy / npz -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "to_nchw"),
    [
        ((5, 4, 6), lambda a: a[:, None]),
        ((5, 4, 6, 3), lambda a: a.transpose(0, 3, 1, 2)),
        ((5, 4, 6, 1), lambda a: a.transpose(0, 3, 1, 2)),
        ((5, 3, 4, 6), lambda a: a),
        ((5, 1, 4, 6), lambda a: a),
    ],
)
def test_npz_layouts(tmp_path: Path, shape: tuple[int, ...], to_nchw: object) -> None:
    a = (np.arange(np.prod(shape)) % 251).astype(np.uint8).reshape(shape)
    p = tmp_path / "x.npz"
    np.savez(p, x=a, y=np.arange(5) % 2)
    raw = fmt.read_array_file(p, "npz", "x", "y", None)
    np.testing.assert_array_equal(raw.pixels, to_nchw(a))  # type: ignore[operator]
    np.testing.assert_array_equal(raw.columns["label"], [0, 1, 0, 1, 0])


def test_npy_and_ambiguous_layout(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((4, 3, 5, 3)).astype(np.float32)
    p = tmp_path / "x.npy"
    np.save(p, a)
    assert fmt.detect_format(p) == "npy"
    with pytest.raises(DataError, match=r"ambiguous.*layout: NHWC or layout: NCHW"):
        fmt.read_array_file(p, "npy", "x", "y", None)
    np.testing.assert_array_equal(fmt.read_array_file(p, "npy", "x", "y", "NCHW").pixels, a)
    nhwc = fmt.read_array_file(p, "npy", "x", "y", "NHWC").pixels
    np.testing.assert_array_equal(nhwc[:, 2], a[..., 2])  # channel 2 = last axis index 2


def test_npz_problems(tmp_path: Path) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"no array 'x'.*\['images'\]"):
        fmt.read_array_file(p, "npz", "x", "y", None)
    np.savez(p, x=np.zeros((3, 4, 4), np.uint8), y=np.arange(4))
    with pytest.raises(DataError, match=r"4 labels.*3 images"):
        fmt.read_array_file(p, "npz", "x", "y", None)
    np.savez(p, x=np.zeros((3, 4, 4, 5), np.uint8))
    with pytest.raises(DataError, match="no channel axis"):
        fmt.read_array_file(p, "npz", "x", "y", None)
    np.savez(p, x=np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match="pickled Python objects"):
        fmt.read_array_file(p, "npz", "x", "y", None)
    p.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"bad\.npz.*unreadable"):
        fmt.read_array_file(p, "npz", "x", "y", None)


def test_truncated_npy_and_npz(tmp_path: Path) -> None:
    a = np.zeros((10, 4, 4), np.uint8)
    for name in ("t.npy", "t.npz"):
        p = tmp_path / name
        np.save(p, a) if name.endswith("y") else np.savez(p, x=a)
        p.write_bytes(p.read_bytes()[:-40])
        with pytest.raises(DataError, match=r"t\.np.*(truncated|unreadable)"):
            fmt.read_array_file(p, p.suffix[1:], "x", "y", None)


# -- CIFAR ------------------------------------------------------------------------------------


def cifar_batch(n: int, side: int, offset: int) -> tuple[dict[bytes, object], np.ndarray]:
    """A CIFAR-style batch: rows of R plane, G plane, B plane (side×side each)."""
    rows = ((np.arange(n * 3 * side * side) + offset) % 256).astype(np.uint8)
    rows = rows.reshape(n, 3 * side * side)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [(i + offset) % 10 for i in range(n)],
        b"data": rows,
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    return batch, rows


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_folder_of_batches(tmp_path: Path, protocol: int) -> None:
    (tmp_path / "cifar").mkdir()
    b1, r1 = cifar_batch(3, 32, 0)
    b2, r2 = cifar_batch(2, 32, 17)
    for name, b in (("data_batch_1", b1), ("data_batch_2", b2), ("test_batch", b1)):
        (tmp_path / "cifar" / name).write_bytes(pickle.dumps(b, protocol=protocol))
    assert fmt.detect_format(tmp_path / "cifar") == "cifar"
    raw = fmt.read_cifar(tmp_path / "cifar")
    assert raw.pixels.shape == (5, 3, 32, 32) and raw.pixels.dtype == np.uint8
    assert [Path(f).name for f in raw.files] == ["data_batch_1", "data_batch_2"]
    # Image 1, channel G (1), row 2, column 5 is byte 1024 + 2·32 + 5 of row 1.
    assert raw.pixels[1, 1, 2, 5] == r1[1, 1024 + 64 + 5]
    assert raw.pixels[4, 2, 31, 31] == r2[1, 3071]
    np.testing.assert_array_equal(raw.columns["label"], [0, 1, 2, 7, 8])


def test_cifar_python2_style_batch_and_other_sides(tmp_path: Path) -> None:
    # Python 2 wrote str keys as bytes and plain lists; the side is any s with rows of 3·s².
    batch, rows = cifar_batch(4, 8, 5)
    batch[b"labels"] = np.asarray(batch[b"labels"], dtype=np.int64)
    p = tmp_path / "one_batch"
    p.write_bytes(pickle.dumps(batch, protocol=2))
    raw = fmt.read_cifar(p)
    assert raw.pixels.shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(raw.pixels.reshape(4, -1), rows)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1.*refused.*system"):
        fmt.read_cifar(p)
    assert not marker.exists()
    # The same with a harmless-looking numpy global that is not an array builder.
    p.write_bytes(pickle.dumps({b"data": np.load}, protocol=4))
    with pytest.raises(DataError, match="refused"):
        fmt.load_restricted_pickle(p)


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    # protocol 2 pickles bytes as _codecs.encode(str, "latin1"); another codec is refused.
    crafted = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x06\x00\x00\x00base64\x86R."
    p = tmp_path / "b"
    p.write_bytes(crafted)
    with pytest.raises(DataError, match="refused"):
        fmt.load_restricted_pickle(p)


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    batch, _ = cifar_batch(3, 32, 0)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps(batch, protocol=2)[:-500])
    with pytest.raises(DataError, match=r"data_batch_1.*unreadable pickle"):
        fmt.read_cifar(p)


# -- folders and attribute files ---------------------------------------------------------------


# CelebA's layout: a count, the names (CelebA's own line ends in a space), runs of spaces.
CELEBA = "3\nMale Young  Smiling \nb.png   1 -1  1\na.png  -1  1  1\nc.png   1  1 -1\n"


def test_celeba_attribute_text_runs_of_spaces(tmp_path: Path) -> None:
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text(CELEBA)
    names, cols, _ = fmt.read_attributes(p)
    assert names == ["b.png", "a.png", "c.png"]
    assert list(cols) == ["Male", "Young", "Smiling"]
    np.testing.assert_array_equal(cols["Male"], [1, 0, 1])  # ±1 → 1/0
    np.testing.assert_array_equal(cols["Young"], [0, 1, 1])
    np.testing.assert_array_equal(cols["Smiling"], [1, 1, 0])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("4\nMale Young\nb.png 1 -1\n", "says 4 images but 1 rows"),
        ("1\nMale Young\nb.png 1\n", "line 3 has 2 fields, expected 3"),
        ("1\nMale Young\nb.png 1 x\n", "line 3 has a non-integer"),
        ("Male\nb.png 1\n", "line 1 .* not a count"),
    ],
)
def test_celeba_attribute_text_errors(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "attr.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=needle):
        fmt.read_attributes(p)


def test_attribute_csv(tmp_path: Path) -> None:
    p = tmp_path / "attr.csv"
    p.write_text("image_id,Male,hair,age\nx.png,-1,brown,3\ny.png,1,black,5\n")
    names, cols, info = fmt.read_attributes(p)
    assert names == ["x.png", "y.png"]
    np.testing.assert_array_equal(cols["Male"], [0, 1])
    np.testing.assert_array_equal(cols["hair"], [1, 0])  # sorted: black 0, brown 1
    np.testing.assert_array_equal(cols["age"], [3, 5])
    assert info["categories"] == {"hair": ["black", "brown"]}


def test_folder_rows_naming_missing_images(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    p = tmp_path / "attr.txt"
    p.write_text(CELEBA)
    with pytest.raises(DataError, match=r"names 2 image\(s\) not in folder.*b\.png"):
        fmt.list_folder(tmp_path, p)


def test_folder_of_class_subfolders(tmp_path: Path) -> None:
    for cls, n in (("cat", 2), ("dog", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(np.full((3, 3), i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    listing = fmt.list_folder(tmp_path, None)
    assert listing.names == ["cat/0.png", "cat/1.png", "dog/0.png"]
    np.testing.assert_array_equal(listing.columns["label"], [0, 0, 1])
    assert listing.info["label_names"] == ["cat", "dog"]


def test_corrupt_and_truncated_png_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 5)
    listing = fmt.list_folder(tmp_path, None)
    with pytest.raises(DataError, match=r"junk\.png.*unreadable image"):
        fmt.decode_folder(listing, None, None, None, None, cache=False)
    (tmp_path / "junk.png").unlink()
    # A valid header whose pixel data are cut off: found only when the pixels are decoded.
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:45])
    listing = fmt.list_folder(tmp_path, None)
    with pytest.raises(DataError, match=r"cut\.png.*unreadable image"):
        fmt.decode_folder(listing, None, None, None, None, cache=False)


def test_ragged_sizes_need_size(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "b.png")
    listing = fmt.list_folder(tmp_path, None)
    with pytest.raises(DataError, match=r"different sizes.*a\.png.*4×4.*b\.png.*4×5.*size:"):
        fmt.decode_folder(listing, None, None, None, None, cache=False)
    pix, _ = fmt.decode_folder(listing, None, None, (3, 3), None, cache=False)
    assert pix.shape == (2, 1, 3, 3)


# -- transforms --------------------------------------------------------------------------------


def test_resize_matches_torch_bilinear() -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).random((3, 2, 6, 9)).astype(np.float32)
    for hw, anti in (((13, 20), False), ((3, 4), True)):
        got = fmt.resize(x, hw)
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=hw, mode="bilinear", align_corners=False, antialias=anti
        ).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_center_crop_and_channels() -> None:
    x = np.arange(2 * 3 * 6 * 8, dtype=np.float32).reshape(2, 3, 6, 8)
    np.testing.assert_array_equal(fmt.center_crop(x, (4, 4), "w"), x[:, :, 1:5, 2:6])
    np.testing.assert_array_equal(fmt.center_crop(x, (3, 5), "w"), x[:, :, 1:4, 1:6])
    grey = fmt.to_channels(x, 1, "w")
    np.testing.assert_allclose(
        grey[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2], rtol=1e-6
    )
    np.testing.assert_array_equal(fmt.to_channels(x[:, :1], 3, "w"), np.repeat(x[:, :1], 3, 1))
    with pytest.raises(DataError, match="larger than"):
        fmt.center_crop(x, (7, 2), "w")
