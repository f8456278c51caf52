"""The federated round loop on the in-process engine: real ClientApp, ServerApp, strategies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fedgan.clients.app import app as real_client_app
from fedgan.clients.training import client_train
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.server.loop import sample_clients
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.simulator.scenario import resolved_yaml
from fedgan.simulator.store import RunStore, load_run
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from tests.conftest import tiny


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    s = tiny()
    a = run_federated(s, tmp_path / "a").metrics
    b = run_federated(s, tmp_path / "b").metrics
    assert len(a) > 100
    pd.testing.assert_frame_equal(a, b)
    c = run_federated(tiny(seed=4), tmp_path / "c").metrics
    assert not a["value"].equals(c["value"])


def test_fedavg_round_equals_weighted_mean_of_client_updates(tmp_path: Path) -> None:
    """Oracle: rerun each client's local training by hand and average by num-examples."""
    s = tiny(federation={"rounds": 1})
    res = run_federated(s, tmp_path)
    data = federated_data(s)
    gan = make_gan(s, data)
    init, _ = split_arrays(initial_state(s, gan).arrays(), "both")
    updates = [client_train(s, c, 1, init, None) for c in range(4)]
    weights = np.array([u.metrics["num-examples"] for u in updates])
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    assert set(ckpt.files) == set(init)
    for key in init:
        pairs = zip(weights, updates, strict=True)
        expected = sum(w * u.arrays[key] for w, u in pairs) / weights.sum()
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)


def test_generator_only_federation_keeps_critics_private(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 2, "local_steps": 3, "federate": "generator"})
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    grid = InProcessGrid(
        real_client_app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    )
    run_serverapp(server_app, grid)
    ckpt = np.load(store.path / "checkpoints" / "round-000002.npz")
    assert all(k.startswith("generator.") for k in ckpt.files)
    critics = []
    for state in grid.states().values():
        private = state["private"]
        assert isinstance(private, ArrayRecord)
        assert any(k.startswith("critic.") for k in private)
        assert not any(k.startswith("generator.") for k in private)
        critics.append(private["critic.net.0.weight"].numpy())
    assert not np.allclose(critics[0], critics[1]), "each client trains its own critic"


class FaultyClient:
    """Wraps the real ClientApp: partition 1 raises, partition 2 sends NaN arrays."""

    def __init__(self) -> None:
        self.app = ClientApp()
        self.app.train()(self.train)
        self.app.evaluate()(lambda m, c: real_client_app(m, c))
        self.app.query()(lambda m, c: real_client_app(m, c))

    def train(self, msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid == 1:
            raise RuntimeError("disk on fire")
        reply = real_client_app(msg, context)
        if pid == 2:
            arrays = reply.content["arrays"]
            bad = {k: Array(np.full(v.shape, np.nan, dtype=np.float32)) for k, v in arrays.items()}
            content = RecordDict(
                {"arrays": ArrayRecord(array_dict=bad), "metrics": reply.content["metrics"]}
            )
            return Message(content, reply_to=msg)
        return reply


def test_raising_and_diverging_clients_are_events_and_the_run_goes_on(tmp_path: Path) -> None:
    s = tiny()
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    grid = InProcessGrid(
        FaultyClient().app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    )
    run_serverapp(server_app, grid)
    run = load_run(store.path)
    kinds = [(e["kind"], e.get("client"), e.get("round")) for e in run.events]
    for rnd in (1, 2):
        assert ("client_error", 1, rnd) in kinds
        assert ("client_diverged", 2, rnd) in kinds
    assert any(k[0] == "run_finished" for k in kinds)
    error = next(e for e in run.events if e["kind"] == "client_error")
    assert "disk on fire" in error["detail"]
    replies = run.metrics.query("metric == 'fed.replies'")["value"].tolist()
    assert replies == [2.0, 2.0]
    assert np.isfinite(
        np.load(store.path / "checkpoints" / "round-000002.npz")["generator.net.0.weight"]
    ).all()


def test_too_few_replies_skips_the_round(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 1, "min_replies": 3})
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    grid = InProcessGrid(
        FaultyClient().app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    )
    run_serverapp(server_app, grid)
    events = load_run(store.path).events
    skipped = [e for e in events if e["kind"] == "round_skipped"]
    assert skipped and skipped[0]["replies"] == 2 and skipped[0]["min_replies"] == 3
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ckpt = np.load(store.path / "checkpoints" / "round-000001.npz")
    np.testing.assert_array_equal(ckpt["generator.net.0.weight"], init["generator.net.0.weight"])


