"""MD-GAN and UA-GAN as protocols: the generator step through real Flower messages equals
autograd of the papers' losses, weights, swaps, bytes, the gate and faults, refusals, and that
no real sample ever reaches the server."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fedgan.clients.app import app as client_app
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.server.protocols import check_protocol
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.engines.inprocess import InProcessGrid, run_serverapp
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.engines.vectorized import VectorizedGrid
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import federated_data, initial_state, make_gan, mixture_holdout
from fedgan.simulator.scenario import Scenario, resolved_yaml
from fedgan.simulator.seeding import torch_generator
from fedgan.simulator.store import RunStore, load_run
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import Message

from tests.conftest import tiny

KEYS = ["round", "scope", "client", "group_by", "group", "metric"]
SGD1 = {"name": "sgd", "lr": 1.0}  # θ_new = θ − ∇θ: the step reveals the gradient


def protocol(name: str, n_clients: int = 3, **fed: Any) -> dict[str, Any]:
    """Sections of a tiny run of protocol `name` (1 round × 1 step unless `fed` says)."""
    return {
        "federation": {"protocol": name, "rounds": 1, "local_steps": 1, **fed},
        "partition": {"n_clients": n_clients},
    }


def _rows(m: pd.DataFrame, metric: str, scope: str = "client") -> pd.Series:
    sel = m[(m["metric"] == metric) & (m["scope"] == scope)]
    return sel.set_index(["round", "client"])["value"] if scope == "client" else sel["value"]


def _npy_bytes(shape: tuple[int, ...]) -> int:
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, np.float32))
    return len(buf.getvalue())


# --- the generator step, end to end -------------------------------------------------------------


def _latents(s: Scenario, *keys: int) -> torch.Tensor:
    """The feedback latents of step 0 (the server's stream: critic batches first)."""
    g = s.gan
    gen = torch_generator(s.seed, "server-z", 0, *keys)
    torch.randn(g.n_critic, g.batch_size, g.latent_dim, generator=gen)
    return torch.randn(g.batch_size, g.latent_dim, generator=gen)


def _one_step(tmp_path: Path, s: Scenario) -> tuple[Any, dict[str, torch.Tensor], Any, Any]:
    """(the run, the generator before and after its one step, the clients' critics)."""
    res = run_federated(s, tmp_path)
    gan = make_gan(s)
    before = {k: v.double() for k, v in initial_state(s, gan).g.items()}
    snap = np.load(res.path / "checkpoints" / "round-000001.npz")
    after = {k: torch.as_tensor(snap[f"generator.{k}"]).double() for k in before}
    ckpt = load_latest(res.path)
    assert ckpt is not None
    critics = {
        pid: initial_state(s, gan).load_arrays(arrays) for pid, arrays in ckpt.clients.items()
    }
    return res, before, after, critics


def _autograd(before: dict[str, torch.Tensor], loss_of: Any) -> torch.Tensor:
    g = {k: v.clone().requires_grad_(True) for k, v in before.items()}
    grads = torch.autograd.grad(loss_of(g), list(g.values()))
    return torch.cat([t.flatten() for t in grads])


def _applied(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(before[k] - after[k]).flatten() for k in before])


def _d(gan: Any, critic: Any, x: torch.Tensor) -> torch.Tensor:
    d = {k: v.double() for k, v in critic.d.items()}
    buf = {k: v.double() for k, v in critic.d_buf.items()}
    return gan.D(d, buf, x)


