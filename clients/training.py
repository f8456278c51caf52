"""A client's round under the fedavg protocol: evaluate the received generator on its held-out
data, take its local GAN steps from the received networks (its private ones from its state)
and return the travelling arrays, the private ones and the statistics — one client through the
plain step (what a single ClientApp does), or every client of a round in lockstep on the
vectorized engine (`clients_train`). Faults are drawn and injected here (`simulator.faults`).

A *critic-only* round (the train instruction's `critic-only`, DP-FedAvg-GAN's client round,
Augenstein et al. 2020): `local_steps` × `gan.n_critic` critic steps on the client's real data
against fakes from the received generator, which is never updated; the reply carries the
critic (`critic.*`, `critic_buffer.*`) alone and the client keeps the critic's optimizer state.
Each step is the reference `GAN.critic_step` — DP-SGD under `privacy.level: sample`, which the
GAN's config carries — with the randomness `GAN.draw_steps` draws for a full round from the
same stream (`torch_generator(seed, "train", client, round)`; the generator's latents are
drawn and not used), one client after another or vmapped over the stacked clients
(`_critic_steps`): both paths agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from fedgan.clients.exchange import Update, admit, one
from fedgan.clients.requests import TrainRequest
from fedgan.clients.scoring import evaluate_locally, local_evaluations
from fedgan.simulator.faults import FaultDraw, SimulatedFault, inject
from fedgan.simulator.gan import batched, conditional, dpsgd
from fedgan.simulator.gan.diagnostics import lipschitz_metrics
from fedgan.simulator.gan.train import GAN, GANState, Params, StepNoise, draw_blocks
from fedgan.simulator.messages import (
    CRITIC,
    CRITIC_OPT,
    CRITIC_PREFIXES,
    FEDERATED,
    GENERATOR,
    LocalEvaluation,
    MetricValue,
    TrainReply,
    select,
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
from fedgan.simulator.schedule import diagnostics_due, scores_due
from fedgan.simulator.seeding import torch_generator
from torch import Tensor


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
    (`GANState.arrays()`), with its statistics (`lip`: Lipschitz estimates). A critic-only
    round sends its critic and keeps the critic's optimizer state, nothing else."""
    assert s.federation is not None
    r = c.request
    if r.critic_only:
        arrays = select(state_arrays, CRITIC_PREFIXES)
        private_out = select(state_arrays, CRITIC_OPT)
    else:
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
    critic_only: bool = False,
) -> ClientUpdate:
    """One round on client `client` (`clients_train` of one client, unbatched): raises what
    the client's training raised."""
    request = TrainRequest(client, round_, global_arrays, private, prox_mu, critic_only)
    return one(lambda rs: clients_train(s, rs, batched=False), request)


def clients_train(
    s: Scenario,
    requests: Sequence[TrainRequest],
    device: torch.device | str = "cpu",
    batched: bool = True,
) -> list[ClientUpdate | Exception]:
    """One round on each requested client: evaluate the received generator on its held-out
    data, run its local GAN steps (`local_steps`) from the received networks (private ones from
    the request) and return the travelling arrays, the private ones and the statistics; a
    `critic_only` request runs critic steps only (see the module).

    `batched`: the clients' samples, local training and Lipschitz estimates run in lockstep as
    vmapped computations on `device` (`simulator.gan.batched`), their state stacked straight
    from the arrays; otherwise one client after another through the plain `GAN.train` (what a
    single ClientApp does: vmap's overhead buys nothing for one client). Both paths share the
    fault draws, the checks, the random streams and the replies, so they agree to float
    rounding. A client that fails gives its exception in its slot; the others go on.
    """
    data = federated_data(s)
    out: list[ClientUpdate | Exception | None] = [None] * len(requests)
    for (mu, _), slots in _batches(s, requests, batched):
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
) -> list[tuple[tuple[float | None, bool], list[int]]]:
    """((μ, critic-only), request slots) groups: one GAN template per distinct μ, full and
    critic-only rounds apart, at most `engine.max_batch` clients a batch; unbatched, one
    request a group, in order."""
    if not batched:
        return [((r.prox_mu, r.critic_only), [i]) for i, r in enumerate(requests)]
    by_mu: dict[tuple[float | None, bool], list[int]] = {}
    for i, r in enumerate(requests):
        by_mu.setdefault((r.prox_mu, r.critic_only), []).append(i)
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
    received = (
        evaluate_locally(s, gan, state, data, r.client, r.round)
        if scores_due(s, r.round)
        else LocalEvaluation.skipped()
    )
    n_steps = local_steps(s, data, r.client)
    state.step = (r.round - 1) * n_steps
    _anchor(gan, state, s.federation.federate)
    x = torch.as_tensor(data.train.X[data.client_train[r.client]])
    if r.critic_only:
        return _critic_only_one(s, gan, r, _Started(r, fault, received, x), state, n_steps)
    state, history = gan.train(
        state,
        x,
        n_steps,
        torch_generator(s.seed, "train", r.client, r.round),
        total_steps=s.federation.rounds * n_steps,
        sampler=_sampler(gan, data, r.client),
    )
    means = {str(k): float(v) for k, v in pd.DataFrame(history).mean().items()}
    return _finish(
        s, _Started(r, fault, received, x), state.arrays(), means, _lip(s, gan, state, x, r)
    )


