"""Synthetic data out: draw samples from a finished run's generator, in the user's units.

`fedgan sample RUN --n N --out FILE [--round R] [--seed S]` loads the generator a run evaluated at
round R (its `checkpoints/round-<R>.npz`, EMA where the run keeps one: the generator the metrics
describe), draws N points and writes them back in the data's own units:

* a table (`dataset: table`) → a CSV with the generated columns by name, decoded by the
  run's own encoding (`Dataset.info["encoding"]`, `simulator.data.encoding.decode`):
  categories as their values (the argmax of each one-hot span), numbers in data units,
  integer columns as integers, bounded columns clipped to their bounds;
* images → an `.npz` holding `x`, uint8 [N, H, W] (one channel) or [N, H, W, C], the layout
  image files use, plus a PNG grid of the first samples beside it (`FILE.png`);
* any other data (mixtures, arrays) → an `.npz` holding `x`, float32 [N, d].

The noise stream is `(seed, "sample", R)` with the run's seed by default — the stream the
evaluation at round R drew — so `--n evaluation.n_samples` reproduces `samples/round-<R>.npy`
exactly; `--seed` draws others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fedgan.simulator.messages import GENERATOR, GENERATOR_EMA

SUFFIXES = {"table": (".csv",), "images": (".npz",), "arrays": (".npz",)}
"""What `--out` may end with, per kind of data."""
GRID = 8
"""The PNG grid beside an image `.npz` shows GRID × GRID samples."""


class SampleError(ValueError):
    """A sampling request that cannot be met (names what is wrong and what is allowed)."""


@dataclass(frozen=True)
class Samples:
    """Generated points and what they look like in the user's units.

    `x`: float32 [N, d] in the model's space; `kind`: "table", "images" or "arrays";
    `round`: the generator's round (or step, centralized).
    """

    x: np.ndarray
    kind: str
    round: int
    image_shape: tuple[int, int, int] | None = None
    encoding: dict[str, Any] | None = None
    """A table's encoding (`info["encoding"]` of the run's training split)."""

    def table(self) -> Any:
        """A table's samples as a DataFrame with its columns, in data units (categories as
        their values, numbers de-normalized, integers and bounds kept)."""
        from fedgan.simulator.data.encoding import decode

        assert self.encoding is not None
        return decode(self.encoding, self.x)

    def images(self) -> np.ndarray:
        """Images as uint8 [N, H, W] (one channel) or [N, H, W, C]: [−1, 1] → 0..255."""
        assert self.image_shape is not None
        c, h, w = self.image_shape
        px = np.clip(np.rint((self.x.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        px = px.reshape(len(px), c, h, w).transpose(0, 2, 3, 1)
        return px[..., 0] if c == 1 else px


def _kind(ds: Any) -> str:
    if ds.image_shape is not None:
        return "images"
    return "table" if ds.name == "table" else "arrays"


def draw(
    run_dir: str | Path,
    n: int,
    round_: int | None = None,
    seed: int | None = None,
    group: str | None = None,
) -> Samples:
    """N points from the generator run `run_dir` evaluated at `round_` (default: its last);
    with `group`, from a conditional generator (`gan.conditional`) held at that category.

    Raises
    ------
    SampleError
        No checkpoint (the run evaluated nothing yet), a round that was not evaluated (the
        message lists those that were), n < 1, a checkpoint that does not fit the scenario,
        a `group` for a generator that is not conditional or that is not one of its
        categories (the message lists them).
    """
    import torch
    from fedgan.simulator.data import load_dataset
    from fedgan.simulator.prepare import initial_state, make_gan
    from fedgan.simulator.scenario import load
    from fedgan.simulator.seeding import derive_seed, torch_generator

    run_dir = Path(run_dir)
    if n < 1:
        raise SampleError(f"--n must be at least 1, got {n}")
    from fedgan.simulator.store import round_files

    rounds = round_files(run_dir / "checkpoints", ".npz")
    if not rounds:
        raise SampleError(f"{run_dir}: no checkpoints/round-*.npz (the run evaluated nothing yet)")
    r = max(rounds) if round_ is None else round_
    if r not in rounds:
        raise SampleError(
            f"{run_dir}: round {r} was not evaluated; evaluated rounds: "
            f"{', '.join(map(str, sorted(rounds)))}"
        )
    s = load(run_dir / "scenario.yaml")
    gan = make_gan(s)
    with np.load(rounds[r], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    # The generator the evaluation scored: its EMA where the run keeps one (the server's, in
    # a federated run, which the clients' GAN does not know), else the generator itself.
    ema = {k: v for k, v in arrays.items() if k.startswith(GENERATOR_EMA)}
    chosen = ema or {k: v for k, v in arrays.items() if k.startswith(GENERATOR)}
    generator = {GENERATOR + k.split(".", 1)[1]: v for k, v in chosen.items()}
    try:
        state = initial_state(s, gan).load_arrays(generator)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise SampleError(f"{rounds[r]}: does not fit the run's networks ({exc})") from exc
    gen = torch_generator(s.seed if seed is None else seed, "sample", r)
    torch.set_num_threads(1)
    if group is None:
        with torch.no_grad():
            x = gan.sample(state, n, gen, use_ema=False).numpy().astype(np.float32)
    else:
        from fedgan.simulator.gan.conditional import option_index, sample_group

        if gan.condition is None:
            raise SampleError(
                f"--group {group}: the run's generator is not conditional (no gan.conditional "
                "in its scenario): it cannot be asked for one group"
            )
        try:
            option = option_index(gan.condition, group)
        except ValueError as exc:
            raise SampleError(str(exc)) from None
        x = sample_group(gan, state.g, n, option, gen).numpy().astype(np.float32)
    data = s.data
    ds = load_dataset(data.dataset, 64, derive_seed(s.seed, "data"), data.params)
    kind = _kind(ds)
    if kind == "table":
        # The encoding the run trained with: fitted on its training rows (federated or
        # pooled), not the 64-row probe's.
        from fedgan.simulator.prepare import federated_data, prepare_data

        train = federated_data(s).train if s.federated else prepare_data(s)[0]
        encoding = train.info["encoding"]
        if int(encoding["dim"]) != x.shape[1]:
            raise SampleError(
                f"{rounds[r]}: the generator makes {x.shape[1]} columns but the table's "
                f"encoding has {encoding['dim']}"
            )
        return Samples(x, kind, r, encoding=encoding)
    return Samples(x, kind, r, image_shape=ds.image_shape)


def image_grid_png(images: np.ndarray, path: Path, k: int = GRID) -> Path:
    """The first k² of `images` (uint8 [N, H, W] or [N, H, W, C]) as one PNG mosaic, one grey
    pixel between tiles."""
    from PIL import Image

    n = min(len(images), k * k)
    rows = math.ceil(n / k)
    imgs = images[:n] if images.ndim == 4 else images[:n, ..., None]
    h, w, c = imgs.shape[1:]
    canvas = np.full((rows * (h + 1), k * (w + 1), c), 128, dtype=np.uint8)
    for i in range(n):
        y, x = divmod(i, k)
        canvas[y * (h + 1) : y * (h + 1) + h, x * (w + 1) : x * (w + 1) + w] = imgs[i]
    Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(path)
    return path


def write(samples: Samples, out: str | Path) -> list[Path]:
    """Write `samples` to `out` in the user's units; returns the files written.

    The suffix of `out` must fit the data (`SUFFIXES`): `.csv` for a table, `.npz` otherwise.
    Each file is written whole and then renamed, so an interrupted write leaves no half file.
    """
    from fedgan.simulator.store import atomic_write_bytes

    out = Path(out)
    allowed = SUFFIXES[samples.kind]
    if out.suffix.lower() not in allowed:
        raise SampleError(
            f"--out {out}: {samples.kind} samples are written as {' or '.join(allowed)}, "
            f"not {out.suffix or 'a file without a suffix'}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    written = [out]
    if samples.kind == "table":
        atomic_write_bytes(out, samples.table().to_csv(index=False).encode())
        return written
    import io

    buf = io.BytesIO()
    x = samples.images() if samples.kind == "images" else samples.x
    np.savez(buf, x=x)
    atomic_write_bytes(out, buf.getvalue())
    if samples.kind == "images":
        png = out.with_suffix(".png")
        tmp = png.with_suffix(".tmp.png")
        image_grid_png(x, tmp)
        tmp.replace(png)
        written.append(png)
    return written
