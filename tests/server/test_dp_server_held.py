"""User-level DP for the server-held protocols (MD-GAN, UA-GAN): one release per generator step
of every sampled client's answer block, clipped as one vector, noised, over the expected
cohort. End to end (ε and clipped-fraction rows; no noise and no clip = the non-private
uniform combination), at the unit level (the released mean against a hand computation), the
refused critic swap and a stopped run resuming with its adaptive clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.server.protocols import build_protocol, check_protocol
from fedgan.server.protocols.base import Round, Setup
from fedgan.server.protocols.fedavg import DP_STATE
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.cohorts import sample_clients
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import resume_federated, run_federated
from fedgan.simulator.messages import FEEDBACK, LOGIT_GRADS, LOGITS
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.simulator.scenario import Scenario, resolved_yaml
from fedgan.simulator.seeding import numpy_rng, torch_generator
from fedgan.simulator.store import RunStore
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import MessageType

from tests.conftest import tiny
from tests.server.test_resume import Killed, killer

SGD1 = {"name": "sgd", "lr": 1.0}  # θ_new = θ − ∇θ: the step reveals the gradient
SGD01 = {"name": "sgd", "lr": 0.1}
M = 10  # clients a round (expected cohort)


def users(protocol: str, privacy: dict[str, Any] | None, **sections: Any) -> Scenario:
    """100 clients (iid) of a 2,000-point ring, 10 a round, 2 rounds × 2 generator steps, tiny
    MLPs (B = 32, d = 2); UA-GAN with π uniform (privacy refuses `pi: size`)."""
    params: dict[str, Any] = {"pi": "uniform"} if protocol == "uagan" else {}
    fed = {
        "protocol": protocol,
        "rounds": 2,
        "local_steps": 2,
        "clients_per_round": M,
        "protocol_params": params,
    }
    base: dict[str, Any] = {
        "data": {"n_samples": 2000, "params": {"minority_modes": [0], "minority_weight": 0.05}},
        "partition": {"name": "iid", "params": {}, "n_clients": 100},
        "federation": fed,
        "evaluation": {"every": 2, "n_samples": 200},
    }
    if privacy is not None:
        base["privacy"] = {"level": "user", "delta": 1e-3, **privacy}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return tiny(**base)


def _global(m: pd.DataFrame, metric: str) -> pd.Series:
    return m[(m["metric"] == metric) & (m["scope"] == "global")].set_index("round")["value"]


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "engine"), [("mdgan", "inprocess"), ("uagan", "vectorized")])
def test_a_user_level_run_accounts_one_release_per_generator_step(
    tmp_path: Path, name: str, engine: str
) -> None:
    sigma = 1.1
    s = users(name, {"noise_multiplier": sigma, "clip": 0.05}, engine={"name": engine})
    m = run_federated(s, tmp_path).metrics
    eps = _global(m, "privacy.epsilon")
    assert list(eps.index) == [1, 2]
    for r in (1, 2):  # local_steps = 2 Poisson-sampled Gaussian releases a round (q = 10/100)
        event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(sigma))
        acc = dp_accounting.rdp.RdpAccountant().compose(event, 2 * r)
        assert eps[r] == pytest.approx(acc.get_epsilon(1e-3), rel=1e-6)
    clipped = _global(m, "privacy.clipped_fraction")
    assert list(clipped.index) == [1, 2]
    assert ((clipped >= 0) & (clipped <= 1)).all()
    # Every client counts 1/m, whoever answered (the expected cohort is the divisor).
    w = m[(m["metric"] == "fed.weight") & (m["scope"] == "client")]["value"]
    assert len(w) and np.allclose(w, 1 / M)
    g_loss = _global(m, "server.g_loss")  # MD-GAN: the clients' losses are withheld
    assert (len(g_loss) == 0) if name == "mdgan" else np.isfinite(g_loss).all()


EXACT = {"noise_multiplier": 0.0, "clip": 1e12, "sampling": "fixed"}
"""No noise, no clip, exactly m clients a round: the release is the uniform mean."""


def _generator_after(s: Scenario, tmp_path: Path, rnd: int) -> dict[str, np.ndarray]:
    res = run_federated(s, tmp_path)
    snap = np.load(res.path / "checkpoints" / f"round-{rnd:06d}.npz")
    return {k: snap[k] for k in snap.files if k.startswith("generator.")}


def test_uagan_without_noise_or_clip_is_the_non_private_uniform_combination(
    tmp_path: Path,
) -> None:
    # SGD: the generator's movement is the gradient itself (Adam's first steps are sign-like).
    sections: dict[str, Any] = {"evaluation": {"every": 1}, "gan": {"g_opt": SGD01}}
    s = users("uagan", EXACT, **sections)
    init = {f"generator.{k}": v.numpy() for k, v in initial_state(s, make_gan(s)).g.items()}
    dp = _generator_after(s, tmp_path / "dp", 2)
    plain = _generator_after(users("uagan", None, **sections), tmp_path / "plain", 2)
    assert set(dp) == set(plain) == set(init)
    for k in plain:  # 2 rounds × 2 steps through the odds release, against logsumexp
        moved = plain[k] - init[k]
        assert np.abs(moved).max() > 1e-5
        np.testing.assert_allclose(dp[k] - init[k], moved, rtol=1e-5, atol=1e-9)


def test_mdgan_without_noise_or_clip_steps_g_with_the_mean_feedback_on_one_batch(
    tmp_path: Path,
) -> None:
    s = users(
        "mdgan",
        EXACT,
        federation={"rounds": 1, "local_steps": 1},
        gan={"g_opt": SGD1},
        evaluation={"every": 1},
    )
    res = run_federated(s, tmp_path)
    gan = make_gan(s)
    before = {k: v.double() for k, v in initial_state(s, gan).g.items()}
    snap = np.load(res.path / "checkpoints" / "round-000001.npz")
    after = {k: torch.as_tensor(snap[f"generator.{k}"]).double() for k in before}
    ckpt = load_latest(res.path)
    assert ckpt is not None
    cohort = sample_clients(s, 1)
    assert len(cohort) == M and set(cohort) <= set(ckpt.clients)
    # The feedback latents of step 0 from the step's own stream (no client key): one batch.
    c = s.gan
    gen = torch_generator(s.seed, "server-z", 0)
    torch.randn(c.n_critic, c.batch_size, c.latent_dim, generator=gen)
    z = torch.randn(c.batch_size, c.latent_dim, generator=gen).double()

    def loss(g: dict[str, torch.Tensor]) -> torch.Tensor:  # (1/m) Σ_k mean softplus(−D_k(G(z)))
        x = gan.G(g, z)
        out = torch.zeros((), dtype=torch.float64)
        for p in cohort:
            critic = initial_state(s, gan).load_arrays(ckpt.clients[p])
            d = {k: v.double() for k, v in critic.d.items()}
            buf = {k: v.double() for k, v in critic.d_buf.items()}
            out = out + torch.nn.functional.softplus(-gan.D(d, buf, x)).mean() / M
        return out

    g = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    grads = torch.autograd.grad(loss(g), list(g.values()))
    expected = torch.cat([t.flatten() for t in grads])
    applied = torch.cat([(before[k] - after[k]).flatten() for k in before])
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(applied, expected, rtol=1e-4, atol=1e-7)


# --- the release at the unit level ---------------------------------------------------------------


class _Answer:
    """A reply as the protocol's DP combination reads it: who sent it and its arrays."""

    def __init__(self, pid: int, arrays: dict[str, np.ndarray]) -> None:
        self.partition_id = pid
        self._arrays = arrays

    def arrays(self) -> dict[str, np.ndarray]:
        return self._arrays


