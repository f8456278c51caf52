"""The seeded DP aggregator (user-level DP-FedAvg): clipping, noise scale, the noiseless
limit, and Flower's own server-side fixed-clipping wrapper as the cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fedgan.simulator.privacy.aggregate import (
    Adaptive,
    DPAggregator,
    update_noise_multiplier,
)
from fedgan.wire.flwr_internals import task_identity
from fedgan.wire.records import to_record
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg


def _replies(current: dict[str, np.ndarray], norms: list[float], seed: int = 0) -> list[dict]:
    """Client arrays whose update from `current` (all arrays as one vector) has each norm."""
    rng = np.random.default_rng(seed)
    size = sum(v.size for v in current.values())
    out = []
    for n in norms:
        d = rng.normal(size=size)
        d *= n / np.linalg.norm(d)
        at, arrays = 0, {}
        for k in sorted(current):
            v = current[k]
            arrays[k] = (v + d[at : at + v.size].reshape(v.shape)).astype(np.float32)
            at += v.size
        out.append(arrays)
    return out


CURRENT = {  # in sorted order, as the replies' records list them
    "critic.b": np.full(5, 0.25, dtype=np.float32),
    "generator.w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
}


def test_each_update_is_clipped_as_one_vector_and_averaged_over_the_expected_cohort() -> None:
    clip = 1.0
    replies = _replies(CURRENT, [0.5, 2.0, 10.0])
    agg = DPAggregator(clip=clip, noise_multiplier=0.0, expected_cohort=4.0, seed=0)
    out = agg.combine(CURRENT, replies, round_=1)
    # By hand: the first update kept, the others scaled to norm C; the sum over 4, not 3.
    expected = {}
    for k in CURRENT:
        deltas = [r[k].astype(np.float64) - CURRENT[k] for r in replies]
        factors = [1.0, clip / 2.0, clip / 10.0]
        expected[k] = CURRENT[k] + sum(f * d for f, d in zip(factors, deltas, strict=True)) / 4.0
    for k in CURRENT:
        np.testing.assert_allclose(out.mean[k], expected[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.norms, [0.5, 2.0, 10.0], rtol=1e-5)
    assert out.clipped == 2 and out.clipped_fraction == pytest.approx(2 / 3)
    new = np.concatenate([(out.mean[k] - CURRENT[k]).ravel() for k in sorted(CURRENT)]) * 4
    assert np.linalg.norm(new) <= 3 * clip * (1 + 1e-6)


def test_no_noise_and_no_clip_is_the_uniform_mean() -> None:
    replies = _replies(CURRENT, [0.3, 4.0, 50.0], seed=3)
    agg = DPAggregator(clip=math.inf, noise_multiplier=0.0, expected_cohort=3.0, seed=0)
    out = agg.combine(CURRENT, replies, round_=1)
    for k in CURRENT:
        mean = np.mean([r[k].astype(np.float64) for r in replies], axis=0)
        np.testing.assert_allclose(out.mean[k], mean, rtol=1e-6, atol=1e-6)
    assert out.clipped == 0


def test_the_noise_std_is_sigma_clip_over_the_cohort_and_seeded() -> None:
    current = {"critic.w": np.zeros(4000, dtype=np.float32)}
    sigma, clip, m = 1.3, 0.5, 10.0
    agg = DPAggregator(clip=clip, noise_multiplier=sigma, expected_cohort=m, seed=7)
    zeros = [dict(current) for _ in range(10)]
    draws = np.concatenate(
        [agg.combine(current, zeros, round_=r).mean["critic.w"] for r in range(1, 6)]
    )
    # 20,000 draws: the sample std is within 3 % of σC/m with probability > 1 − 1e-9.
    assert np.std(draws) == pytest.approx(sigma * clip / m, rel=0.03)
    assert abs(np.mean(draws)) < 5 * sigma * clip / m / np.sqrt(draws.size)
    again = DPAggregator(clip=clip, noise_multiplier=sigma, expected_cohort=m, seed=7)
    np.testing.assert_array_equal(
        again.combine(current, zeros, round_=3).mean["critic.w"],
        agg.combine(current, zeros, round_=3).mean["critic.w"],
    )


def test_a_non_finite_update_counts_as_zero_not_as_a_drop() -> None:
    replies = _replies(CURRENT, [0.5, 0.5], seed=1)
    bad = {k: np.full_like(v, np.nan) for k, v in CURRENT.items()}
    agg = DPAggregator(clip=1.0, noise_multiplier=0.0, expected_cohort=3.0, seed=0)
    out = agg.combine(CURRENT, [*replies, bad], round_=1)
    for k in CURRENT:
        summed = sum(r[k].astype(np.float64) - CURRENT[k] for r in replies)
        np.testing.assert_allclose(out.mean[k], CURRENT[k] + summed / 3.0, rtol=1e-5, atol=1e-6)
    assert out.clipped == 1 and math.isinf(out.norms[-1])


def test_adaptive_clipping_moves_the_clip_toward_the_quantile() -> None:
    # Every norm above C (no noise on the count): b = 0, C ← C·exp(−lr·(0 − γ)) grows.
    agg = DPAggregator(1.0, 0.0, 4.0, 0, Adaptive(0.5, 0.2, count_noise=1e-12))
    agg.combine(CURRENT, _replies(CURRENT, [5.0] * 4), round_=1)
    assert agg.clip == pytest.approx(math.exp(0.2 * 0.5))
    agg = DPAggregator(1.0, 0.0, 4.0, 0, Adaptive(0.5, 0.2, count_noise=1e-12))
    agg.combine(CURRENT, _replies(CURRENT, [0.1] * 4), round_=1)  # all below: b̃ = 1
    assert agg.clip == pytest.approx(math.exp(-0.2 * 0.5))


def test_the_update_noise_under_adaptive_clipping_composes_to_sigma() -> None:
    z, sb = 1.0, 2.0
    z_update = update_noise_multiplier(z, sb)
    # Andrew et al. 2021: the two releases compose as one with z^-2 = z_Δ^-2 + (2σ_b)^-2.
    assert z_update**-2 + (2 * sb) ** -2 == pytest.approx(z**-2)
    with pytest.raises(ValueError, match="count_noise"):
        update_noise_multiplier(1.0, 0.4)


# --- Flower's own wrapper as the cross-check ------------------------------------------------


def _message(arrays: dict[str, np.ndarray], node: int) -> Message:
    content = RecordDict(
        {
            "arrays": to_record(arrays),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    with task_identity(1, node, node):
        return Message(content, dst_node_id=0, message_type="train")


class _Grid:
    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]


def _flower(sigma: float, clip: float, m: int, replies: list[dict]) -> dict[str, np.ndarray]:
    wrapper = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(fraction_train=1.0, min_train_nodes=1, min_available_nodes=1),
        noise_multiplier=sigma,
        clipping_norm=clip,
        num_sampled_clients=m,
    )
    with task_identity(1, 0, 0):  # Flower's Messages read the task's identity
        wrapper.configure_train(1, to_record(CURRENT), ConfigRecord({}), _Grid())
    msgs = [_message(r, i + 1) for i, r in enumerate(replies)]
    with task_identity(1, 0, 0):
        arrays, _ = wrapper.aggregate_train(1, msgs)
    assert arrays is not None
    return {k: a.numpy() for k, a in arrays.items()}


def test_clipping_matches_flowers_server_side_fixed_clipping() -> None:
    replies = _replies(CURRENT, [0.4, 3.0, 7.0], seed=5)
    theirs = _flower(0.0, 1.0, 3, replies)
    ours = DPAggregator(1.0, 0.0, 3.0, 0).combine(CURRENT, replies, round_=1).mean
    for k in CURRENT:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6)


def _update(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([(arrays[k] - CURRENT[k]).ravel() for k in sorted(CURRENT)])


def test_noise_scale_matches_flowers_wrapper() -> None:
    """Flower adds std σ·C/m to the uniform mean; so do we (the same releases)."""
    sigma, clip, m = 0.8, 2.0, 3
    # Updates of norm 1e-4, negligible beside the noise (Flower divides by the norm: a zero
    # update raises ZeroDivisionError).
    zeros = _replies(CURRENT, [1e-4] * m, seed=2)
    np.random.seed(0)  # Flower draws from NumPy's global generator
    theirs = np.concatenate([_update(_flower(sigma, clip, m, zeros)) for _ in range(400)])
    agg = DPAggregator(clip, sigma, float(m), seed=1)
    ours = np.concatenate([_update(agg.combine(CURRENT, zeros, r).mean) for r in range(400)])
    # 6,800 draws each: both within 4 % of σC/m, and of each other.
    assert np.std(theirs) == pytest.approx(sigma * clip / m, rel=0.04)
    assert np.std(ours) == pytest.approx(np.std(theirs), rel=0.06)


def test_the_update_noise_and_the_accountants_composition_agree() -> None:
    from fedgan.simulator.privacy.accountant import adaptive_noise

    for z, sb in ((1.0, 2.0), (3.3, 10.0), (0.7, 0.5)):
        z_update = update_noise_multiplier(z, sb)
        # The aggregator releases the count of bits centred to ±½ (sensitivity ½).
        assert adaptive_noise(z_update, sb, centered=True) == pytest.approx(z, rel=1e-12)