def test_client_sampling_is_seeded_over_partition_ids() -> None:
    s = tiny(partition={"n_clients": 10}, federation={"clients_per_round": 3, "rounds": 5})
    picks = [sample_clients(s, r) for r in range(1, 6)]
    assert all(len(p) == 3 and p == sorted(set(p)) for p in picks)
    assert picks == [sample_clients(s, r) for r in range(1, 6)]
    assert len({tuple(p) for p in picks}) > 1, "different rounds sample different clients"


def test_the_worst_client_is_the_least_served(tmp_path: Path) -> None:
    """Each client's served share is Σ of its held-out points in groups not forgotten over its
    held-out points (counted here from the partition and the global `forgotten` rows), and
    the `worst_client` row names the smallest share."""
    from fedgan.simulator.prepare import federated_data

    s = tiny(federation={"rounds": 1})
    m = run_federated(s, tmp_path).metrics
    data = federated_data(s)
    lost = set(m.query("scope == 'global' and metric == 'forgotten' and value == 1")["group"])
    served = m.query("scope == 'client' and metric == 'eval.served_share' and group_by == 'mode'")
    shares = dict(zip(served["client"], served["value"], strict=True))
    labels = data.train.groups["mode"].astype(str).to_numpy()
    for k, idx in enumerate(data.client_held):
        kept = sum(1 for g in labels[idx] if g not in lost)
        assert shares[k] == pytest.approx(kept / len(idx))
    worst = m.query("scope == 'clients' and metric == 'worst_client'")["value"]
    lowest = min(shares.values())
    assert int(worst.iloc[0]) == min(c for c, v in shares.items() if v == lowest)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fedavg", {}),
        ("fedprox", {"proximal_mu": 0.1}),
        ("fedadam", {"eta": 0.01}),
        ("fedyogi", {"eta": 0.01}),
        ("fedadagrad", {"eta": 0.01}),
        ("fedavgm", {"server_momentum": 0.5}),
        ("fedmedian", {}),
        ("fedtrimmedavg", {"beta": 0.25}),
        ("krum", {}),
        ("multikrum", {"num_nodes_to_select": 2}),
        ("qfedavg", {"client_learning_rate": 0.1}),
    ],
)
def test_every_builtin_strategy_runs_by_name(tmp_path: Path, name: str, params: dict) -> None:
    s = tiny(
        strategy={"name": name, "params": params},
        federation={"rounds": 1},
        evaluation={"every": 1, "n_samples": 100},
    )
    res = run_federated(s, tmp_path)
    bad = [e for e in load_run(res.path).events if e["kind"] not in ("run_started", "run_finished")]
    assert bad == []
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    assert not np.allclose(ckpt["generator.net.0.weight"], init["generator.net.0.weight"])


def test_fedprox_sends_mu_and_clients_apply_it(tmp_path: Path) -> None:
    """FedProx only sends `proximal-mu`; the client adds μ/2‖θ − θ_global‖². With plain SGD and
    lr·μ = 1 each step is pulled back to the global model, so 20 local steps drift about as
    far as one step does, against ~20 steps' drift without the term."""
    sgd = {"g_opt": {"name": "sgd", "lr": 0.01}, "d_opt": {"name": "sgd", "lr": 0.01}}

    def drift(mu: float, sub: str) -> float:
        s = tiny(
            strategy={"name": "fedprox", "params": {"proximal_mu": mu}},
            gan=sgd,
            federation={"rounds": 1, "local_steps": 20},
        )
        res = run_federated(s, tmp_path / sub)
        init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
        ckpt = np.load(res.path / "checkpoints/round-000001.npz")
        return float(
            sum(np.sum((ckpt[k] - init[k]) ** 2) for k in init if k.startswith("generator"))
        )

    assert drift(100.0, "near") < 0.2 * drift(0.0, "far")


