"""The vectorized engine: same replies, same metrics as the in-process engine, in one batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fedgan.clients.requests import TrainRequest
from fedgan.clients.training import client_train, clients_train
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.gan import batched
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import initial_state, make_gan
from fedgan.simulator.store import load_run

from tests.conftest import tiny

KEYS = ["round", "scope", "client", "group_by", "group", "metric"]


def _table(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.sort_values(KEYS, kind="stable").reset_index(drop=True)


@pytest.mark.parametrize(
    "gan",
    [
        {"objective": "wasserstein", "lipschitz": {"name": "gradient_penalty"}, "n_critic": 2},
        {"objective": "hinge", "lipschitz": {"name": "spectral_norm"}},
        {"objective": "wasserstein", "lipschitz": {"name": "weight_clip", "params": {"c": 0.1}}},
    ],
)
def test_one_round_updates_match_client_by_client(gan: dict[str, object]) -> None:
    # Generator-only federation: private critics and optimizer moments come back too. A second
    # round starts from the first's private state, as on a real client.
    s = tiny(gan=gan, federation={"federate": "generator", "local_steps": 4})
    g = make_gan(s)
    arrays, _ = split_arrays(initial_state(s, g).arrays(), "generator")
    seq = [client_train(s, c, 1, arrays, None) for c in range(4)]
    vec = clients_train(s, [TrainRequest(c, 1, arrays) for c in range(4)])
    # atol 5e-5: MKL sums the skinny products (the output layers' weight gradients) in another
    # order for a batch of 4 than for one, and where a Wasserstein gradient is zero but for
    # rounding, Adam's lr·g/(|g| + ε) turns that into a visible step (seen: 2e-5 on a clipped
    # critic weight).
    tol = {"rtol": 1e-4, "atol": 5e-5}
    for a, b in zip(seq, vec, strict=True):
        assert not isinstance(b, Exception)
        assert set(a.arrays) == set(b.arrays) and set(a.private) == set(b.private)
        assert any(k.startswith("critic.") for k in b.private)
        for k in a.arrays:
            np.testing.assert_allclose(b.arrays[k], a.arrays[k], **tol)
        for k in a.private:
            np.testing.assert_allclose(b.private[k], a.private[k], **tol)
        assert set(a.metrics) == set(b.metrics)
        for k, v in a.metrics.items():
            assert b.metrics[k] == pytest.approx(v, rel=1e-3, abs=1e-5, nan_ok=True), k
    second = clients_train(s, [TrainRequest(c, 2, arrays, seq[c].private) for c in range(4)])
    again = [client_train(s, c, 2, arrays, seq[c].private) for c in range(4)]
    for a, b in zip(again, second, strict=True):
        assert not isinstance(b, Exception)
        for k in a.arrays:
            np.testing.assert_allclose(b.arrays[k], a.arrays[k], **tol)


def test_a_failing_client_is_reported_in_its_slot() -> None:
    s = tiny(faults={"raise": {"clients": [1]}})
    arrays, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    out = clients_train(s, [TrainRequest(c, 1, arrays) for c in range(3)])
    assert isinstance(out[1], Exception) and "raised" in str(out[1])
    assert not isinstance(out[0], Exception) and not isinstance(out[2], Exception)


def test_whole_runs_agree_within_seed_noise(tmp_path: Path) -> None:
    fed = {"rounds": 3, "local_steps": 5, "clients_per_round": 3, "federate": "generator"}
    runs = {
        name: _table(
            run_federated(
                tiny(seed=seed, federation=fed, engine={"name": eng}), tmp_path / name
            ).metrics
        )
        for name, eng, seed in [
            ("seq", "inprocess", 3),
            ("vec", "vectorized", 3),
            ("other_seed", "inprocess", 4),
        ]
    }
    seq, vec, other = runs["seq"], runs["vec"], runs["other_seed"]
    pd.testing.assert_frame_equal(seq[KEYS], vec[KEYS])
    # Every reply arrived and was aggregated on the vectorized engine too.
    assert (vec.loc[vec["metric"] == "fed.replies", "value"] == 3).all()
    # Row by row the engines agree to float rounding ...
    pd.testing.assert_frame_equal(seq, vec, check_exact=False, rtol=1e-3, atol=1e-4)
    # ... and the last round's metrics (global, per client, per group) differ by far less than
    # another seed moves them.
    last = seq["round"] == seq["round"].max()
    gap_engines = np.nansum(np.abs(seq.loc[last, "value"] - vec.loc[last, "value"]))
    o = other.set_index(KEYS)["value"]
    same_rows = seq.loc[last].set_index(KEYS)["value"]
    gap_seeds = np.nansum(np.abs(same_rows - o.reindex(same_rows.index)))
    assert gap_seeds > 0
    assert gap_engines < 0.01 * gap_seeds


def test_vectorized_run_with_faults_goes_on(tmp_path: Path) -> None:
    s = tiny(
        engine={"name": "vectorized"},
        faults={"raise": {"clients": [2]}},
        federation={"rounds": 2, "min_replies": 1},
    )
    res = run_federated(s, tmp_path)
    run = load_run(res.path)
    raised = [e for e in run.events if e.get("client") == 2 and e["kind"] == "client_error"]
    assert len(raised) == 2 and all("simulated fault" in e["detail"] for e in raised)
    replies = res.metrics.loc[res.metrics["metric"] == "fed.replies", "value"]
    assert (replies == 3).all()
    assert not list(res.path.glob("private-*"))  # the store's spill files are gone


def test_private_state_spills_to_disk_and_batches_split_and_still_match(tmp_path: Path) -> None:
    fed = {"rounds": 2, "local_steps": 3, "federate": "generator"}
    mem = run_federated(tiny(federation=fed, engine={"name": "vectorized"}), tmp_path / "m")
    disk = run_federated(
        tiny(federation=fed, engine={"name": "vectorized", "private_memory_gb": 1e-9}),
        tmp_path / "d",
    )
    pd.testing.assert_frame_equal(_table(mem.metrics), _table(disk.metrics))
    # Batches of 3 and 1 client instead of one of 4: the same numbers up to float rounding.
    split = run_federated(
        tiny(federation=fed, engine={"name": "vectorized", "max_batch": 3}), tmp_path / "s"
    )
    pd.testing.assert_frame_equal(
        _table(mem.metrics), _table(split.metrics), check_exact=False, rtol=1e-4, atol=1e-5
    )


def test_stopped_vectorized_run_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    # Private critics live in the engine's PrivateStore: the checkpoint's private-state queries
    # and the resume's restore queries must reach it. Stopped in round 4's evaluation (the 5th
    # evaluate message: 4 clients evaluate every 2 rounds), after the round-2 checkpoint.
    from fedgan.server.app import RUN_DIR_KEY
    from fedgan.server.app import app as server_app
    from fedgan.simulator.checkpoint import load_latest
    from fedgan.simulator.engines.inprocess import run_serverapp
    from fedgan.simulator.engines.runner import resume_federated
    from fedgan.simulator.engines.vectorized import VectorizedGrid
    from fedgan.simulator.scenario import resolved_yaml
    from fedgan.simulator.store import RunStore
    from fedgan.wire.records import RUN_CONFIG_KEY
    from flwr.app import MessageType

    from tests.server.test_resume import Killed, killer, scenario

    s = scenario(engine={"name": "vectorized"})
    reference = run_federated(s, tmp_path / "ref").metrics
    store = RunStore.create(tmp_path / "stopped", s.name, resolved_yaml(s), {})
    config = {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    grid = VectorizedGrid(killer(MessageType.EVALUATE, 5), 4, config)
    with pytest.raises(Killed):
        run_serverapp(server_app, grid)
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 2 and ckpt.clients
    assert any(k.startswith("critic.") for arrays in ckpt.clients.values() for k in arrays)
    pd.testing.assert_frame_equal(resume_federated(store.path).metrics, reference)


def test_dense_local_evaluations_equal_the_set_by_set_ones() -> None:
    # The GPU path (all clients' held-out sets in one dense batch) run on the CPU: identical.
    from dataclasses import asdict

    from fedgan.clients.scoring import local_evaluations
    from fedgan.simulator.prepare import federated_data

    s = tiny(partition={"client_holdout": 0.5}, evaluation={"k": 3})
    g = make_gan(s)
    state = initial_state(s, g)
    arrays, _ = split_arrays(state.arrays(), "both")
    reqs = [TrainRequest(c, 1, arrays) for c in range(4)]
    data = federated_data(s)
    stacked = batched.stack([state] * 4).g
    sparse = local_evaluations(s, g, data, stacked, reqs, "cpu", dense=False)
    dense = local_evaluations(s, g, data, stacked, reqs, "cpu", dense=True)
    assert any(not isinstance(e, Exception) and e.n_real > 3 for e in sparse)
    for a, b in zip(sparse, dense, strict=True):
        assert not isinstance(a, Exception) and not isinstance(b, Exception)
        np.testing.assert_equal(asdict(a), asdict(b))


def test_fedprox_and_ema_clients_match_client_by_client() -> None:
    # FedProx anchors the batched state at what was received; the EMA generator is what the
    # received-generator evaluation samples from.
    s = tiny(gan={"ema": 0.9}, federation={"local_steps": 4, "proximal_mu": 0.5})
    g = make_gan(s)
    arrays, _ = split_arrays(initial_state(s, g).arrays(), "both")
    seq = [client_train(s, c, 2, arrays, None, prox_mu=0.5) for c in range(3)]
    vec = clients_train(s, [TrainRequest(c, 2, arrays, None, 0.5) for c in range(3)])
    for a, b in zip(seq, vec, strict=True):
        assert not isinstance(b, Exception)
        for k in a.arrays:
            np.testing.assert_allclose(b.arrays[k], a.arrays[k], rtol=1e-4, atol=1e-5)
        assert b.metrics["local.coverage"] == a.metrics["local.coverage"]


def test_unknown_arrays_fail_only_their_client() -> None:
    s = tiny()
    arrays, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    bad = {**arrays, "generator.nope": np.zeros(2, np.float32)}
    out = clients_train(s, [TrainRequest(0, 1, arrays), TrainRequest(1, 1, bad)])
    assert not isinstance(out[0], Exception)
    assert isinstance(out[1], KeyError) and "generator.nope" in str(out[1])
    with pytest.raises(KeyError, match="generator.nope"):  # as the sequential client fails
        client_train(s, 1, 1, bad, None)


def test_local_epochs_give_clients_their_own_step_counts() -> None:
    from fedgan.simulator.prepare import federated_data, local_steps

    s = tiny(
        gan={"lr_schedule": "linear", "batch_size": 16},
        federation={"local_epochs": 0.25, "federate": "generator"},
        partition={"name": "quantity_skew", "params": {"alpha": 0.5}},
    )
    data = federated_data(s)
    steps = [local_steps(s, data, c) for c in range(4)]
    # ceil(0.25 × n_c / 16), by hand from each client's training points
    assert steps == [max(1, -(-len(data.client_train[c]) // 64)) for c in range(4)]
    assert len(set(steps)) > 1
    g = make_gan(s)
    arrays, _ = split_arrays(initial_state(s, g).arrays(), "generator")
    seq = [client_train(s, c, 2, arrays, None) for c in range(4)]
    vec = clients_train(s, [TrainRequest(c, 2, arrays) for c in range(4)])
    for a, b in zip(seq, vec, strict=True):
        assert not isinstance(b, Exception)
        for k in a.arrays:
            np.testing.assert_allclose(b.arrays[k], a.arrays[k], rtol=1e-4, atol=1e-5)
        for k in a.private:
            np.testing.assert_allclose(b.private[k], a.private[k], rtol=1e-4, atol=1e-5)