@pytest.mark.parametrize("weighting", [None, {"name": "coverage_weighted", "params": {"q": 2.0}}])
def test_mdgan_step_is_autograd_of_the_weighted_client_generator_losses(
    tmp_path: Path, weighting: dict[str, Any] | None
) -> None:
    params = {"swap_every": 0} | ({"weighting": weighting} if weighting else {})
    s = tiny(**protocol("mdgan", protocol_params=params), gan={"g_opt": SGD1})
    res, before, after, critics = _one_step(tmp_path, s)
    gan = make_gan(s)
    m = res.metrics
    if weighting is None:
        w = {p: 1 / 3 for p in range(3)}
    else:  # w_k ∝ (1 − c_k + 0.05)², c_k the client's coverage of the sent score points
        cov = _rows(m, "local.coverage").loc[1]
        raw = {p: (1 - cov[p] + 0.05) ** 2 for p in range(3)}
        w = {p: v / sum(raw.values()) for p, v in raw.items()}
    assert _rows(m, "fed.weight").loc[1].to_dict() == pytest.approx(w)

    def loss(g: dict[str, torch.Tensor]) -> torch.Tensor:  # Σ_k w_k · mean softplus(−D_k(G(z_k)))
        out = torch.zeros((), dtype=torch.float64)
        for p, c in critics.items():
            x = gan.G(g, _latents(s, p).double())
            out = out + w[p] * torch.nn.functional.softplus(-_d(gan, c, x)).mean()
        return out

    torch.testing.assert_close(
        _applied(before, after), _autograd(before, loss), rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize("pi", ["size", "uniform"])
def test_uagan_step_is_autograd_of_minus_log_d_ua(tmp_path: Path, pi: str) -> None:
    s = tiny(**protocol("uagan", protocol_params={"pi": pi}), gan={"g_opt": SGD1})
    res, before, after, critics = _one_step(tmp_path, s)
    gan = make_gan(s)
    data = federated_data(s)
    n = np.array([len(ix) for ix in data.client_train], dtype=np.float64)
    prior = n / n.sum() if pi == "size" else np.full(3, 1 / 3)
    assert _rows(res.metrics, "fed.weight").loc[1].to_numpy() == pytest.approx(prior)
    z = _latents(s).double()

    def loss(g: dict[str, torch.Tensor]) -> torch.Tensor:  # −E log D_ua, in probabilities
        x = gan.G(g, z)
        phi = torch.zeros(len(z), dtype=torch.float64)
        for p, c in critics.items():
            d = torch.sigmoid(_d(gan, c, x))
            phi = phi + float(prior[p]) * d / (1 - d)
        return -torch.log(phi / (1 + phi)).mean()

    torch.testing.assert_close(
        _applied(before, after), _autograd(before, loss), rtol=1e-4, atol=1e-7
    )


# --- what travels -------------------------------------------------------------------------------


def test_bytes_per_round_are_the_arrays_that_travel(tmp_path: Path) -> None:
    fed = {"rounds": 2, "local_steps": 3, "protocol_params": {"swap_every": 0}}
    m = run_federated(tiny(**protocol("mdgan", **fed)), tmp_path / "md").metrics
    B, d, steps, clients = 32, 2, 3, 3
    down = steps * clients * (_npy_bytes((1, B, d)) + _npy_bytes((B, d)))
    up = steps * clients * _npy_bytes((B, d))
    assert _rows(m, "fed.bytes_down", "global").tolist() == [down, down]
    assert _rows(m, "fed.bytes_up", "global").tolist() == [up, up]
    # FedAvg: every client gets the global networks and sends its own of the same shapes.
    s = tiny(federation={"rounds": 1, "local_steps": 2}, partition={"n_clients": 3})
    fm = run_federated(s, tmp_path / "avg").metrics
    travelling, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    nets = sum(_npy_bytes(v.shape) for v in travelling.values())
    assert _rows(fm, "fed.bytes_down", "global").tolist() == [3 * nets]
    assert _rows(fm, "fed.bytes_up", "global").tolist() == [3 * nets]
    # Per-client weights: FedAvg's num-examples shares.
    n = np.array([len(ix) for ix in federated_data(s).client_train], dtype=np.float64)
    assert _rows(fm, "fed.weight").loc[1].to_numpy() == pytest.approx(n / n.sum())


def test_critics_swap_through_the_server_with_their_optimizer_state(tmp_path: Path) -> None:
    # One step, a swap step: every reply carries its critic, which the server hands on.
    s = tiny(**protocol("mdgan", n_clients=4, protocol_params={"swap_every": 1}))
    res = run_federated(s, tmp_path)
    ckpt = load_latest(res.path)
    assert ckpt is not None
    pending = ckpt.strategy["pending"]
    own = ckpt.clients  # the critics after the step: what each client sent
    assert sorted(pending) == [0, 1, 2, 3]
    sources = []
    for dest, critic in pending.items():
        assert any(k.startswith("critic_opt.") for k in critic)  # moments travel with it
        (src,) = [p for p, c in own.items() if all(np.array_equal(c[k], critic[k]) for k in c)]
        assert src != dest
        sources.append(src)
    assert sorted(sources) == [0, 1, 2, 3]  # a permutation: every critic goes somewhere
    critic_bytes = sum(_npy_bytes(v.shape) for v in own[0].values())
    up = _rows(res.metrics, "fed.bytes_up", "global").iloc[0]
    assert up == 4 * (_npy_bytes((32, 2)) + critic_bytes)


def test_a_swapped_critic_is_taken_up_by_its_new_client(tmp_path: Path) -> None:
    # Step 0 swaps; at step 1 every client steps the critic it was handed.
    s = tiny(**protocol("mdgan", n_clients=2, local_steps=2, protocol_params={"swap_every": 1}))
    res = run_federated(s, tmp_path)
    down = _rows(res.metrics, "fed.bytes_down", "global").iloc[0]
    batches = _npy_bytes((1, 32, 2)) + _npy_bytes((32, 2))
    critic = sum(_npy_bytes(v.shape) for v in load_latest(res.path).clients[0].values())  # type: ignore[union-attr]
    assert down == 2 * 2 * batches + 2 * critic  # step 1 also carries a critic to each client


# --- engines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("name", "params"), [("mdgan", {"swap_every": 2}), ("uagan", {"pi": "uniform"})]
)
def test_the_vectorized_engine_agrees_with_the_clientapp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, params: dict, fast: bool
) -> None:
    # The ClientApp steps one client at a time (the reference step when `fast` is off, the
    # hand-batched MLP step as a batch of one when on); the vectorized engine all of an
    # exchange's critics at once (vmap, or the hand-batched step over the stacked clients).
    from fedgan.simulator.gan import fastmlp

    monkeypatch.setattr(fastmlp, "ENABLED", fast)
    fed = {"rounds": 2, "local_steps": 3, "clients_per_round": 3, "protocol_params": params}
    runs = {
        engine: run_federated(
            tiny(**protocol(name, n_clients=4, **fed), engine={"name": engine}),
            tmp_path / engine,
        )
        for engine in ("inprocess", "vectorized")
    }
    snaps = {e: np.load(r.path / "checkpoints" / "round-000002.npz") for e, r in runs.items()}
    keys = [k for k in snaps["inprocess"].files if k.startswith("generator.")]
    assert keys and set(keys) <= set(snaps["vectorized"].files)
    for k in keys:  # 6 generator steps from 3 clients' answers: float rounding apart
        np.testing.assert_allclose(snaps["vectorized"][k], snaps["inprocess"][k], atol=1e-5)
    m = {e: r.metrics.set_index(KEYS)["value"] for e, r in runs.items()}
    for metric in ("fed.bytes_down", "fed.bytes_up", "fed.weight"):
        got = m["vectorized"][m["vectorized"].index.get_level_values("metric") == metric]
        want = m["inprocess"][m["inprocess"].index.get_level_values("metric") == metric]
        pd.testing.assert_series_equal(got, want, rtol=1e-12)
    loss = m["inprocess"][m["inprocess"].index.get_level_values("metric") == "server.g_loss"]
    assert len(loss) == 2
    np.testing.assert_allclose(
        m["vectorized"].loc[loss.index].to_numpy(), loss.to_numpy(), rtol=1e-4
    )


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mdgan", "uagan"])
def test_what_does_not_apply_is_refused_naming_the_key(name: str) -> None:
    s = tiny(
        federation={
            "protocol": name,
            "federate": "generator",
            "local_epochs": 1.0,
            "proximal_mu": 0.1,
            "protocol_params": {"weighting": {"name": "nope"}, "weights_every": 0},
        },
        strategy={"name": "fedadam", "critic": {"name": "fedmedian"}},
    )
    problems = check_protocol(s)
    keys = [p.split(":")[0] for p in problems]
    assert keys == [
        "strategy.name",
        "strategy.critic",
        "federation.federate",
        "federation.local_epochs",
        "federation.proximal_mu",
        "federation.protocol_params.weighting.name",
        "federation.protocol_params.weights_every",
    ]
    assert "keeps the generator on the server" in problems[0]
    assert check_protocol(tiny(federation={"protocol": name})) == []