def _protocol(s: Scenario) -> Any:
    data = federated_data(s)
    gan = make_gan(s, data)
    initial = initial_state(s, gan).arrays()
    return build_protocol(Setup(s, data, gan, initial, {}))


def _spy(proto: Any) -> dict[str, Any]:
    """Record what the protocol's `released_feedback` gets and gives."""
    seen: dict[str, Any] = {}
    inner = proto.released_feedback

    def spy(mean: np.ndarray, noise_std: float) -> Any:
        out = inner(mean, noise_std)
        seen.update(mean=mean, noise_std=noise_std, z=out[0], e=out[1], loss=out[2])
        return out

    proto.released_feedback = spy
    return seen


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_mdgan_releases_the_clipped_sum_of_feedbacks_over_the_expected_cohort(
    sigma: float,
) -> None:
    clip = 1.0
    s = users("mdgan", {"noise_multiplier": sigma, "clip": clip})
    proto = _protocol(s)
    seen = _spy(proto)
    b, d = s.gan.batch_size, 2
    rng = np.random.default_rng(0)
    clients = [3, 17, 42, 64, 99]
    scales = [0.2, 0.9, 1.5, 4.0, 10.0]  # norms: two under the clip, three over
    blocks = {}
    for p, sc in zip(clients, scales, strict=True):
        e = rng.normal(size=(b, d))
        blocks[p] = (e * sc / np.linalg.norm(e)).astype(np.float32)
    r = Round(1, clients, {}, None)  # type: ignore[arg-type]
    proto.fakes(r, 0)
    proto.combine(r, 0, [_Answer(p, {FEEDBACK: blocks[p]}) for p in clients])

    total = np.zeros(b * d)
    for p in clients:
        v = blocks[p].astype(np.float64).ravel()
        n = np.sqrt(np.sum(v**2))
        total += v if n <= clip else v * (clip / n)
    if sigma:  # the noise's documented stream: (seed, "dp-noise", round, exchange)
        total += numpy_rng(s.seed, "dp-noise", 1, 0).normal(0.0, sigma * clip, b * d)
    np.testing.assert_allclose(seen["mean"], total / M, rtol=1e-12, atol=1e-15)
    assert seen["noise_std"] == pytest.approx(sigma * clip / M)
    np.testing.assert_allclose(seen["e"].numpy(), (total / M).reshape(b, d), rtol=1e-6)
    assert seen["loss"] is None
    assert proto.round_metrics() == {"privacy.clipped_fraction": pytest.approx(3 / 5)}
    assert proto.shares(r, 0, []) == {p: pytest.approx(1 / M) for p in clients}


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_uagan_releases_odds_and_odds_gradients_and_steps_against_their_ratio(
    sigma: float,
) -> None:
    clip = 5.0
    s = users("uagan", {"noise_multiplier": sigma, "clip": clip})
    proto = _protocol(s)
    seen = _spy(proto)
    b, d = s.gan.batch_size, 2
    rng = np.random.default_rng(1)
    clients = [0, 5, 50, 77]
    answers = {}
    for i, p in enumerate(clients):
        logits = rng.normal(i - 2.0, 1.0, size=b).astype(np.float32)  # odds ~0.05 to ~20
        grads = rng.normal(size=(b, d)).astype(np.float32)
        answers[p] = {LOGITS: logits, LOGIT_GRADS: grads}
    r = Round(1, clients, {}, None)  # type: ignore[arg-type]
    proto.fakes(r, 0)
    proto.combine(r, 0, [_Answer(p, answers[p]) for p in clients])

    # By hand: v_k = [o_k ; o_k ∇l_k], o_k = exp(l_k); clipped as one vector; sum + noise; / m.
    total = np.zeros(b * (d + 1))
    n_clipped = 0
    for p in clients:
        o = np.exp(answers[p][LOGITS].astype(np.float64))
        v = np.concatenate([o, (o[:, None] * answers[p][LOGIT_GRADS].astype(np.float64)).ravel()])
        n = np.sqrt(np.sum(v**2))
        n_clipped += n > clip
        total += v if n <= clip else v * (clip / n)
    if sigma:
        total += numpy_rng(s.seed, "dp-noise", 1, 0).normal(0.0, sigma * clip, b * (d + 1))
    mean = total / M
    np.testing.assert_allclose(seen["mean"], mean, rtol=1e-12, atol=1e-15)
    assert 0 < n_clipped < len(clients)  # the case is one where the clip acts on some blocks
    # Non-saturating L_G = mean softplus(−log Φ): ∂L/∂x_b = −∇Φ_b / (B Φ_b (1 + Φ_b)), Φ
    # floored at the noise's std σC/m (or the smallest positive float without noise).
    phi, dphi = mean[:b], mean[b:].reshape(b, d)
    phi = np.maximum(phi, max(sigma * clip / M, np.finfo(np.float64).tiny))
    if sigma:
        assert (mean[:b] < sigma * clip / M).any()  # the floor acts on some rows here
    e = -dphi / (b * phi * (1 + phi))[:, None]
    np.testing.assert_allclose(seen["e"].numpy(), e, rtol=1e-5, atol=1e-9)
    assert float(seen["loss"]) == pytest.approx(np.mean(np.log1p(1 / phi)), rel=1e-5)
    assert proto.round_metrics()["privacy.clipped_fraction"] == pytest.approx(n_clipped / 4)


