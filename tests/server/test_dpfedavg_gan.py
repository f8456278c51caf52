"""`dpfedavg_gan` (DP-FedAvg-GAN, Augenstein et al. 2020): critics trained on the clients
against the received generator and averaged (DP-FedAvg at user level), the generator trained on
the server against their mean.

Oracles: the server's critic after a round against the uniform mean of what the clients
returned (and, with σ = 0 and no clip, the DP aggregator's against the same); the server's
generator against generator steps taken by hand with autograd (SGD, so a step is the gradient);
the clients' critic-only round against the reference critic step in a loop, their replies
without a generator, a generator in a reply changing nothing; the scenario file validated,
accounted (ε ≈ 5×10⁶) and run on both engines with the same table; a stopped run resumed to
the uninterrupted table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.clients.requests import TrainRequest
from fedgan.clients.training import ClientUpdate, clients_train
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.server.protocols import build_protocol, check_protocol
from fedgan.server.protocols.base import Round, Setup
from fedgan.server.protocols.dpfedavg_gan import DPFedAvgGAN
from fedgan.server.protocols.fedavg import DP_STATE
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import check_scenario, resume_federated, run_federated
from fedgan.simulator.messages import CRITIC_PREFIXES, GENERATOR, select
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.simulator.privacy import accountant, budget
from fedgan.simulator.scenario import Scenario, load, resolved_yaml
from fedgan.simulator.seeding import torch_generator
from fedgan.simulator.store import RunStore
from fedgan.wire.codec import arrays_of, read_train
from fedgan.wire.flwr_internals import task_identity
from fedgan.wire.records import RUN_CONFIG_KEY, from_record
from flwr.app import MessageType

from tests.conftest import tiny
from tests.server.test_resume import Killed, killer

SCENARIO = Path(__file__).parents[2] / "scenarios" / "privacy" / "dp-fedavg-gan.yaml"
M = 10  # clients a round
SGD = {"name": "sgd", "lr": 0.05}  # the generator's step is −lr · its gradient


def users(privacy: dict[str, Any] | None, **sections: Any) -> Scenario:
    """100 clients (iid) of a 6,000-point ring, 10 a round, 2 rounds × 2 local steps with
    n_critic 2, tiny MLPs (B = 32, d = 2), the R1 penalty (a double backward in every step)."""
    base: dict[str, Any] = {
        "data": {"n_samples": 6000},
        "partition": {"name": "iid", "params": {}, "n_clients": 100},
        "federation": {
            "protocol": "dpfedavg_gan",
            "rounds": 2,
            "local_steps": 2,
            "clients_per_round": M,
        },
        "gan": {"n_critic": 2, "lipschitz": {"name": "r1", "params": {}}},
        "evaluation": {"every": 2, "n_samples": 200},
    }
    if privacy is not None:
        base["privacy"] = {"delta": 1e-3, **privacy}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return tiny(**base)


class _Answer:
    """A reply as the protocol's combination reads it: who sent it and its arrays."""

    def __init__(self, pid: int, arrays: dict[str, np.ndarray]) -> None:
        self.partition_id = pid
        self._arrays = arrays

    def arrays(self) -> dict[str, np.ndarray]:
        return self._arrays


def _protocol(s: Scenario) -> DPFedAvgGAN:
    data = federated_data(s)
    gan = make_gan(s, data)
    proto = build_protocol(Setup(s, data, gan, initial_state(s, gan).arrays(), {}))
    assert isinstance(proto, DPFedAvgGAN)
    return proto


def _round(proto: DPFedAvgGAN, clients: list[int], number: int = 1) -> tuple[Round, Any]:
    """Round `number` for `clients`: the protocol's instruction, decoded (arrays, instruction)."""
    r = Round(number, clients, {p: 1000 + p for p in clients}, None)  # type: ignore[arg-type]
    with task_identity(1, 1, task_id=1):  # what an engine sets before a server's messages
        msgs = proto.instructions(r, 0)
    assert len(msgs) == len(clients)
    assert len({id(m.content) for m in msgs}) == 1  # one record for all: decoded once
    return r, msgs[0]