@pytest.mark.parametrize("objective", ["wasserstein", "hinge", "least_squares", "kl", "reverse_kl"])
def test_uagan_refuses_objectives_without_a_probability_output(objective: str) -> None:
    s = tiny(federation={"protocol": "uagan"}, gan={"objective": objective})
    (problem,) = check_protocol(s)
    assert problem.startswith("gan.objective: uagan combines discriminators' odds")
    assert f"{objective!r} is not one; allowed: non_saturating, saturating" in problem
    assert (
        check_protocol(tiny(federation={"protocol": "mdgan"}, gan={"objective": objective})) == []
    )


def test_protocol_parameters_are_checked() -> None:
    bad = {"pi": "equal"}
    (problem,) = check_protocol(tiny(federation={"protocol": "uagan", "protocol_params": bad}))
    assert problem == "federation.protocol_params.pi: unknown 'equal'; allowed: size, uniform"
    swap = {"swap_every": -1}
    (problem,) = check_protocol(tiny(federation={"protocol": "mdgan", "protocol_params": swap}))
    assert problem.startswith("federation.protocol_params.swap_every: expected an integer ≥ 0")
    (problem,) = check_protocol(
        tiny(federation={"protocol": "uagan", "protocol_params": {"swap_every": 3}})
    )
    assert problem.startswith("federation.protocol_params.swap_every: uagan has no such")


