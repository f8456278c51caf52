"""Conditional training in every protocol: the per-row client weights π_j(c) by hand, UA-GAN's
Φ(x|c) feedback against the unconditional one, the server's batches (each client's critic
batches of categories it holds, one feedback condition for all), MD-GAN's weighted feedback,
and a few conditional steps of fedavg, mdgan and uagan on the tiny ring (condition `mode`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from fedgan.server.protocols.base import Round, Setup
from fedgan.server.protocols.mdgan import MDGAN
from fedgan.server.protocols.uagan import UAGAN
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.gan.conditional import row_weights, uagan_feedback_rows
from fedgan.simulator.gan.split import uagan_feedback
from fedgan.simulator.messages import FAKE_CRITIC, FAKE_FEEDBACK, FEEDBACK
from fedgan.simulator.prepare import federated_data, initial_state, make_gan
from fedgan.simulator.store import load_run

from tests.conftest import tiny

COUNTS = np.array([[10, 0], [30, 5], [0, 15]])
"""Three clients' rows of two categories: client 0 has no row of c = 1, client 2 none of 0."""


def test_row_weights_by_hand_size_weights() -> None:
    n = COUNTS.sum(axis=1)  # [10, 35, 15]: UA-GAN's pi: size, ρ_j ∝ n_j
    w = row_weights(n / n.sum(), COUNTS, np.array([0, 1, 1]))
    # π_j(c) ∝ n_{j,c}: c = 0 → [10, 30, 0] / 40; c = 1 → [0, 5, 15] / 20
    expected = np.array([[0.25, 0, 0], [0.75, 0.25, 0.25], [0, 0.75, 0.75]])
    np.testing.assert_allclose(w, expected)


def test_row_weights_by_hand_uniform_weights() -> None:
    w = row_weights(np.full(3, 1 / 3), COUNTS, np.array([0, 1]))
    # the uniform mixture's posterior: ∝ n_{j,c}/n_j — c = 0: [1, 6/7, 0]; c = 1: [0, 1/7, 1]
    np.testing.assert_allclose(w[:, 0], [7 / 13, 6 / 13, 0])
    np.testing.assert_allclose(w[:, 1], [0, 1 / 8, 7 / 8])
    # no answering client holds the category: the row teaches nothing
    only0 = row_weights(np.array([1.0]), COUNTS[[0]], np.array([1]))
    np.testing.assert_allclose(only0, [[0.0]])


def test_uagan_rows_reduce_to_the_unconditional_feedback() -> None:
    gan = make_gan(tiny(federation={"protocol": "uagan", "rounds": 1, "local_steps": 1}))
    torch.manual_seed(0)
    logits, grads = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, 2).double()
    pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    e0, l0 = uagan_feedback(gan, logits, grads, torch.log(pi))
    e1, l1 = uagan_feedback_rows(gan, logits, grads, pi[:, None].expand(3, 5))
    torch.testing.assert_close(e1, e0)
    torch.testing.assert_close(l1, l0)
    # a client with π = 0 at a row is out of that row: the same as leaving it out
    rows = pi[:, None].expand(3, 5).clone()
    rows[:, 2] = torch.tensor([0, 5 / 8, 3 / 8])  # a row's π_j(c) sum to 1 (`row_weights`)
    e2, _ = uagan_feedback_rows(gan, logits, grads, rows)
    rest = torch.log(pi[1:] / pi[1:].sum())
    e_without, _ = uagan_feedback(gan, logits[1:, 2:3], grads[1:, 2:3], rest)
    torch.testing.assert_close(e2[2], e_without[0] / 5)  # the batch mean's 1/B: 1/5, not 1/1


def _server(protocol: str) -> tuple[Any, Any]:
    s = tiny(
        gan={"conditional": {"column": "mode"}},
        federation={"protocol": protocol, "rounds": 1, "local_steps": 1},
        partition={"name": "dirichlet", "params": {"alpha": 0.2}, "n_clients": 4},
    )
    data = federated_data(s)
    gan = make_gan(s, data)
    setup = Setup(s, data, gan, initial_state(s, gan).arrays(), {})
    return (MDGAN if protocol == "mdgan" else UAGAN)(setup), data


@pytest.mark.parametrize("protocol", ["mdgan", "uagan"])
def test_the_server_sends_each_client_conditions_it_holds(protocol: str) -> None:
    proto, data = _server(protocol)
    held = proto.counts > 0
    assert not held.all()  # alpha 0.2: some client lacks some mode
    clients = list(range(data.n_clients))
    fakes = proto.fakes(Round(1, clients, {}, None), 0)  # type: ignore[arg-type]
    d, k = 2, proto.cond.width
    feedback_opts = []
    for p in clients:
        crit, fb = fakes[p][FAKE_CRITIC], fakes[p][FAKE_FEEDBACK]
        assert crit.shape[-1] == d + k and fb.shape[-1] == d + k
        opts = crit[..., d:].argmax(-1)
        assert np.all(crit[..., d:].sum(-1) == 1)
        assert held[p, np.unique(opts)].all()  # only categories client p can pair
        feedback_opts.append(fb[:, d:].argmax(-1))
    for o in feedback_opts[1:]:
        np.testing.assert_array_equal(o, feedback_opts[0])  # one condition vector for all
    np.testing.assert_array_equal(feedback_opts[0], proto._opts)


