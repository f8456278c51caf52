"""A mixed table is compared where a row's categories are what it would decode to: numbers
standardized, each category a one-hot × 1/√2 of the argmax — not the softmax's raw output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.simulator.evaluate import make_evaluator
from fedgan.simulator.prepare import prepare_data
from fedgan.simulator.scenario import load

MIXED = Path(__file__).resolve().parents[2] / "scenarios" / "tables" / "mixed.yaml"


def test_soft_categories_are_compared_as_the_category_they_decode_to() -> None:
    s = load(MIXED, ["data.n_samples=1500", "federation=null", "train.steps=2"])
    train, held = prepare_data(s)
    enc = held.info["encoding"]
    cats = [c for c in enc["columns"] if c["kind"] == "categorical"]
    assert cats, "the bundled table has categorical columns"
    # "Generated" rows: the held-out rows themselves, every one-hot softened (0.7 on the true
    # category, the rest spread) — the argmax is unchanged, the raw vector is not.
    fake = held.X.copy()
    for c in cats:
        a, b = int(c["start"]), int(c["end"])
        hot = fake[:, a:b] > 0
        width = b - a
        fake[:, a:b] = np.where(hot, 0.7, 0.3 / (width - 1)) / np.sqrt(2.0)
    ev = make_evaluator(s, held, train)
    assert ev.space.kind == "table"
    res = ev(fake.astype(np.float32))
    # Every held-out row has a sample at distance 0 in the table's space: covered, unless its
    # k-NN ball has radius 0 (k or more exact duplicates, which nothing covers strictly).
    feats = ev.space.embed(held.X)
    d = np.sqrt(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1))
    radius = np.sort(d, axis=1)[:, s.evaluation.k]  # column 0 is the point itself
    assert res.summary["coverage"] == float(np.mean(radius > 0))
    assert res.summary["coverage"] > 0.9
    # The softened rows land exactly on their real rows in that space (argmax kept), while
    # their raw encodings differ.
    np.testing.assert_array_equal(ev.space.embed(fake.astype(np.float32)), feats)
    assert float(np.abs(fake - held.X).max()) > 0.1