# --- the gate and faults ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mdgan", "uagan"])
def test_faulty_clients_are_dropped_and_every_step_goes_on(tmp_path: Path, name: str) -> None:
    faults = {
        "dropout": 0.0,
        "raise": {"clients": [1]},
        "diverge": {"clients": [2]},
        "corrupt": {"clients": [3], "scale": 1.0e6},
        "oversized": {"clients": [4], "extra_bytes": 64},
    }
    s = tiny(
        **protocol(name, n_clients=6, local_steps=2, max_update_norm=10.0),
        faults=faults,
    )
    res = run_federated(s, tmp_path)
    events = [e for e in load_run(res.path).events if e.get("round") == 1]
    kinds = sorted((e["kind"], e["client"]) for e in events if "client" in e)
    # Every step (2) drops the same four clients, each for its own reason.
    assert kinds == sorted(
        [("client_error", 1), ("client_diverged", 2), ("update_too_far", 3), ("bad_reply", 4)] * 2
    )
    m = res.metrics
    assert _rows(m, "fed.replies", "global").tolist() == [2.0]
    assert _rows(m, "fed.dropped", "global").tolist() == [8.0]
    # The weights are renormalised over the replies that arrived.
    w = _rows(m, "fed.weight").loc[1]
    assert sorted(w.index) == [0, 5] and w.sum() == pytest.approx(1.0)
    if name == "mdgan":
        assert w.to_dict() == pytest.approx({0: 0.5, 5: 0.5})
    # The steps went on: the generator moved.
    before = initial_state(s, make_gan(s)).arrays()
    after = np.load(res.path / "checkpoints" / "round-000001.npz")
    assert not np.array_equal(after["generator.net.0.weight"], before["generator.net.0.weight"])


def test_max_update_norm_bounds_the_answer(tmp_path: Path) -> None:
    # Honest MD-GAN feedback on a fresh critic is small (‖e_k‖_F ≈ 0.1): a bound below it drops
    # every reply, and the exchange is skipped.
    s = tiny(**protocol("mdgan", max_update_norm=1e-6))
    res = run_federated(s, tmp_path)
    events = load_run(res.path).events
    assert sum(e["kind"] == "update_too_far" for e in events) == 3
    assert [e["kind"] for e in events if e["kind"] == "round_skipped"] == ["round_skipped"]
    detail = next(e["detail"] for e in events if e["kind"] == "update_too_far")
    assert detail.startswith("‖reply − reference‖₂ over 1 array(s) (answer.feedback, ...) = ")


# --- no real sample reaches the server ------------------------------------------------------------


