"""A client's round under the fedavg protocol: evaluate the received generator on its held-out
data, take its local GAN steps from the received networks (its private ones from its state)
and return the travelling arrays, the private ones and the statistics — one client through the
plain step (what a single ClientApp does), or every client of a round in lockstep on the
vectorized engine (`clients_train`). Faults are drawn and injected here (`simulator.faults`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from fedgan.clients.exchange import Update, admit, one
from fedgan.clients.requests import TrainRequest
from fedgan.clients.scoring import evaluate_locally, local_evaluations
from fedgan.simulator.faults import FaultDraw, SimulatedFault, inject
from fedgan.simulator.gan import batched
from fedgan.simulator.gan.diagnostics import lipschitz_metrics
from fedgan.simulator.gan.train import GAN, GANState
from fedgan.simulator.messages import (
    CRITIC,
    FEDERATED,
    GENERATOR,
    LocalEvaluation,
    MetricValue,
    TrainReply,
    split_arrays,
)
from fedgan.simulator.prepare import (
    FederatedData,
    federated_data,
    initial_state,
    local_steps,
    make_gan,
)
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import torch_generator


class ClientUpdate(Update[TrainReply]):
    """What a client sends back after local training (`arrays`, `reply`), and what it keeps."""

    @property
    def metrics(self) -> dict[str, MetricValue]:
        """The reply's metrics, as the ClientApp sends them (without its wall time)."""
        return self.reply.metrics()

    @property
    def received(self) -> LocalEvaluation:
        """The received generator on the client's held-out split."""
        return self.reply.received


@dataclass
class _Started:
    """A client's round up to its local training: its fault draw, received evaluation, data."""

    request: TrainRequest
    fault: FaultDraw
    received: LocalEvaluation
    x: torch.Tensor


def _anchor(gan: GAN, state: GANState, federate: str) -> None:
    """FedProx: anchor each federated network at what was received (a single or stacked state),
    so the proximal term pulls local training toward it."""
    if not gan.config.prox_mu:
        return
    travelling = FEDERATED[federate]
    if GENERATOR in travelling:
        state.g_anchor = {k: v.clone() for k, v in state.g.items()}
    if CRITIC in travelling:
        state.d_anchor = {k: v.clone() for k, v in state.d.items()}


def _finish(
    s: Scenario,
    c: _Started,
    state_arrays: dict[str, np.ndarray],
    train: dict[str, float],
    lip: dict[str, float],
) -> ClientUpdate:
    """The reply of a client whose local training ended in `state_arrays`
    (`GANState.arrays()`), with its statistics (`lip`: Lipschitz estimates)."""
    assert s.federation is not None
    r = c.request
    arrays, private_out = split_arrays(state_arrays, s.federation.federate)
    # Only the reply is faulty: the client's private state keeps its honest training.
    arrays = inject(s, c.fault, arrays, r.global_arrays)
    reply = TrainReply(
        partition_id=r.client,
        num_examples=len(c.x),
        train={**train, **{f"lipschitz.{k}": v for k, v in lip.items()}},
        received=c.received,
        bytes_received=float(sum(v.nbytes for v in r.global_arrays.values())),
        bytes_sent=float(sum(v.nbytes for v in arrays.values())),
    )
    return ClientUpdate(arrays, private_out, reply)


def client_train(
    s: Scenario,
    client: int,
    round_: int,
    global_arrays: dict[str, np.ndarray],
    private: dict[str, np.ndarray] | None,
    prox_mu: float | None = None,
) -> ClientUpdate:
    """One round on client `client` (`clients_train` of one client, unbatched): raises what
    the client's training raised."""
    request = TrainRequest(client, round_, global_arrays, private, prox_mu)
    return one(lambda rs: clients_train(s, rs, batched=False), request)


def clients_train(
    s: Scenario,
    requests: Sequence[TrainRequest],
    device: torch.device | str = "cpu",
    batched: bool = True,
) -> list[ClientUpdate | Exception]:
    """One round on each requested client: evaluate the received generator on its held-out
    data, run its local GAN steps (`local_steps`) from the received networks (private ones from
    the request) and return the travelling arrays, the private ones and the statistics.

    `batched`: the clients' samples, local training and Lipschitz estimates run in lockstep as
    vmapped computations on `device` (`simulator.gan.batched`), their state stacked straight
    from the arrays; otherwise one client after another through the plain `GAN.train` (what a
    single ClientApp does: vmap's overhead buys nothing for one client). Both paths share the
    fault draws, the checks, the random streams and the replies, so they agree to float
    rounding. A client that fails gives its exception in its slot; the others go on.
    """
    data = federated_data(s)
    out: list[ClientUpdate | Exception | None] = [None] * len(requests)
    for mu, slots in _batches(s, requests, batched):
        gan = make_gan(s, data, mu)
        live = _admit(s, gan, requests, slots, out)
        if not live:
            continue
        if batched:
            _train_stacked(s, gan, data, requests, live, out, device)
            continue
        for i, fault in live.items():
            try:
                out[i] = _train_one(s, gan, data, requests[i], fault)
            except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
                out[i] = exc
    return [o for o in out if o is not None]