def test_a_diverged_uagan_answer_counts_as_zero() -> None:
    s = users("uagan", {"noise_multiplier": 0.0, "clip": 1e12})
    proto = _protocol(s)
    seen = _spy(proto)
    b, d = s.gan.batch_size, 2
    ok = {LOGITS: np.zeros(b, np.float32), LOGIT_GRADS: np.ones((b, d), np.float32)}
    # A logit past float64's exp (≈ 709) cannot be formed into odds: a diverged client's block.
    over = {LOGITS: np.full(b, 800.0, np.float32), LOGIT_GRADS: np.ones((b, d), np.float32)}
    r = Round(1, [1, 2], {}, None)  # type: ignore[arg-type]
    proto.fakes(r, 0)
    proto.combine(r, 0, [_Answer(1, ok), _Answer(2, over)])
    np.testing.assert_allclose(seen["mean"], np.ones(b * (d + 1)) / M)
    assert proto.round_metrics()["privacy.clipped_fraction"] == 0.5


# --- critic swaps, state ------------------------------------------------------------------------


def test_critic_swaps_are_refused_at_user_level_and_off_by_default() -> None:
    base = {"noise_multiplier": 1.0, "clip": 1.0}
    swapping = users("mdgan", base, federation={"protocol_params": {"swap_every": 4}})
    problems = check_protocol(swapping)
    assert any(p.startswith("federation.protocol_params.swap_every: 4:") for p in problems)
    for ok in (
        users("mdgan", base),
        users("mdgan", base, federation={"protocol_params": {"swap_every": 0}}),
        users("mdgan", None, federation={"protocol_params": {"swap_every": 4}}),
    ):
        assert check_protocol(ok) == []
    assert _protocol(users("mdgan", base)).swap_every == 0  # off under user-level DP
    assert _protocol(users("mdgan", None)).swap_every == 100  # the default without privacy


