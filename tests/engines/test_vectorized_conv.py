"""The vectorized engine on DCGAN-style conv clients (28×28): vmap over the client axis through
conv, up-conv, the gradient penalty's double backward, spectral norm's power iteration and
DP-SGD's per-sample gradients agrees with each client trained alone, to float rounding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.clients.requests import TrainRequest
from fedgan.clients.training import client_train, clients_train
from fedgan.simulator.data.base import Dataset
from fedgan.simulator.gan import batched, fastmlp
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.state import DPSGD
from fedgan.simulator.gan.train import GAN, GANState
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import initial_state, make_gan

from tests.conftest import tiny
from tests.gan.conftest import tiny_config

IMAGE = (1, 28, 28)
D = 784
SPEC = NetworkSpec(kind="dcgan", widths=(4, 8))


def blobs_28(n_samples: int | None = None, seed: int = 0) -> Dataset:
    """A plug-in image dataset for the engine test: n 28×28 images in [−1, 1], a bright square
    in one of two corners (group column `corner`), plus noise."""
    n = 120 if n_samples is None else n_samples
    rng = np.random.default_rng(seed)
    corner = rng.integers(0, 2, n)
    x = rng.uniform(-1.0, -0.6, (n, 28, 28))
    for i, c in enumerate(corner):
        x[i, 4 + 14 * c : 10 + 14 * c, 4 + 14 * c : 10 + 14 * c] = 0.9
    return Dataset(
        name="blobs_28",
        X=x.reshape(n, D).astype(np.float32),
        groups=pd.DataFrame({"corner": corner}),
        image_shape=IMAGE,
    )


def _close(a: GANState, b: GANState, tol: float) -> None:
    for name in batched.STATE_GROUPS:
        ga, gb = getattr(a, name), getattr(b, name)
        assert set(ga) == set(gb), name
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=tol, atol=tol, msg=f"{name}.{k}")


@pytest.mark.parametrize(
    ("objective", "control", "params", "dp"),
    [
        ("wasserstein", "gradient_penalty", {"lam": 1.0}, None),  # double backward
        ("hinge", "spectral_norm", {"n_power_iterations": 2}, None),  # the u buffers
        ("non_saturating", "r1", {"lam": 0.1}, DPSGD(clip=0.5, noise_multiplier=1.0)),
    ],
)
def test_batched_conv_clients_match_each_client_alone(
    objective: str, control: str, params: dict[str, float], dp: DPSGD | None
) -> None:
    gan = GAN(
        tiny_config(
            latent_dim=4,
            generator=SPEC,
            critic=SPEC,
            objective=objective,
            lipschitz=control,
            lipschitz_params=params,
            n_critic=2,
            batch_size=4,
            ema=0.9,
            dp=dp,
        ),
        data_dim=D,
        image_shape=IMAGE,
    )
    assert fastmlp.plan(gan) is None  # the vmap path, not the hand-batched MLP step
    sizes, steps = [9, 14, 11], [2, 2, 1]  # ragged data and a client with fewer steps
    gen = torch.Generator().manual_seed(5)
    datas = [torch.rand(n, D, generator=gen) * 2 - 1 for n in sizes]
    states = [gan.init_state(c) for c in range(3)]
    want = [
        gan.train(states[c], datas[c], steps[c], torch.Generator().manual_seed(c), 4)[0]
        for c in range(3)
    ]
    got, means = batched.train_batched(
        gan,
        batched.stack(states),
        batched.pad_data(datas),
        sizes,
        [torch.Generator().manual_seed(c) for c in range(3)],
        steps,
        total_steps=4,
    )
    for c, s in enumerate(batched.unstack(got)):
        # Every parameter, optimizer moment, EMA weight and power-iteration vector.
        _close(s, want[c], tol=1e-5)
        assert any(not torch.equal(s.g[k], states[c].g[k]) for k in s.g)  # it did train
    assert all(torch.isfinite(v).all() for v in means.values())


def test_engine_round_on_conv_clients_matches_client_by_client() -> None:
    # The whole client round (arrays in, stacked state, training, Lipschitz estimates, replies)
    # on the vectorized engine against the in-process one, with a plug-in 28×28 dataset.
    s = tiny(
        data={"dataset": f"{__name__}:blobs_28", "n_samples": 160, "params": {}},
        gan={
            "latent_dim": 8,
            "generator": {"kind": "dcgan", "widths": [4, 8]},
            "critic": {"kind": "dcgan", "widths": [4, 8]},
            "lipschitz": {"name": "spectral_norm"},
            "batch_size": 8,
        },
        partition={"name": "iid", "params": {}, "n_clients": 3, "client_holdout": 0.0},
        federation={"federate": "generator", "local_steps": 2},
    )
    g = make_gan(s)
    arrays, _ = split_arrays(initial_state(s, g).arrays(), "generator")
    seq = [client_train(s, c, 1, arrays, None) for c in range(3)]
    vec = clients_train(s, [TrainRequest(c, 1, arrays) for c in range(3)])
    for a, b in zip(seq, vec, strict=True):
        assert not isinstance(b, Exception)
        assert set(a.arrays) == set(b.arrays) and set(a.private) == set(b.private)
        assert any(k.endswith(".u") for k in b.private)  # the SN vectors stay with the client
        for k in a.arrays:
            np.testing.assert_allclose(b.arrays[k], a.arrays[k], rtol=1e-4, atol=1e-5)
        for k in a.private:
            np.testing.assert_allclose(b.private[k], a.private[k], rtol=1e-4, atol=1e-5)
        for k, v in a.metrics.items():
            assert b.metrics[k] == pytest.approx(v, rel=1e-3, abs=1e-5, nan_ok=True), k
