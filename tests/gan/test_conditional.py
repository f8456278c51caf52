"""Conditional training (`simulator.gan.conditional`): the sampler's frequencies against their
formulas, the condition coordinate of the latent, the cross-entropy term against torch's,
training-by-sampling's real rows, the batched engine against the sequential loop, and the
schema's and preflight's refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from fedgan.simulator.data.base import Dataset
from fedgan.simulator.gan import batched, fastmlp
from fedgan.simulator.gan.conditional import (
    Condition,
    build_condition,
    conditioned,
    option_index,
    option_probabilities,
    renormalized,
)
from fedgan.simulator.gan.networks import NetworkSpec
from fedgan.simulator.gan.train import GAN, GANConfig
from fedgan.simulator.prepare import data_problems

from tests.conftest import tiny, tiny_raw


def _dataset(counts: dict[str, int], seed: int = 0) -> Dataset:
    """Rows of each category of `g` (x: the category's index plus noise, so a row's category
    can be read from x), plus a second group column `h` (two halves)."""
    rng = np.random.default_rng(seed)
    xs, gs = [], []
    for i, (c, n) in enumerate(counts.items()):
        xs.append(np.stack([i + 0.01 * rng.normal(size=n), rng.normal(size=n)], axis=1))
        gs += [c] * n
    X = np.concatenate(xs).astype(np.float32)
    h = ["lo" if i % 2 else "hi" for i in range(len(X))]
    return Dataset("toy", X, pd.DataFrame({"g": gs, "h": h}))


# --- the sampler's probabilities --------------------------------------------------------------


def test_probabilities_follow_each_formula_by_hand() -> None:
    counts = np.array([90, 9, 1, 0])
    col = np.zeros(4, dtype=int)
    lf = option_probabilities(counts, col, "log_frequency")
    den = math.log(91) + math.log(10) + math.log(2)
    np.testing.assert_allclose(lf, [math.log(91) / den, math.log(10) / den, math.log(2) / den, 0])
    np.testing.assert_allclose(option_probabilities(counts, col, "uniform"), [1 / 3] * 3 + [0])
    np.testing.assert_allclose(option_probabilities(counts, col, "empirical"), [0.9, 0.09, 0.01, 0])


def test_all_columns_get_one_over_j_then_their_categories() -> None:
    # two columns: [a: 3, b: 1] and [x: 2, y: 2]; empirical within each, 1/2 per column
    p = option_probabilities(np.array([3, 1, 2, 2]), np.array([0, 0, 1, 1]), "empirical")
    np.testing.assert_allclose(p, [0.5 * 0.75, 0.5 * 0.25, 0.25, 0.25])


def test_a_client_renormalizes_over_the_categories_it_holds() -> None:
    p = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(renormalized(p, np.array([True, False, True])), [5 / 7, 0, 2 / 7])
    with pytest.raises(ValueError, match="holds no row"):
        renormalized(p, np.zeros(3, dtype=bool))


@pytest.mark.parametrize("sampling", ["log_frequency", "uniform", "empirical"])
def test_drawn_options_match_the_formula_statistically(sampling: str) -> None:
    ds = _dataset({"a": 300, "b": 60, "c": 12})
    cond = build_condition("g", sampling, ds)
    n = np.array([300, 60, 12], dtype=float)
    w = {"log_frequency": np.log1p(n), "uniform": np.ones(3), "empirical": n}[sampling]
    expected = w / w.sum()
    sampler = cond.sampler(np.arange(len(ds.X)))
    draws = sampler.options(torch.Generator().manual_seed(0), (200_000,)).numpy()
    freq = np.bincount(draws, minlength=3) / len(draws)
    sd = np.sqrt(expected * (1 - expected) / len(draws))
    assert np.all(np.abs(freq - expected) < 5 * sd)


# --- the latent's condition coordinate ----------------------------------------------------------


def test_codes_pick_their_option_and_free_latents_follow_the_data() -> None:
    ds = _dataset({"a": 9_990, "b": 9, "c": 1})  # a category of 1 in 10,000 rows
    cond = build_condition("g", "log_frequency", ds)
    opts = torch.arange(3)
    np.testing.assert_array_equal(cond.one_hot(cond.code(opts)).numpy(), np.eye(3))
    u = torch.randn(400_000, generator=torch.Generator().manual_seed(1))
    freq = cond.one_hot(u).mean(0).numpy()
    assert cond.one_hot(u).sum(-1).eq(1).all()  # every latent picks exactly one option
    np.testing.assert_allclose(freq, [0.999, 0.0009, 0.0001], atol=5 * math.sqrt(0.001 / 4e5))


# --- the cross-entropy term ---------------------------------------------------------------------


def _cond(span_pos: list[int], scale: float) -> Condition:
    k = len(span_pos)
    return Condition(
        ("g",), (tuple(range(k)),), np.zeros(k, dtype=np.int64), np.zeros((1, 1), dtype=np.int64),
        "uniform", np.full(k, 1 / k), np.array(span_pos), scale,
    )  # fmt: skip


def test_cross_entropy_is_torch_cross_entropy_of_the_spans_logits() -> None:
    torch.manual_seed(0)
    B, scale = 7, 1 / math.sqrt(2)
    logits = torch.randn(B, 3)
    x = torch.randn(B, 5)
    x[:, 1:4] = torch.softmax(logits, -1) * scale  # the head: softmax × 1/√2, columns 1..3
    target = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    c = F.one_hot(target, 3).float()
    got = _cond([1, 2, 3], scale).cross_entropy(x, c)
    torch.testing.assert_close(got, F.cross_entropy(logits, target))


def test_rows_of_a_column_that_is_not_generated_add_nothing() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 2)
    x = torch.zeros(4, 3)
    x[:, 0:2] = torch.softmax(logits, -1)
    target = torch.tensor([0, 2, 1, 3])  # options 2, 3: a group label with no span in X
    got = _cond([0, 1, -1, -1], 1.0).cross_entropy(x, F.one_hot(target, 4).float())
    by_hand = -(torch.log_softmax(logits, -1)[0, 0] + torch.log_softmax(logits, -1)[2, 1]) / 4
    torch.testing.assert_close(got, by_hand)


# --- training-by-sampling -----------------------------------------------------------------------


def _gan(cond: Condition, batch: int = 16) -> GAN:
    cfg = GANConfig(
        latent_dim=3,
        generator=NetworkSpec(widths=[8]),
        critic=NetworkSpec(widths=[8]),
        batch_size=batch,
        n_critic=2,
    )
    return GAN(cfg, 2, None, None, cond)


def test_a_real_batch_drawn_for_c_holds_only_rows_of_c() -> None:
    ds = _dataset({"a": 50, "b": 20, "c": 5})
    cond = build_condition("g", "uniform", ds)
    gan = _gan(cond)
    own = np.arange(0, 75, 2)  # a client's rows (every other one)
    noise = gan.draw_steps(len(own), torch.Generator().manual_seed(0), 4, sampler=cond.sampler(own))
    assert noise.idx.shape == (4, 2, 16) and noise.z_d.shape == (4, 2, 16, 4)
    wanted = cond.one_hot(noise.z_d[..., -1]).argmax(-1).numpy()
    rows = own[noise.idx.numpy()]
    np.testing.assert_array_equal(cond.codes[rows, 0], wanted)
    assert set(np.unique(wanted)) == {0, 1, 2}  # uniform: the rare category is drawn too


def test_the_network_widths_grow_by_the_condition() -> None:
    cond = build_condition("all", "uniform", _dataset({"a": 5, "b": 5}))  # g: 2, h: 2 options
    gan = _gan(cond)
    assert cond.width == 4 and gan.config.latent_dim == 4
    assert gan.generator.net[0].in_features == 3 + 4
    assert gan.critic.net[0].in_features == 2 + 4
    assert fastmlp.why_not(gan) is not None and "conditional" in str(fastmlp.why_not(gan))


def test_batched_conditional_clients_agree_with_the_sequential_loop() -> None:
    ds = _dataset({"a": 40, "b": 12, "c": 4})
    cond = build_condition("g", "log_frequency", ds)
    gan = _gan(cond, batch=8)
    rows = [np.arange(0, 56, 2), np.arange(1, 40, 3)]  # client 1 holds no row of c
    samplers = [cond.sampler(ix) for ix in rows]
    assert samplers[1].probs[2] == 0
    xs = [torch.as_tensor(ds.X[ix]) for ix in rows]
    s0 = gan.init_state(0)
    seq = [
        gan.train(s0, x, 5, torch.Generator().manual_seed(10 + c), sampler=samplers[c])[0]
        for c, x in enumerate(xs)
    ]
    st, _ = batched.train_batched(
        gan,
        batched.stack([s0, s0]),
        batched.pad_data(xs),
        [len(x) for x in xs],
        [torch.Generator().manual_seed(10 + c) for c in range(2)],
        [5, 3 + 2],
        samplers=samplers,
    )
    for c, one in enumerate(batched.unstack(st)):
        for k, v in one.g.items():
            torch.testing.assert_close(v, seq[c].g[k], rtol=1e-5, atol=1e-6)
        for k, v in one.d.items():
            torch.testing.assert_close(v, seq[c].d[k], rtol=1e-5, atol=1e-6)


def test_conditioned_sampling_draws_one_option() -> None:
    ds = _dataset({"a": 40, "b": 12, "c": 4})
    cond = build_condition("g", "uniform", ds)
    gan = _gan(cond)
    s = gan.init_state(0)
    assert option_index(cond, "c") == 2
    with pytest.raises(ValueError, match="allowed: a, b, c"):
        option_index(cond, "d")
    gen = torch.Generator().manual_seed(3)
    with conditioned(gan, 2) as drawn:
        x = gan.sample(s, 6, gen)
    assert drawn == [6]
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    z[:, -1] = cond.code(torch.full((6,), 2))
    torch.testing.assert_close(x, gan.G(s.g, z))
    assert gan.sample_option is None  # restored after the block


# --- the schema and the preflight ---------------------------------------------------------------


def test_an_unset_condition_leaves_the_scenario_json_as_it_was() -> None:
    assert "conditional" not in json.loads(tiny().to_json())["gan"]
    on = tiny(gan={"conditional": {"column": "mode"}})
    assert json.loads(on.to_json())["gan"]["conditional"] == {
        "column": "mode",
        "sampling": "log_frequency",
    }


def test_the_preflight_refuses_what_cannot_work_with_paths() -> None:
    from fedgan.simulator.scenario import validate

    bad = tiny(gan={"conditional": {"column": "colour"}})
    assert any(p.startswith("gan.conditional.column: 'colour'") for p in data_problems(bad))
    raw = tiny_raw(gan={"conditional": {"column": "mode"}})
    raw["federation"] = None
    raw["train"] = {"steps": 3}
    assert data_problems(validate(raw)) == [], "a centralized run (a twin) builds one too"
    private = tiny(
        gan={"conditional": {"column": "mode"}},
        privacy={"level": "sample", "noise_multiplier": 1.0, "clip": 1.0},
    )
    assert any(p.startswith("gan.conditional: ") and "privacy" in p for p in data_problems(private))
    assert data_problems(tiny(gan={"conditional": {"column": "mode"}})) == []


def test_the_centralized_twin_of_a_conditional_run_trains_by_sampling(tmp_path: Path) -> None:
    from fedgan.simulator.api import run

    raw = tiny_raw(gan={"conditional": {"column": "mode", "sampling": "uniform"}})
    res = run(raw, out_dir=tmp_path, centralized=True)
    m = res.metrics
    assert set(m["scope"]) == {"centralized"}
    assert int(m["round"].max()) == 6, "rounds × local steps of the federated scenario"
    assert not any(str(k).startswith("train.lipschitz") for k in m["metric"].unique())