def test_a_stopped_run_resumes_with_its_adaptive_clip(tmp_path: Path) -> None:
    s = users(
        "uagan",
        {"noise_multiplier": 1.0, "clip": 0.5, "adaptive": {"count_noise": 2.0}},
        federation={"rounds": 4},
    )
    reference = run_federated(s, tmp_path / "ref").metrics
    clips = _global(reference, "privacy.clip")
    assert list(clips.index) == [1, 2, 3, 4] and clips.nunique() == 4  # the clip moves
    # Stop in round 3's second exchange: the checkpoint of round 2 holds its clip.
    sent = [len(sample_clients(s, r)) for r in (1, 2, 3)]
    n = 2 * (sent[0] + sent[1]) + sent[2] + 1
    store = RunStore.create(tmp_path / "stopped", s.name, resolved_yaml(s), {})
    config = {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    with pytest.raises(Killed):
        run_serverapp(server_app, InProcessGrid(killer(MessageType.TRAIN, n), 100, config))
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 2
    assert ckpt.strategy[DP_STATE]["clip"] == pytest.approx(clips[2])
    resumed = resume_federated(store.path)
    pd.testing.assert_frame_equal(resumed.metrics, reference)


def test_no_nan_generator_loss_when_the_clients_losses_are_withheld(tmp_path: Path) -> None:
    # At sample level the combination is the ordinary one, but the replies carry no g_loss.
    s = tiny(
        federation={"protocol": "mdgan", "rounds": 1, "local_steps": 2},
        privacy={"level": "sample", "noise_multiplier": 1.0, "clip": 1.0, "delta": 1e-3},
    )
    m = run_federated(s, tmp_path).metrics
    assert len(_global(m, "privacy.epsilon")) == 1
    assert len(_global(m, "server.g_loss")) == 0