def _client_round(
    s: Scenario, msg: Any, clients: list[int], batched: bool = False
) -> list[ClientUpdate]:
    ins = read_train(msg)
    received = from_record(arrays_of(msg))
    reqs = [
        TrainRequest(p, ins.round, received, None, ins.proximal_mu, ins.critic_only)
        for p in clients
    ]
    out = clients_train(s, reqs, batched=batched)
    assert all(isinstance(u, ClientUpdate) for u in out), out
    return out  # type: ignore[return-value]


# --- the server's critic: the clients' mean -----------------------------------------------------


@pytest.mark.parametrize(
    "privacy",
    [
        None,
        # No noise, no clip, exactly m clients: the DP-FedAvg release is the uniform mean.
        {"level": "user", "noise_multiplier": 0.0, "clip": 1e12, "sampling": "fixed"},
    ],
    ids=["no-privacy", "user-level-sigma0-noclip"],
)
def test_the_server_critic_is_the_uniform_mean_of_the_returned_critics(
    privacy: dict[str, Any] | None,
) -> None:
    # Dirichlet clients: their sizes differ, so a num-examples mean would not pass for this one.
    s = users(privacy, partition={"name": "dirichlet", "params": {"alpha": 0.5}})
    proto = _protocol(s)
    clients = [3, 11, 27, 40, 52, 68, 71, 85, 90, 99]
    sizes = [len(federated_data(s).client_train[p]) for p in clients]
    assert max(sizes) > 1.5 * min(sizes)
    r, msg = _round(proto, clients)
    assert read_train(msg).critic_only
    before = dict(proto.critic)
    updates = _client_round(s, msg, clients)
    returned = [u.arrays for u in updates]
    proto.combine(r, 0, [_Answer(p, a) for p, a in zip(clients, returned, strict=True)])
    assert set(proto.critic) == set(before) and proto.critic
    for k in before:
        stacked = np.stack([a[k] for a in returned]).astype(np.float64)
        assert np.abs(stacked - before[k]).max() > 1e-4  # the clients moved their critics
        np.testing.assert_allclose(proto.critic[k], stacked.mean(0), rtol=1e-5, atol=1e-7)
    # the state a checkpoint keeps, and the shares the `fed.weight` rows record: 1/m each
    st = proto.state()
    for k in before:
        np.testing.assert_array_equal(st.arrays[k], proto.critic[k])
    assert proto.shares(r, 0, []) == {p: pytest.approx(1 / M) for p in clients}
    if privacy is not None:
        assert proto.round_metrics()["privacy.clipped_fraction"] == 0.0
        assert DP_STATE in st.data


def test_under_user_level_dp_the_critic_is_fedavgs_seeded_release() -> None:
    """σ > 0 and a clip that acts: the critic update is fedavg's DP aggregator's release over
    the critic arrays only (the same aggregator, the same noise stream)."""
    from fedgan.server.protocols.fedavg import user_level_aggregator

    s = users({"level": "user", "noise_multiplier": 0.5, "clip": 0.01})
    proto = _protocol(s)
    clients = [1, 2, 3, 4, 5, 6, 7]
    r, msg = _round(proto, clients)
    before = dict(proto.critic)
    returned = [u.arrays for u in _client_round(s, msg, clients)]
    proto.combine(r, 0, [_Answer(p, a) for p, a in zip(clients, returned, strict=True)])
    dp = user_level_aggregator(s)
    assert dp is not None
    expected = dp.combine(before, returned, 1, 0)
    assert expected.clipped == len(clients)  # every update clipped
    for k in before:
        np.testing.assert_array_equal(proto.critic[k], expected.mean[k])
    assert proto.round_metrics()["privacy.clipped_fraction"] == 1.0


# --- the server's generator: its own steps against the combined critic --------------------------


