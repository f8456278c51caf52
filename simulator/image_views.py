"""Who is forgotten, shown as images: per group and per client, the held-out real images the
generator covers and those it does not, and the generated images that land in each group.

Every mark comes from the definitions the tables use (`simulator.metrics`), in the
evaluation's own feature space (`evaluate.scenario_feature_space`), so a picture cannot
contradict a number:

* a held-out image is **covered** when a generated sample lies strictly inside its k-NN ball
  among the held-out set (PRDC's coverage, as the per-group coverage counts it);
* a client's held-out image is covered by the same test with radii from the pooled held-out
  set (`coverage_against`, as the client × group table counts it);
* a generated image **lands in** a group when it lies inside the ball of one of the group's
  held-out images (what the group's `mass` counts; one sample may land in several groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GroupImages:
    """One group's pictures. `real`: float32 [n, C·H·W] held-out images of the group (the first
    `per`), `covered`: bool [n]; `generated`: [m, C·H·W] samples that land in the group (the
    first `per`), `landed`: how many of all the samples land in it."""

    group: str
    real: np.ndarray
    covered: np.ndarray
    generated: np.ndarray
    landed: int


@dataclass(frozen=True)
class ClientImages:
    """One client's held-out images (the first `per`) and whether each is covered, with the
    client's covered share over all its held-out images."""

    client: int
    real: np.ndarray
    covered: np.ndarray
    share: float


@dataclass(frozen=True)
class ImageViews:
    groups: list[GroupImages]
    clients: list[ClientImages]
    grouping: str
    image_shape: tuple[int, int, int]
    space: str
    """What the images were compared in (the feature space's description)."""


def image_views(
    scenario: dict[str, Any], fake: np.ndarray, grouping: str | None = None, per: int = 8
) -> ImageViews:
    """The pictures of one evaluation of an image run.

    Parameters
    ----------
    scenario : mapping
        The run's resolved scenario (`scenario.yaml`).
    fake : ndarray, shape [M, C·H·W]
        The evaluation's generated samples (`samples/round-<r>.npy`).
    grouping : str, optional
        A group column of the data (default: the first).
    per : int
        Images shown per group and per client.

    Raises
    ------
    ValueError
        The data are not images, or the samples do not match them.
    """
    from fedgan.simulator.data import load_dataset
    from fedgan.simulator.metrics.forgetting import ball_pairs, coverage_against
    from fedgan.simulator.metrics.groups import group_labels, group_sort_key
    from fedgan.simulator.metrics.prdc import prdc
    from fedgan.simulator.prepare import federated_data, prepare_data, scenario_feature_space
    from fedgan.simulator.scenario import validate

    s = validate(scenario)
    # A 64-row probe first: a report of a non-image run pays nothing for this view.
    if load_dataset(s.data.dataset, 64, 0, s.data.params).image_shape is None:
        raise ValueError("the data are not images")
    client_sets: list[np.ndarray] = []
    if s.federated:
        data = federated_data(s)
        train, held = data.train, data.held
        client_sets = [train.X[idx] for idx in data.client_held]
    else:
        train, held = prepare_data(s)
    if held.image_shape is None:
        raise ValueError("the data are not images")
    if fake.ndim != 2 or fake.shape[1] != held.dim:
        raise ValueError(f"samples of shape {fake.shape} do not match images of d = {held.dim}")
    space = scenario_feature_space(s, held, train)
    embed = space.embed if space.embed is not None else (lambda x: x)
    real_f, fake_f = embed(held.X), embed(fake)
    k = s.evaluation.k
    radii = prdc(real_f, fake_f, k=k).real_radii
    real_i, fake_j = ball_pairs(real_f, fake_f, radii)
    covered = np.zeros(held.n, dtype=bool)
    covered[real_i] = True
    column = grouping or held.group_column
    labels = group_labels(held.groups, column).astype(str).to_numpy()
    groups = []
    for g in sorted(set(labels.tolist()), key=group_sort_key):
        mine = np.flatnonzero(labels == g)
        landed = np.unique(fake_j[np.isin(real_i, mine)])
        groups.append(
            GroupImages(g, held.X[mine[:per]], covered[mine[:per]], fake[landed[:per]], landed.size)
        )
    clients = []
    for c, pts in enumerate(client_sets):
        if len(pts) == 0:
            continue
        hit = coverage_against(real_f, embed(pts), fake_f, k)
        clients.append(ClientImages(c, pts[:per], hit[:per], float(hit.mean())))
    acc = space.accuracy
    what = {
        "data": "pixel space",
        "digit-mlp": "the digit classifier's embedding",
        "classifier": "the embedding of a classifier trained on the training split",
        "torchscript": "the embedding of evaluation.features",
    }.get(space.kind, space.kind) + (f" (held-out accuracy {acc:.2f})" if acc is not None else "")
    return ImageViews(groups, clients, column, held.image_shape, what)