class Recording(InProcessGrid):
    """The in-process grid, keeping every reply the server pulls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Message] = []

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        out = super().pull_messages(message_ids)
        self.seen += out
        return out


class RecordingVectorized(VectorizedGrid):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[Message] = []

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        out = super().pull_messages(message_ids)
        self.seen += out
        return out


def _real_rows_in(messages: list[Message], X: np.ndarray) -> int:
    """How many rows of any array (read as [-1, d]) of any message are real points of X."""
    real = {row.tobytes() for row in np.asarray(X, np.float32)}
    found = 0
    for msg in messages:
        if not msg.has_content():
            continue
        for record in msg.content.array_records.values():
            for a in record.values():
                v = np.asarray(a.numpy(), dtype=np.float32)
                if v.size % X.shape[1] == 0:
                    found += sum(r.tobytes() in real for r in v.reshape(-1, X.shape[1]))
    return found


@pytest.mark.parametrize(
    ("name", "params", "grid"),
    [
        ("fedavg", {}, Recording),
        ("mdgan", {"swap_every": 1, "weighting": {"name": "coverage_weighted"}}, Recording),
        ("uagan", {"weighting": {"name": "agnostic"}}, Recording),
        ("mdgan", {"swap_every": 2, "weighting": {"name": "group_aware"}}, RecordingVectorized),
        ("uagan", {"weighting": {"name": "group_dro"}}, RecordingVectorized),
    ],
)
def test_no_real_sample_in_any_server_bound_message(
    tmp_path: Path, name: str, params: dict[str, Any], grid: type[InProcessGrid]
) -> None:
    s = tiny(**protocol(name, rounds=2, local_steps=2, protocol_params=params))
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    g = grid(client_app, 3, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)})
    run_serverapp(server_app, g)
    seen: list[Message] = g.seen  # type: ignore[attr-defined]
    kinds = {m.metadata.message_type for m in seen}
    assert kinds == {"train", "evaluate", "query"}  # steps, evaluations, checkpoint queries
    data = federated_data(s)
    assert _real_rows_in(seen, data.train.X) == 0
    # The check can fail: a reply carrying a client's points would be found.
    from fedgan.wire.codec import reply
    from fedgan.wire.records import to_record

    leak = seen[0]
    points = data.train.X[data.client_train[0][:5]]
    with_points = reply(leak, {"partition-id": 0.0}, to_record({"x": points}))
    assert _real_rows_in([with_points], data.train.X) == 5


# --- the π-mixture ------------------------------------------------------------------------------


def test_mixture_holdout_reweights_the_groups_by_hand() -> None:
    # Client 0 holds modes 0 and 1 only, the rest spread iid: a mixture putting all its weight
    # on client 0 is modes 0 and 1 in client 0's proportions.
    s = tiny(partition={"name": "explicit", "params": {"assign": {0: [0], 1: [0]}, "rest": "iid"}})
    data = federated_data(s)
    pi = np.zeros(data.n_clients)
    pi[0] = 1.0
    held, mass = mixture_holdout(data, pi, seed=0)
    codes = data.group_codes(data.client_train[0])
    share = np.bincount(codes, minlength=len(data.groups)) / len(codes)
    np.testing.assert_allclose(mass, share)
    got = np.bincount(held.groups["mode"].to_numpy(), minlength=8) / held.n
    np.testing.assert_allclose(got, share, atol=2 / held.n)
    assert held.modes is not None
    np.testing.assert_allclose(held.modes.weights, share)
    # π ∝ n_k is the pooled data: nearly every held-out point is kept (the split rounds
    # per group), with the training proportions as weights.
    n = np.array([len(ix) for ix in data.client_train], dtype=np.float64)
    pooled, mass = mixture_holdout(data, n, seed=0)
    assert pooled.n >= 0.9 * data.held.n
    counts = np.bincount(data.group_codes(np.concatenate(data.client_train)), minlength=8)
    np.testing.assert_allclose(mass, counts / counts.sum())


def test_uagan_reports_the_pooled_data_and_the_pi_mixture(tmp_path: Path) -> None:
    params = {"weighting": {"name": "coverage_weighted", "params": {"q": 4.0}}}
    s = tiny(**protocol("uagan", protocol_params=params))
    m = run_federated(s, tmp_path).metrics
    assert {"global", "mixture"} <= set(m["scope"])
    target = m[(m["scope"] == "mixture") & (m["metric"] == "target_mass")]
    assert target["value"].sum() == pytest.approx(1.0)
    total = m["group_by"].fillna("") == ""
    mixture = m[(m["scope"] == "mixture") & (m["metric"] == "precision") & total]
    assert len(mixture) == 1