def test_the_server_generator_takes_its_steps_against_the_combined_critic() -> None:
    gen_steps = 3
    s = users(
        None,
        gan={"g_opt": SGD, "lr_schedule": "constant"},
        federation={"protocol_params": {"generator_steps": gen_steps}},
    )
    proto = _protocol(s)
    g0 = {k: v.detach().clone().double() for k, v in proto.gstate.g.items()}
    clients = list(range(0, 100, 10))
    r, msg = _round(proto, clients, number=2)
    sent = from_record(arrays_of(msg))
    assert {k for k in sent if k.startswith(GENERATOR)} == {GENERATOR + k for k in g0}
    updates = _client_round(s, msg, clients)
    for u in updates:  # a client returns its critic only: never a generator
        assert set(u.arrays) == set(select(sent, CRITIC_PREFIXES))
    # A reply that carried a (garbage) generator would change nothing: it is never read.
    poisoned = [
        _Answer(
            p, u.arrays | {GENERATOR + k: np.full(v.shape, 1e3, np.float32) for k, v in g0.items()}
        )
        for p, u in zip(clients, updates, strict=True)
    ]
    proto.combine(r, 0, poisoned)
    gan = proto.gan
    critic = initial_state(s, gan).load_arrays(proto.critic)
    d = {k: v.double() for k, v in critic.d.items()}
    buf = {k: v.double() for k, v in critic.d_buf.items()}
    # By hand: the non-saturating loss mean softplus(−D(G(z))) with autograd, SGD steps, the
    # latents of the run's generator steps t = (round − 1) · 3 + j from the server's stream.
    g = {k: v.clone() for k, v in g0.items()}
    for j in range(gen_steps):
        t = (2 - 1) * gen_steps + j
        z = torch.randn(
            s.gan.batch_size, s.gan.latent_dim, generator=torch_generator(s.seed, "server-z", t)
        ).double()
        p = {k: v.clone().requires_grad_(True) for k, v in g.items()}
        loss = torch.nn.functional.softplus(-gan.D(d, buf, gan.G(p, z))).mean()
        grads = torch.autograd.grad(loss, list(p.values()))
        g = {k: v - SGD["lr"] * dg for (k, v), dg in zip(g.items(), grads, strict=True)}
    moved = max(float((g[k] - g0[k]).abs().max()) for k in g)
    assert moved > 1e-4
    for k in g:
        torch.testing.assert_close(proto.gstate.g[k].double(), g[k], rtol=1e-4, atol=1e-6)
    evaluated = proto.generator()  # no EMA: the evaluated generator is G itself
    assert set(evaluated) == {GENERATOR + k for k in g}
    for k, v in proto.gstate.g.items():
        np.testing.assert_array_equal(evaluated[GENERATOR + k], v.numpy())
    assert proto.round_metrics()["server.g_loss"] > 0


# --- the clients' critic-only round --------------------------------------------------------------