def _sampler(gan: GAN, data: FederatedData, client: int) -> conditional.Sampler | None:
    """A conditional GAN's training-by-sampling on the client's own rows: the categories it
    holds, the global frequencies renormalized over them (`conditional.client_sampler`)."""
    if gan.condition is None:
        return None
    return conditional.client_sampler(gan.condition, data, client)


def _lip(
    s: Scenario, gan: GAN, state: GANState, x: torch.Tensor, r: TrainRequest
) -> dict[str, float]:
    """One client's Lipschitz estimates after its round, at the diagnostics rounds only
    (`simulator.schedule.diagnostics_due`; {} otherwise: the reply carries none). A
    conditional GAN has none: the estimates probe the critic at unconditioned points."""
    if not diagnostics_due(s, r.round) or gan.condition is not None:
        return {}
    lip = lipschitz_metrics(gan, state, x, torch_generator(s.seed, "lipschitz", r.client, r.round))
    return {k.split(".", 1)[1]: v for k, v in lip.items()}


def _lip_stacked(
    s: Scenario,
    gan: GAN,
    state: GANState,
    x: torch.Tensor,
    sizes: Sequence[int],
    reqs: Sequence[TrainRequest],
    rnd: int,
) -> dict[str, torch.Tensor]:
    """`_lip` for stacked clients of round `rnd` (values [C])."""
    if not diagnostics_due(s, rnd) or gan.condition is not None:
        return {}
    gens = [torch_generator(s.seed, "lipschitz", r.client, rnd) for r in reqs]
    return batched.lipschitz_batched(gan, state, x, sizes, gens)


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
    rnd = requests[live[0]].round  # one round per call (an engine sends one round's requests)
    received: list[LocalEvaluation | Exception] = (
        local_evaluations(s, gan, data, state.g_ema or state.g, [requests[i] for i in live], device)
        if scores_due(s, rnd)
        else [LocalEvaluation.skipped() for _ in live]
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
    if reqs[0].critic_only:  # a batch is all critic-only or none (`_batches`)
        done = _critic_only_stacked(s, gan, reqs, state, xs, steps, device)
        for j, i in enumerate(live):
            started = _Started(requests[i], faults[i], evals[j], xs[j])
            out[i] = _finish(s, started, *done[j])
        return
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
        samplers=None
        if gan.condition is None
        else [conditional.client_sampler(gan.condition, data, r.client) for r in reqs],
    )
    lip = _lip_stacked(s, gan, state, x, sizes, reqs, rnd)
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


# --- critic-only rounds (DP-FedAvg-GAN) -----------------------------------------------------------

CriticFn = Callable[..., tuple[Params, Params, Params, dict[str, Tensor]]]


def _critic_fn(gan: GAN) -> CriticFn:
    """One local step of a critic-only round, pure (vmappable): `n_critic` reference critic
    steps (`GAN.critic_step`; DP-SGD when the GAN's config carries it) on real rows of x
    [N, d] against G(z) of the received generator g, with one step's noise (`StepNoise`'s
    tensors: the critic's share of a full step's). Returns the new critic, its buffers, its
    optimizer state and the statistics' means over the critic steps."""
    nc = gan.config.n_critic

    def one(
        g: Params,
        d: Params,
        d_buf: Params,
        d_opt: Params,
        d_anchor: Params,
        x: Tensor,
        noise: dict[str, Tensor],
        lr: float,
    ) -> tuple[Params, Params, Params, dict[str, Tensor]]:
        st = GANState(g=g, d=d, d_buf=d_buf, g_opt={}, d_opt=d_opt, g_ema={}, d_anchor=d_anchor)
        mask, dp = noise.get("mask"), noise.get("dp_noise")
        acc: dict[str, Tensor] = {}
        for i in range(nc):
            st, stats = gan.critic_step(
                st,
                x[noise["idx"][i]],
                noise["z_d"][i],
                noise["eps"][i],
                lr,
                None if mask is None else mask[i],
                None if dp is None else dp[i],
            )
            acc = stats if not acc else {k: acc[k] + stats[k] for k in acc}
        return st.d, st.d_buf, st.d_opt, {k: v / nc for k, v in acc.items()}

    return one


