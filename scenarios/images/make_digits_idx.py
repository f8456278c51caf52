"""Write scikit-learn's bundled 8×8 digits as MNIST-format files (IDX, gzipped), upsampled to
28×28, so `scenarios/images/mnist.yaml` runs out of the box. Point `data.params.path` and
`data.params.labels` at your own MNIST / Fashion-MNIST / EMNIST / KMNIST files instead.

    python scenarios/images/make_digits_idx.py [OUT_DIR]

The IDX layout (LeCun et al.'s MNIST page): a big-endian header — two zero bytes, the element
type (0x08: unsigned byte), the number of dimensions — then each dimension as a big-endian
uint32, then the values row-major. Images: magic 0x00000803, dims (N, 28, 28); labels: magic
0x00000801, dims (N,).
"""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import numpy as np

SIZE = 28


def idx_bytes(a: np.ndarray) -> bytes:
    """`a` (uint8, any number of dimensions) as an IDX file's bytes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    head = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.tobytes()


def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 [N, 28, 28] (0–16 ink scaled to 0–255, bilinear upsampling)
    and their labels uint8 [N]."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    small = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((SIZE, SIZE), Image.BILINEAR)) for im in small]
    )
    return big, d.target.astype(np.uint8)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = digits_28()
    # mtime=0: the same bytes on every machine, so the committed files can be checked.
    for name, a in (("train-images-idx3-ubyte.gz", x), ("train-labels-idx1-ubyte.gz", y)):
        with open(out / name, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
            gz.write(idx_bytes(a))
    print(f"wrote {len(x)} images {SIZE}×{SIZE} and labels to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "digits-idx")