def test_mdgan_feedback_rows_are_weighted_by_pi(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedgan.server.protocols.mdgan as mdgan

    proto, data = _server("mdgan")
    clients = list(range(data.n_clients))
    proto.fakes(Round(1, clients, {}, None), 0)  # type: ignore[arg-type]
    B, d, k = proto.gan.config.batch_size, 2, proto.cond.width
    monkeypatch.setattr(mdgan, "read_step_reply", lambda m: SimpleNamespace(train={}))
    replies = [
        SimpleNamespace(
            partition_id=p, message=None, arrays=lambda: {FEEDBACK: np.ones((B, d + k))}
        )
        for p in clients
    ]
    w = np.full(len(clients), 1 / len(clients))
    _, fb, _ = proto.feedback(replies, w)  # type: ignore[arg-type]
    fb = fb.numpy().reshape(len(clients), B, d)
    n = proto.counts.astype(float)
    share = n / n.sum(axis=1, keepdims=True)  # p_j(c)
    for i, c in enumerate(proto._opts):
        expected = share[:, c] / share[:, c].sum()
        np.testing.assert_allclose(fb[:, i, 0], expected, rtol=1e-6)
        assert np.all(fb[proto.counts[:, c] == 0, i] == 0)  # a client without c: nothing


@pytest.mark.parametrize("protocol", ["fedavg", "mdgan", "uagan"])
def test_a_conditional_run_takes_its_steps_alike_on_both_engines(
    protocol: str, tmp_path: Path
) -> None:
    fed: dict[str, Any] = {"rounds": 1, "local_steps": 2}
    if protocol != "fedavg":
        fed["protocol"] = protocol
    tables = []
    for engine in ("inprocess", "vectorized"):  # one client at a time vs vmapped clients
        s = tiny(
            gan={"conditional": {"column": "mode", "sampling": "uniform"}},
            federation=fed,
            evaluation={"n_samples": 100},
            engine={"name": engine},
        )
        tables.append(load_run(run_federated(s, tmp_path / engine).path).metrics)
    m = tables[0]
    if protocol == "fedavg":
        ce = m[m.metric == "train.g_cond_ce"].value
        assert len(ce) and np.all(ce == 0)  # `mode` is not a column of X: no term
    assert np.isfinite(m[m.metric.str.startswith("train.")].value.astype(float)).all()
    assert (m.metric == "eval.coverage").any()
    keys = ["round", "scope", "client", "group_by", "group", "metric"]
    both = tables[0].merge(tables[1], on=keys, suffixes=("_seq", "_vec"))
    assert len(both) == len(tables[0]) == len(tables[1])
    np.testing.assert_allclose(
        both.value_vec.astype(float), both.value_seq.astype(float), rtol=1e-4, atol=1e-5
    )


def test_fedgan_sample_group_draws_one_category(tmp_path: Path) -> None:
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    s = tiny(
        gan={"conditional": {"column": "mode"}},
        federation={"rounds": 1, "local_steps": 2},
        evaluation={"n_samples": 100},
    )
    run = run_federated(s, tmp_path).path
    out = tmp_path / "g.npz"
    args = ["sample", str(run), "--n", "30", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--group", "3"])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        rows = z["x"]
    assert rows.shape == (30, 2)
    res = CliRunner().invoke(app, [*args, "--group", "0"])
    with np.load(out) as z:
        assert not np.allclose(z["x"], rows)  # another condition, the same latents
    res = CliRunner().invoke(app, [*args, "--group", "9"])
    assert res.exit_code == 2
    assert "not a category of the conditioned column mode" in res.output
    assert "allowed: 0, 1, 2, 3, 4, 5, 6, 7" in res.output
    # The Python API: `draw(group=...)` gives the rows `gan.sample` draws held at that option.
    from fedgan.simulator.gan.conditional import conditioned
    from fedgan.simulator.prepare import make_gan
    from fedgan.simulator.sample import SampleError, draw

    with conditioned(make_gan(s), 3):
        held = draw(run, 30).x
    np.testing.assert_array_equal(draw(run, 30, group="3").x, held)
    np.testing.assert_array_equal(held, rows)
    with pytest.raises(SampleError, match="allowed: 0, 1"):
        draw(run, 30, group="x")


def test_a_client_pairs_each_fake_row_with_a_real_row_of_its_condition() -> None:
    from fedgan.clients.answers import StepRequest, _prepare
    from fedgan.simulator.messages import ANSWER_LOGITS, StepInstruction
    from fedgan.simulator.prepare import critic_state

    proto, data = _server("uagan")
    s, gan, cond = proto.setup.scenario, proto.gan, proto.cond
    clients = list(range(data.n_clients))
    fakes = proto.fakes(Round(1, clients, {}, None), 0)  # type: ignore[arg-type]
    for p in clients:
        req = StepRequest(p, StepInstruction(1, 0, ANSWER_LOGITS), fakes[p])
        prep = _prepare(s, gan, data, req, critic_state(s, gan))
        reals = prep.reals.numpy()
        np.testing.assert_array_equal(reals[..., 2:], fakes[p][FAKE_CRITIC][..., 2:])
        own = data.client_train[p]
        where = {data.train.X[i].tobytes(): i for i in own}
        rows = np.array([where[r.tobytes()] for r in reals[..., :2].reshape(-1, 2)])
        np.testing.assert_array_equal(
            cond.codes[rows, 0], reals[..., 2:].argmax(-1).reshape(-1)
        )  # every real row is the client's own, of the fake row's category