def _critic_only_one(
    s: Scenario, gan: GAN, r: TrainRequest, c: _Started, state: GANState, n_steps: int
) -> ClientUpdate:
    """A critic-only round of one client (the plain path): `n_steps` local steps of
    `_critic_fn` from the received state, its noise drawn as `GAN.train` draws it."""
    assert s.federation is not None
    fn = _critic_fn(gan)
    gen = torch_generator(s.seed, "train", r.client, r.round)
    start, total = (r.round - 1) * n_steps, s.federation.rounds * n_steps
    sums: dict[str, Tensor] = {}
    t = 0
    for block in draw_blocks(n_steps):
        noise = gan.draw_steps(len(c.x), gen, block)
        for i in range(block):
            lr = gan.config.lr_scale(start + t, total)
            step = noise.at(i).tensors()
            d, d_buf, d_opt, stats = fn(
                state.g, state.d, state.d_buf, state.d_opt, state.d_anchor, c.x, step, lr
            )
            state = replace(state, d=d, d_buf=d_buf, d_opt=d_opt)
            sums = stats if not sums else {k: sums[k] + stats[k] for k in sums}
            t += 1
    means = {k: float(v) / n_steps for k, v in sums.items()}
    return _finish(s, c, state.arrays(), means, _lip(s, gan, state, c.x, r))


Done = tuple[dict[str, np.ndarray], dict[str, float], dict[str, float]]
"""A client's state arrays after its round, its training statistics, its Lipschitz estimates."""


def _critic_only_stacked(
    s: Scenario,
    gan: GAN,
    reqs: Sequence[TrainRequest],
    state: GANState,
    xs: Sequence[Tensor],
    steps: Sequence[int],
    device: torch.device | str,
) -> list[Done]:
    """Critic-only rounds of stacked clients: `_critic_fn` under `torch.func.vmap`, one group
    per (local steps, round) — one learning rate a group, no client stepping past its end —,
    each client's noise from its own stream, drawn as the plain path draws it."""
    assert s.federation is not None
    groups: dict[tuple[int, int], list[int]] = {}
    for j, r in enumerate(reqs):
        groups.setdefault((steps[j], r.round), []).append(j)
    done: list[Done | None] = [None] * len(reqs)
    for (n_steps, rnd), js in groups.items():
        sub = state if len(groups) == 1 else _select(state, torch.tensor(js, device=device))
        sizes = [len(xs[j]) for j in js]
        x = batched.pad_data([xs[j] for j in js], device)
        gens = [torch_generator(s.seed, "train", reqs[j].client, rnd) for j in js]
        start, total = (rnd - 1) * n_steps, s.federation.rounds * n_steps
        sub, sums = _critic_steps(gan, sub, x, sizes, gens, n_steps, start, total)
        lip = _lip_stacked(s, gan, sub, x, sizes, [reqs[j] for j in js], rnd)
        arrays = batched.numpy_arrays(sub)
        means = {k: v.detach().cpu().numpy() / n_steps for k, v in sums.items()}
        lips = {k: v.detach().cpu().numpy() for k, v in lip.items()}
        for a, j in enumerate(js):
            done[j] = (
                {k: v[a] for k, v in arrays.items()},
                {k: float(v[a]) for k, v in means.items()},
                {k: float(v[a]) for k, v in lips.items()},
            )
    return [d for d in done if d is not None]


def _critic_steps(
    gan: GAN,
    state: GANState,
    x: Tensor,
    sizes: Sequence[int],
    gens: Sequence[torch.Generator],
    n_steps: int,
    start: int,
    total: int,
) -> tuple[GANState, dict[str, Tensor]]:
    """`n_steps` local steps of `_critic_fn` for the stacked clients (x [C, N, d] padded,
    client c's points in its first sizes[c] rows); returns the state and each statistic's sum
    over the steps [C]. Under DP-SGD each client's real batch is padded (masked) to the
    largest client's rows, as `simulator.gan.batched` pads it."""
    fn = torch.func.vmap(_critic_fn(gan), in_dims=(0, 0, 0, 0, 0, 0, 0, None))
    d, d_buf, d_opt = state.d, state.d_buf, state.d_opt
    sums: dict[str, Tensor] = {}
    t = 0
    for block in draw_blocks(n_steps):
        noises = [gan.draw_steps(n, g, block) for n, g in zip(sizes, gens, strict=True)]
        if noises[0].mask is not None:
            m = max(dpsgd.rows_of(n) for n in noises)
            noises = [dpsgd.pad_rows(n, m) for n in noises]
        stacked = StepNoise(
            **{
                k: torch.stack([n.tensors()[k] for n in noises]).to(x.device)
                for k in noises[0].tensors()
            }
        )
        for i in range(block):
            lr = gan.config.lr_scale(start + t, total)
            noise = {k: v[:, i] for k, v in stacked.tensors().items()}
            d, d_buf, d_opt, stats = fn(state.g, d, d_buf, d_opt, state.d_anchor, x, noise, lr)
            sums = stats if not sums else {k: sums[k] + stats[k] for k in sums}
            t += 1
    return replace(state, d=d, d_buf=d_buf, d_opt=d_opt), sums