def _batches(
    s: Scenario, requests: Sequence[TrainRequest], batched: bool
) -> list[tuple[float | None, list[int]]]:
    """(μ, request slots) groups: one GAN template per distinct μ and at most
    `engine.max_batch` clients a batch; unbatched, one request a group, in order."""
    if not batched:
        return [(r.prox_mu, [i]) for i, r in enumerate(requests)]
    by_mu: dict[float | None, list[int]] = {}
    for i, r in enumerate(requests):
        by_mu.setdefault(r.prox_mu, []).append(i)
    size = s.engine.max_batch or len(requests)
    return [
        (mu, slots[b : b + size]) for mu, slots in by_mu.items() for b in range(0, len(slots), size)
    ]


def _admit(
    s: Scenario,
    gan: GAN,
    requests: Sequence[TrainRequest],
    slots: list[int],
    out: list[ClientUpdate | Exception | None],
) -> dict[int, FaultDraw]:
    """The slots that go on to train, with their fault draws; the others get their exception
    in `out` (a simulated `raise`, or arrays this GAN does not have)."""
    known = initial_state(s, gan).array_keys()
    live: dict[int, FaultDraw] = {}
    for i in slots:
        r = requests[i]
        try:
            fault = admit(s, r.round, r.client)
        except SimulatedFault as exc:
            out[i] = exc
            continue
        unknown = sorted((set(r.global_arrays) | set(r.private or {})) - known)
        if unknown:
            out[i] = KeyError(f"unexpected array {unknown[0]!r}")
        else:
            live[i] = fault
    return live


def _train_one(
    s: Scenario, gan: GAN, data: FederatedData, r: TrainRequest, fault: FaultDraw
) -> ClientUpdate:
    """One client's round through the plain (unbatched) GAN step."""
    assert s.federation is not None
    state = initial_state(s, gan)
    if r.private:
        state = state.load_arrays(r.private)
    state = state.load_arrays(r.global_arrays)
    received = evaluate_locally(s, gan, state, data, r.client, r.round)
    n_steps = local_steps(s, data, r.client)
    state.step = (r.round - 1) * n_steps
    _anchor(gan, state, s.federation.federate)
    x = torch.as_tensor(data.train.X[data.client_train[r.client]])
    state, history = gan.train(
        state,
        x,
        n_steps,
        torch_generator(s.seed, "train", r.client, r.round),
        total_steps=s.federation.rounds * n_steps,
    )
    means = {str(k): float(v) for k, v in pd.DataFrame(history).mean().items()}
    lip = lipschitz_metrics(gan, state, x, torch_generator(s.seed, "lipschitz", r.client, r.round))
    lip = {k.split(".", 1)[1]: v for k, v in lip.items()}
    return _finish(s, _Started(r, fault, received, x), state.arrays(), means, lip)


def _train_stacked(
    s: Scenario,
    gan: GAN,
    data: FederatedData,
    requests: Sequence[TrainRequest],
    faults: dict[int, FaultDraw],
    out: list[ClientUpdate | Exception | None],
    device: torch.device | str,
) -> None:
    """The `faults` slots' round as one batched computation; results into `out`."""
    assert s.federation is not None
    f = s.federation
    live = list(faults)
    base = initial_state(s, gan)
    sources = [[requests[i].private or {}, requests[i].global_arrays] for i in live]
    state = batched.stack_arrays(base, sources, device)
    received = local_evaluations(
        s, gan, data, state.g_ema or state.g, [requests[i] for i in live], device
    )
    keep: list[int] = []
    evals: list[LocalEvaluation] = []
    for j, ev in enumerate(received):
        if isinstance(ev, Exception):
            out[live[j]] = ev
        else:
            keep.append(j)
            evals.append(ev)
    if not keep:
        return
    if len(keep) < len(live):
        state = _select(state, torch.tensor(keep, device=device))
    live = [live[j] for j in keep]
    reqs = [requests[i] for i in live]
    steps = [local_steps(s, data, r.client) for r in reqs]
    _anchor(gan, state, f.federate)
    xs = [torch.as_tensor(data.train.X[data.client_train[r.client]]) for r in reqs]
    sizes = [len(x) for x in xs]
    x = batched.pad_data(xs, device)
    state, means = batched.train_batched(
        gan,
        state,
        x,
        sizes,
        [torch_generator(s.seed, "train", r.client, r.round) for r in reqs],
        steps,
        total_steps=[f.rounds * n for n in steps],
        start_steps=[(r.round - 1) * n for r, n in zip(reqs, steps, strict=True)],
    )
    lip = batched.lipschitz_batched(
        gan,
        state,
        x,
        sizes,
        [torch_generator(s.seed, "lipschitz", r.client, r.round) for r in reqs],
    )
    arrays = batched.numpy_arrays(state)
    means_np = {k: v.detach().cpu().numpy() for k, v in means.items()}
    lip_np = {k: v.detach().cpu().numpy() for k, v in lip.items()}
    for j, i in enumerate(live):
        started = _Started(requests[i], faults[i], evals[j], xs[j])
        out[i] = _finish(
            s,
            started,
            {k: v[j] for k, v in arrays.items()},
            {k: float(v[j]) for k, v in means_np.items()},
            {k: float(v[j]) for k, v in lip_np.items()},
        )


def _select(state: GANState, rows: torch.Tensor) -> GANState:
    """The clients `rows` of a stacked state."""
    return replace(
        state,
        **{  # type: ignore[arg-type]
            name: {k: v.index_select(0, rows) for k, v in getattr(state, name).items()}
            for name in batched.STATE_GROUPS
        },
    )