def test_plugin_strategy_from_a_file(tmp_path: Path) -> None:
    plugin = tmp_path / "my_rule.py"
    plugin.write_text(
        "from flwr.serverapp.strategy import FedAvg\n"
        "CALLS = []\n"
        "class Recording(FedAvg):\n"
        "    def aggregate_train(self, server_round, replies):\n"
        "        replies = list(replies)\n"
        "        CALLS.append((server_round, len(replies)))\n"
        "        return super().aggregate_train(server_round, replies)\n"
    )
    s = tiny(strategy={"name": f"{plugin}:Recording"})
    run_federated(s, tmp_path / "runs")
    import sys

    module = next(
        m
        for n, m in sys.modules.items()
        if n.startswith("fedgan_plugin_") and getattr(m, "Recording", None) is not None
    )
    assert module.CALLS == [(1, 4), (2, 4)]


def test_partition_table_is_written(tmp_path: Path) -> None:
    res = run_federated(tiny(federation={"rounds": 1}), tmp_path)
    table = pd.read_csv(res.path / "partition.csv")
    assert set(table.columns) >= {"client", "group_by", "group", "n"}
    assert table["n"].sum() == len(federated_data(tiny()).train.X)
    env = json.loads((res.path / "env.json").read_text())
    assert env["engine"] == "inprocess"
    timings = pd.read_csv(res.path / "timings.csv")
    per_client = timings[timings["phase"] == "client_train"]
    assert sorted(per_client["client"]) == [0, 1, 2, 3] and (per_client["seconds"] > 0).all()
    assert not res.metrics["metric"].str.startswith("time.").any(), "wall times stay out"


def test_one_strategy_per_network(tmp_path: Path) -> None:
    """FedAvg for the generator, FedMedian for the critic: oracle against the client updates."""
    s = tiny(strategy={"name": "fedavg", "critic": {"name": "fedmedian"}}, federation={"rounds": 1})
    res = run_federated(s, tmp_path)
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    updates = [client_train(s, c, 1, init, None) for c in range(4)]
    weights = np.array([u.metrics["num-examples"] for u in updates])
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    for key in init:
        stack = np.stack([u.arrays[key] for u in updates])
        if key.startswith("generator."):
            expected = np.tensordot(weights, stack, axes=1) / weights.sum()
        else:
            expected = np.median(stack, axis=0)
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6, err_msg=key)


def test_ema_run_evaluates_the_servers_ema_of_the_aggregated_generator(tmp_path: Path) -> None:
    """With gan.ema = β the server samples from ema_r = β^K·ema_{r−1} + (1 − β^K)·θ_r, where θ_r
    is round r's aggregated generator, K the local steps and ema_0 the initial generator — not
    from the untrained initial state's EMA copy (recomputed here from the round checkpoints)."""
    import torch
    from fedgan.simulator.seeding import torch_generator

    beta, k = 0.9, 2
    s = tiny(gan={"ema": beta}, federation={"rounds": 3, "local_steps": k})
    res = run_federated(s, tmp_path)
    data = federated_data(s)
    gan = make_gan(s, data)
    init = initial_state(s, gan)
    assert init.g_ema == {}, "clients whose generator travels keep no EMA of their own"
    ema = {k_: v.numpy().astype(np.float64) for k_, v in init.g.items()}
    b = beta**k
    for rnd in (1, 2, 3):
        ckpt = np.load(res.path / "checkpoints" / f"round-{rnd:06d}.npz")
        ema = {n: b * ema[n] + (1 - b) * ckpt[f"generator.{n}"] for n in ema}
        for n in ema:
            np.testing.assert_allclose(ckpt[f"generator_ema.{n}"], ema[n], rtol=1e-5, atol=1e-6)
        gen = torch_generator(s.seed, "sample", rnd)
        z = torch.randn(s.evaluation.n_samples, s.gan.latent_dim, generator=gen)
        g = {n: torch.as_tensor(v, dtype=torch.float32) for n, v in ema.items()}
        expected = gan.G(g, z).detach().numpy()
        got = np.load(res.path / "samples" / f"round-{rnd:06d}.npy")
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        untrained = gan.G(init.g, z).detach().numpy()
        assert np.abs(got - untrained).max() > 1e-4  # far above float rounding
