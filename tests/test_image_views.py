"""The report's image views say what the tables say: a group's pictures mark covered images
and count landed samples by the same definitions the evaluation's rows use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from fedgan.simulator.evaluate import make_evaluator
from fedgan.simulator.image_views import image_views
from fedgan.simulator.prepare import federated_data
from fedgan.simulator.scenario import load

from tests.test_images_run import _scenario, _write_idx


def test_pictures_agree_with_the_evaluations_rows(tmp_path: Path) -> None:
    _write_idx(tmp_path / "files", 240)
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    s = load(_scenario(tmp_path, {"dataset": "images", "params": params}))
    data = federated_data(s)
    held = data.held
    labels = held.groups["label"].to_numpy()
    rng = np.random.default_rng(0)
    # "Generated" samples: label 0's held-out images slightly moved, client 1's held-out images
    # exactly, and noise. Label 0 is then covered, others mostly not.
    near = held.X[labels == 0] + rng.normal(0, 0.01, held.X[labels == 0].shape)
    own = data.train.X[data.client_held[1]]
    noise = rng.uniform(-1, 1, (50, held.dim))
    fake = np.concatenate([near, own, noise]).astype(np.float32)

    views = image_views(s.model_dump(mode="json"), fake, "label", per=10_000)
    ev = make_evaluator(s, held, data.train)(fake)
    rows = pd.DataFrame(ev.rows)
    rows = rows[rows["group_by"] == "label"]
    for g in views.groups:
        cov = rows[(rows["metric"] == "coverage") & (rows["group"].astype(str) == g.group)]
        mass = rows[(rows["metric"] == "mass") & (rows["group"].astype(str) == g.group)]
        assert len(g.real) == int((labels.astype(str) == g.group).sum()), "every image (per big)"
        assert g.covered.mean() == float(cov["value"].iloc[0])
        # mass: the share of all samples inside the group's balls
        assert g.landed / len(fake) == float(mass["value"].iloc[0])
    zero = next(g for g in views.groups if g.group == "0")
    assert zero.covered.mean() > 0.9 and zero.landed >= len(near) * 0.9
    one = next(c for c in views.clients if c.client == 1)
    assert one.share == 1.0, "a point with a sample at distance 0 is inside its ball"
    assert len(views.clients) == s.partition.n_clients
