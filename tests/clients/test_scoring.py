"""A client's local scores (what weightings read) are computed in the space the evaluation
compares in: for images, the feature classifier's embedding, not raw pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedgan.clients.scoring import local_evaluation
from fedgan.simulator.metrics import prdc
from fedgan.simulator.prepare import federated_data, scenario_feature_space
from fedgan.simulator.scenario import load

from tests.test_images_run import _scenario, _write_idx


def test_local_scores_of_images_are_in_the_feature_space(tmp_path: Path) -> None:
    _write_idx(tmp_path / "files", 240)
    params = {"path": "files/t-images-idx3-ubyte.gz", "labels": "files/t-labels-idx1-ubyte.gz"}
    s = load(_scenario(tmp_path, {"dataset": "images", "params": params}))
    data = federated_data(s)
    client = 0
    real = data.train.X[data.client_held[client]]
    rng = np.random.default_rng(0)
    fake = np.clip(real + rng.normal(0, 0.3, real.shape), -1, 1).astype(np.float32)
    got = local_evaluation(s, data, client, fake)
    embed = scenario_feature_space(s, data.held, data.train).embed
    assert embed is not None
    expect = prdc(embed(real), embed(fake), k=s.evaluation.k)
    pixels = prdc(real, fake, k=s.evaluation.k)
    assert got.coverage == expect.coverage and got.recall == expect.recall
    assert (expect.coverage, expect.recall) != (pixels.coverage, pixels.recall)