@pytest.mark.parametrize(
    "privacy",
    [None, {"level": "sample", "noise_multiplier": 1.0, "clip": 0.5, "sampling": "poisson"}],
    ids=["plain", "dp-sgd"],
)
def test_a_critic_only_round_is_the_reference_critic_step_on_both_paths(
    privacy: dict[str, Any] | None,
) -> None:
    s = users(privacy)
    proto = _protocol(s)
    clients = [5, 17, 33, 64]
    _, msg = _round(proto, clients, number=2)
    received = from_record(arrays_of(msg))
    plain = _client_round(s, msg, clients)
    stacked = _client_round(s, msg, clients, batched=True)
    data = federated_data(s)
    gan = make_gan(s, data)
    assert (gan.config.dp is not None) == (privacy is not None)  # DP-SGD from the config
    f = s.federation
    assert f is not None
    for c, one, many in zip(clients, plain, stacked, strict=True):
        # By hand: local_steps × n_critic reference critic steps against the received G,
        # the noise as GAN.train draws it from the client's stream.
        st = initial_state(s, gan).load_arrays(received)
        g_before = {k: v.clone() for k, v in st.g.items()}
        x = torch.as_tensor(data.train.X[data.client_train[c]])
        noise = gan.draw_steps(len(x), torch_generator(s.seed, "train", c, 2), f.local_steps)
        for t in range(f.local_steps):
            lr = gan.config.lr_scale(f.local_steps + t, f.rounds * f.local_steps)
            n = noise.at(t)
            for i in range(gan.config.n_critic):
                st, _ = gan.critic_step(
                    st,
                    x[n.idx[i]],
                    n.z_d[i],
                    n.eps[i],
                    lr,
                    None if n.mask is None else n.mask[i],
                    None if n.dp_noise is None else n.dp_noise[i],
                )
        for k in g_before:  # the generator is held fixed
            torch.testing.assert_close(st.g[k], g_before[k], rtol=0, atol=0)
        want = select(st.arrays(), CRITIC_PREFIXES)
        assert set(one.arrays) == set(many.arrays) == set(want)
        for k in want:
            assert np.abs(want[k] - received[k]).max() > 1e-5
            np.testing.assert_allclose(one.arrays[k], want[k], rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(many.arrays[k], want[k], rtol=1e-5, atol=1e-6)
        # what the client keeps: its critic's optimizer state, nothing of the generator's
        assert one.private and all(k.startswith("critic_opt.") for k in one.private)
        assert set(one.private) == set(many.private)
        assert one.reply.train.keys() == many.reply.train.keys()
        if privacy is not None:
            assert "dp_clipped_fraction" in one.reply.train
        for k, v in one.reply.train.items():
            assert many.reply.train[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


# --- what the protocol refuses -------------------------------------------------------------------


def test_check_refuses_what_does_not_apply_naming_the_keys() -> None:
    fed = {"protocol": "dpfedavg_gan"}
    assert check_protocol(tiny(federation=fed)) == []
    cases = {
        "strategy.name": {"strategy": {"name": "fedadam"}},
        "strategy.critic": {"strategy": {"critic": {"name": "fedavg"}}},
        "federation.federate": {"federation": {**fed, "federate": "critic"}},
        "federation.local_epochs": {"federation": {**fed, "local_epochs": 1.0}},
        "federation.proximal_mu": {"federation": {**fed, "proximal_mu": 0.1}},
        "federation.protocol_params.generator_steps": {
            "federation": {**fed, "protocol_params": {"generator_steps": 0}}
        },
    }
    for key, sections in cases.items():
        sections = {"federation": fed, **sections}
        problems = check_protocol(tiny(**sections))
        assert [p.split(": ", 1)[0] for p in problems] == [key], (key, problems)


# --- the scenario file ---------------------------------------------------------------------------


def test_the_scenario_validates_and_is_accounted_as_its_comment_says() -> None:
    s = load(SCENARIO)
    assert check_scenario(s) == []
    f, p = s.federation, s.privacy
    assert f is not None and p is not None
    assert (f.protocol, f.rounds, f.local_steps, f.clients_per_round) == (
        "dpfedavg_gan",
        1000,
        6,
        10,
    )
    assert f.protocol_params.get("generator_steps", f.local_steps) == 6
    assert (p.level, p.clip, p.noise_multiplier, p.sampling) == ("user", 0.1, 0.01, "poisson")
    assert s.partition.n_clients == 3400 and s.gan.n_critic == 1
    # One release a round, Poisson-sampled: ε ≈ 5.4×10⁶ after 1,000 rounds (no guarantee).
    eps = budget.run_epsilon(s, (), f.rounds)[budget.USER]
    assert eps == pytest.approx(5.436e6, rel=1e-3)
    # The comment's cohort for ε < 1 with the same noise on the mean (σ = 1, m = 1,000).
    big = accountant.epsilon(
        sampling="poisson",
        population=10**6,
        cohort=1000,
        noise_multiplier=1.0,
        steps=1000,
        delta=1e-6,
    )
    assert big == pytest.approx(0.87, abs=0.005)


def _small(engine: str) -> Scenario:
    """The scenario file at 100 clients (the rest as written), 2 rounds, one evaluation."""
    return load(
        SCENARIO,
        [
            "partition.n_clients=100",
            "data.n_samples=6000",
            "federation.rounds=2",
            "evaluation.every=2",
            "evaluation.n_samples=300",
            f"engine.name={engine}",
        ],
    )


def test_the_scenario_runs_on_both_engines_with_the_same_table(tmp_path: Path) -> None:
    tables = {}
    for engine in ("vectorized", "inprocess"):
        s = _small(engine)
        assert check_scenario(s) == []
        tables[engine] = run_federated(s, tmp_path / engine).metrics
    a, b = tables["vectorized"], tables["inprocess"]
    keys = [c for c in a.columns if c != "value"]
    pd.testing.assert_frame_equal(a[keys], b[keys])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-4, atol=1e-6)
    eps = a[(a["metric"] == "privacy.epsilon") & (a["scope"] == "global")]
    assert list(eps["round"]) == [1, 2]
    assert a[a["metric"] == "server.g_loss"]["value"].notna().all()


# --- checkpoint and resume ----------------------------------------------------------------------


def test_a_stopped_run_resumes_to_the_uninterrupted_table(tmp_path: Path) -> None:
    """4 rounds, 3 of 4 clients a round, a generator EMA and Adam moments on the server; stopped
    in round 3's second train message, after the round-2 checkpoint."""
    s = tiny(
        federation={
            "protocol": "dpfedavg_gan",
            "rounds": 4,
            "local_steps": 3,
            "clients_per_round": 3,
        },
        gan={"ema": 0.9, "n_critic": 2},
        evaluation={"every": 2, "n_samples": 200, "min_group_size": 5},
    )
    reference = run_federated(s, tmp_path / "ref").metrics
    store = RunStore.create(tmp_path / "stopped", s.name, resolved_yaml(s), {})
    config = {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    with pytest.raises(Killed):
        run_serverapp(server_app, InProcessGrid(killer(MessageType.TRAIN, 8), 4, config))
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 2
    assert any(k.startswith("generator_ema.") for k in ckpt.server)
    assert any(k.startswith("generator_opt.") for k in ckpt.server)
    assert any(k.startswith("critic.") for k in ckpt.arrays)
    assert all(k.startswith("critic_opt.") for c in ckpt.clients.values() for k in c)
    resumed = resume_federated(store.path)
    pd.testing.assert_frame_equal(resumed.metrics, reference)


def test_a_stopped_user_level_run_resumes_with_its_adaptive_clip(tmp_path: Path) -> None:
    s = users(
        {"level": "user", "noise_multiplier": 1.0, "clip": 0.05, "adaptive": {"count_noise": 2.0}},
        federation={"rounds": 3, "local_steps": 1},
        gan={"n_critic": 1},
        evaluation={"every": 1},
    )
    reference = run_federated(s, tmp_path / "ref").metrics
    clips = reference[reference["metric"] == "privacy.clip"].set_index("round")["value"]
    assert list(clips.index) == [1, 2, 3] and clips.nunique() == 3  # the clip moves
    from fedgan.simulator.cohorts import sample_clients

    n = len(sample_clients(s, 1)) + len(sample_clients(s, 2)) + 1  # round 3's first message
    store = RunStore.create(tmp_path / "stopped", s.name, resolved_yaml(s), {})
    config = {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    with pytest.raises(Killed):
        run_serverapp(server_app, InProcessGrid(killer(MessageType.TRAIN, n), 100, config))
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 2
    assert ckpt.strategy[DP_STATE]["clip"] == pytest.approx(clips[2])
    resumed = resume_federated(store.path)
    pd.testing.assert_frame_equal(resumed.metrics, reference)
