"""What a client does when the generator lives on the server (mdgan, uagan).

Per generator step the client receives generated batches (`fakes.critic` [n_critic, B, d],
`fakes.feedback` [B, d]), takes `gan.n_critic` steps of its private critic on its own real data
against the critic batches (`simulator.gan.split.critic_steps`) and answers on the feedback
batch with the stepped critic: MD-GAN's error feedback ∂L_G/∂x (`mdgan_feedback`) or UA-GAN's
logits and their input gradients (`uagan_answer`). Its critic and the critic's optimizer state
are its private state (`CRITIC_STATE`); real data never leaves it — only the answer, its
statistics and, on an MD-GAN swap, its critic.

What it answers is one entry of `ANSWER_KINDS` (its pure and its hand-batched form), the
reply's arrays one entry of `simulator.messages.ANSWER_ARRAYS`: a new kind is two entries.
One function (`_step_fn`) is the step: the Flower ClientApp calls it for one client
(`client_step`), the vectorized engine under `torch.func.vmap` for all the clients of an
exchange at once (`clients_step`), with the clients' critics stacked. For MLP critics both
take the hand-batched step instead (`simulator.gan.fastmlp`: the same update written out on
flat buffers, ~10× faster here, where the vmapped R1 penalty's double backward dominated), the
ClientApp as a batch of one. Each client's real batches and penalty noise come from its own
stream, `torch_generator(seed, "critic-step", client, step)`, drawn outside the batched
function, so every path agrees to float rounding. Under sample-level privacy the critic steps
are DP-SGD (`gan.config.dp`): the client's own batches are drawn as DP-SGD batches (Poisson or
without replacement, `simulator.gan.dpsgd.draw_batches`) with the step's Gaussian noise from
the same stream; the hand-batched step pads the clients' batches to the largest (masked out);
a non-MLP critic under DP runs its clients one after another (their batch sizes differ).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from fedgan.clients.exchange import Update, admit, one
from fedgan.clients.scoring import local_evaluation
from fedgan.simulator.faults import FaultDraw, inject
from fedgan.simulator.gan import batched, conditional, dpsgd, fastmlp
from fedgan.simulator.gan.split import critic_steps, mdgan_feedback, uagan_answer
from fedgan.simulator.gan.train import GAN, GANState, Params
from fedgan.simulator.messages import (
    ANSWER_FEEDBACK,
    ANSWER_LOGITS,
    CRITIC_STATE,
    FAKE_CRITIC,
    FAKE_FEEDBACK,
    FAKE_SCORE,
    StepInstruction,
    StepReply,
    answer_keys,
    select,
)
from fedgan.simulator.prepare import (
    FederatedData,
    critic_state,
    federated_data,
    initial_state,
    make_gan,
)
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import torch_generator
from torch import Tensor


@dataclass(frozen=True)
class StepRequest:
    """One client's step instruction: the `received` arrays (`fakes.*`, and a swapped-in
    critic) and its private critic state (None before its first step)."""

    client: int
    instruction: StepInstruction
    received: dict[str, np.ndarray]
    private: dict[str, np.ndarray] | None = None


class StepUpdate(Update[StepReply]):
    """What a client sends back after a step (`arrays`, `reply`) and what it keeps."""


@dataclass
class _Prepared:
    """A client's step up to the critic computation: its fault draw, critic, batches."""

    request: StepRequest
    fault: FaultDraw
    private: dict[str, np.ndarray]
    reals: Tensor  # [n_critic, B, d]
    fakes: Tensor  # [n_critic, B, d]
    eps: Tensor  # [n_critic, B, 1]
    feedback_x: Tensor  # [B, d]
    masks: Tensor | None = None
    """Under DP-SGD: which of the M real rows each critic step uses [n_critic, M] (reals and eps
    are then [n_critic, M, ...]: `simulator.gan.dpsgd.draw_batches`)."""
    dp_noise: Tensor | None = None
    """Under DP-SGD: each critic step's Gaussian noise, [n_critic, P] standard normals."""


Answered = tuple[tuple[Tensor, ...], dict[str, Tensor]]
"""A client's answer tensors on the feedback batch and the statistics that come with them."""


@dataclass(frozen=True)
class AnswerKind:
    """How a client answers one kind of step on the feedback batch x [B, d], with its stepped
    critic: `pure` on a `GANState` (vmappable), `fast` on the hand-batched MLP's flat buffers
    (`simulator.gan.fastmlp`) — the same numbers to float rounding."""

    pure: Callable[[GAN, GANState, Tensor], Answered]
    fast: Callable[[fastmlp.FastMLP, Any, Tensor], Answered]


def _feedback(gan: GAN, st: GANState, x: Tensor) -> Answered:
    e, loss = mdgan_feedback(gan, st, x)
    return (e,), {"g_loss": loss}


def _feedback_fast(fast: fastmlp.FastMLP, f: Any, x: Tensor) -> Answered:
    e, loss = fast.generator_feedback(f, x)
    return (e,), {"g_loss": loss}


def _logits(gan: GAN, st: GANState, x: Tensor) -> Answered:
    logits, grads = uagan_answer(gan, st, x)
    return (logits, grads), {"v_feedback": logits.mean()}


def _logits_fast(fast: fastmlp.FastMLP, f: Any, x: Tensor) -> Answered:
    out = fast.logits_and_input_grads(f, x)
    return tuple(out), {"v_feedback": out[0].mean(-1)}


ANSWER_KINDS: dict[str, AnswerKind] = {
    ANSWER_FEEDBACK: AnswerKind(_feedback, _feedback_fast),  # MD-GAN: e = ∂L_G/∂x
    ANSWER_LOGITS: AnswerKind(_logits, _logits_fast),  # UA-GAN: l(x) and ∇ₓ l(x)
}
"""Every answer kind a client computes (the keys of `simulator.messages.ANSWER_ARRAYS`)."""


StepFn = Callable[..., tuple[Params, Params, Params, tuple[Tensor, ...], dict[str, Tensor]]]


def _step_fn(gan: GAN, answer: str, lr_scale: float) -> StepFn:
    """The pure step of one client: (critic, buffers, optimizer state, reals, fakes, eps,
    feedback batch) → (new critic, buffers, optimizer state, answer tensors, statistics)."""
    kind = ANSWER_KINDS[answer]

    def one(
        d: Params,
        d_buf: Params,
        d_opt: Params,
        reals: Tensor,
        fakes: Tensor,
        eps: Tensor,
        x: Tensor,
        masks: Tensor | None = None,
        dp_noise: Tensor | None = None,
    ) -> tuple[Params, Params, Params, tuple[Tensor, ...], dict[str, Tensor]]:
        st = GANState(g={}, d=d, d_buf=d_buf, g_opt={}, d_opt=d_opt, g_ema={})
        st, stats = critic_steps(gan, st, reals, fakes, eps, lr_scale, masks, dp_noise)
        out, more = kind.pure(gan, st, x)
        return st.d, st.d_buf, st.d_opt, out, {**stats, **more}

    return one


def _prepare(
    s: Scenario, gan: GAN, data: FederatedData, r: StepRequest, base: dict[str, np.ndarray]
) -> _Prepared:
    """Fault draw, the critic to step (a swapped-in one replaces the client's own), checks of
    the received batches, and the client's real batches and noise for this step."""
    ins = r.instruction
    fault = admit(s, ins.round, r.client)
    nc, d = gan.config.n_critic, data.train.X.shape[1]
    dim = d if gan.condition is None else d + gan.condition.width  # [x, c] when conditional
    sent = select(r.received, CRITIC_STATE)
    if sent and set(sent) != set(base):
        raise KeyError(f"a swapped critic must hold exactly {sorted(base)}, got {sorted(sent)}")
    private = sent or r.private or base
    unknown = sorted(set(r.received) - {FAKE_CRITIC, FAKE_FEEDBACK, FAKE_SCORE} - set(sent))
    if unknown:
        raise KeyError(f"unexpected array {unknown[0]!r}")
    fakes, x = r.received[FAKE_CRITIC], r.received[FAKE_FEEDBACK]
    b = x.shape[0] if x.ndim == 2 else -1
    if x.shape != (b, dim) or fakes.shape != (nc, b, dim):
        raise ValueError(
            f"expected {FAKE_CRITIC} [{nc}, B, {dim}] and {FAKE_FEEDBACK} [B, {dim}], got "
            f"{list(fakes.shape)} and {list(x.shape)}"
        )
    own = data.train.X[data.client_train[r.client]]
    gen = torch_generator(s.seed, "critic-step", r.client, ins.step)
    dp = gan.config.dp
    masks = noise = None
    cond = None
    if gan.condition is not None:  # a real row of each fake row's condition (its own pools)
        cond = torch.as_tensor(fakes[..., d:], dtype=torch.float32)
        sampler = conditional.client_sampler(gan.condition, data, r.client)
        idx = sampler.pick(gan.condition.option_of(cond), gen)
        eps = torch.rand(nc, b, 1, generator=gen)
    elif dp is None:
        idx = torch.randint(len(own), (nc, b), generator=gen)
        eps = torch.rand(nc, b, 1, generator=gen)
    else:  # DP-SGD batches of the client's own points: Poisson or without replacement
        idx, masks = dpsgd.draw_batches(len(own), gan.config.batch_size, dp.sampling, gen, (nc,))
        eps = torch.rand(nc, idx.shape[-1], 1, generator=gen)
        noise = torch.randn(nc, dpsgd.noise_size(gan.critic), generator=gen)
    reals = torch.as_tensor(own)[idx]
    if cond is not None:
        reals = torch.cat([reals, cond], dim=-1)
    return _Prepared(
        r,
        fault,
        private,
        reals,
        torch.as_tensor(fakes, dtype=torch.float32),
        eps,
        torch.as_tensor(x, dtype=torch.float32),
        masks,
        noise,
    )


def client_step(
    s: Scenario,
    client: int,
    instruction: StepInstruction,
    received: dict[str, np.ndarray],
    private: dict[str, np.ndarray] | None,
) -> StepUpdate:
    """One step on client `client` (`clients_step` of one client, unbatched): raises what the
    client's step raised."""
    request = StepRequest(client, instruction, received, private)
    return one(lambda rs: clients_step(s, rs, batched=False), request)


def clients_step(
    s: Scenario,
    requests: Sequence[StepRequest],
    device: torch.device | str = "cpu",
    batched: bool = True,
) -> list[StepUpdate | Exception]:
    """One generator step on each requested client: critic steps, the answer, the score of
    `fakes.score` when sent, faults. `batched`: every client's critic computation as one vmapped
    computation on `device` (the clients' critics stacked); otherwise one after another (what a
    single ClientApp does). A client that fails gives its exception in its slot."""
    assert s.federation is not None
    data = federated_data(s)
    gan = make_gan(s, data)
    base = critic_state(s, gan)
    out: list[StepUpdate | Exception | None] = [None] * len(requests)
    ready: list[tuple[int, _Prepared]] = []
    for i, r in enumerate(requests):
        try:
            ready.append((i, _prepare(s, gan, data, r, base)))
        except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
            out[i] = exc
    total = s.federation.rounds * s.federation.local_steps
    by_step: dict[tuple[int, str], list[tuple[int, _Prepared]]] = {}
    for i, p in ready:
        ins = p.request.instruction
        by_step.setdefault((ins.step, ins.answer), []).append((i, p))
    for (step, answer), group in by_step.items():
        lr_scale = gan.config.lr_scale(step, total)
        fn = _step_fn(gan, answer, lr_scale)
        fast = fastmlp.plan(gan)
        ps = [p for _, p in group]
        try:
            if fast is not None:  # MLPs: hand-batched; the ClientApp's as batches of one
                chunks = [ps] if batched else [[p] for p in ps]
                results = [
                    r
                    for chunk in chunks
                    for r in _run_fast(s, gan, fast, answer, lr_scale, chunk, device)
                ]
            elif batched and gan.config.dp is None:
                results = _run_stacked(s, gan, fn, ps, device)
            else:
                results = [_run_one(s, gan, fn, p) for p in ps]
        except Exception as exc:  # noqa: BLE001 - a batch that failed fails its clients
            for i, _ in group:
                out[i] = exc
            continue
        for (i, p), (private, answers, stats) in zip(group, results, strict=True):
            try:
                out[i] = _finish(s, data, p, private, answers, stats)
            except Exception as exc:  # noqa: BLE001 - this client's failure, in its slot
                out[i] = exc
    return [o for o in out if o is not None]


Result = tuple[dict[str, np.ndarray], tuple[np.ndarray, ...], dict[str, float]]
"""A client's new critic state, its answer arrays and its statistics."""


def _critic_state(s: Scenario, gan: GAN, private: dict[str, np.ndarray]) -> GANState:
    return initial_state(s, gan).load_arrays(private)


def _run_one(s: Scenario, gan: GAN, fn: StepFn, p: _Prepared) -> Result:
    st = _critic_state(s, gan, p.private)
    d, d_buf, d_opt, answers, stats = fn(
        st.d, st.d_buf, st.d_opt, p.reals, p.fakes, p.eps, p.feedback_x, p.masks, p.dp_noise
    )
    new = select(replace(st, d=d, d_buf=d_buf, d_opt=d_opt).arrays(), CRITIC_STATE)
    return (
        new,
        tuple(a.detach().numpy() for a in answers),
        {k: float(v) for k, v in stats.items()},
    )


def _run_stacked(
    s: Scenario, gan: GAN, fn: StepFn, ps: Sequence[_Prepared], device: torch.device | str
) -> list[Result]:
    st = batched.stack_arrays(initial_state(s, gan), [[p.private] for p in ps], device)

    def stack(name: str) -> Tensor:
        return torch.stack([getattr(p, name) for p in ps]).to(device)

    d, d_buf, d_opt, answers, stats = torch.func.vmap(fn)(
        st.d, st.d_buf, st.d_opt, stack("reals"), stack("fakes"), stack("eps"), stack("feedback_x")
    )
    new = select(batched.numpy_arrays(replace(st, d=d, d_buf=d_buf, d_opt=d_opt)), CRITIC_STATE)
    return _unstack(new, answers, stats, len(ps))


def _unstack(
    new: dict[str, np.ndarray],
    answers: Sequence[Tensor],
    stats: dict[str, Tensor],
    n: int,
) -> list[Result]:
    """Per client j < n: its critic arrays, its answers and its statistics, from the stacked
    [n, ...] results of one batched step."""
    ans = [a.detach().cpu().numpy() for a in answers]
    sts = {k: v.detach().cpu().numpy() for k, v in stats.items()}
    return [
        (
            {k: v[j] for k, v in new.items()},
            tuple(a[j] for a in ans),
            {k: float(v[j]) for k, v in sts.items()},
        )
        for j in range(n)
    ]


def _run_fast(
    s: Scenario,
    gan: GAN,
    fast: fastmlp.FastMLP,
    answer: str,
    lr_scale: float,
    ps: Sequence[_Prepared],
    device: torch.device | str,
) -> list[Result]:
    """`_run_stacked` on the hand-batched MLP step: the same inputs, the same results to float
    rounding."""
    st = batched.stack_arrays(initial_state(s, gan), [[p.private] for p in ps], device)

    def stack(name: str) -> Tensor:
        return torch.stack([getattr(p, name) for p in ps]).to(device)

    f = fast.critic_flat(st.d, st.d_opt)
    if gan.config.dp is None:
        stats = fast.critic_steps_on(f, stack("reals"), stack("fakes"), stack("eps"), lr_scale)
    else:  # each client's DP batch padded to the largest (masked out: the same step)
        m = max(p.reals.shape[1] for p in ps)
        stats = fast.critic_steps_on(
            f,
            torch.stack([_pad(p.reals, m) for p in ps]).to(device),
            stack("fakes"),
            torch.stack([_pad(p.eps, m) for p in ps]).to(device),
            lr_scale,
            torch.stack([_pad(p.masks, m) for p in ps if p.masks is not None]).to(device),
            stack("dp_noise"),
        )
    answers, more = ANSWER_KINDS[answer].fast(fast, f, stack("feedback_x"))
    stats.update(more)
    d, d_opt = fast.critic_params(f)
    new = select(batched.numpy_arrays(replace(st, d=d, d_opt=d_opt)), CRITIC_STATE)
    return _unstack(new, answers, stats, len(ps))


def _pad(t: Tensor, m: int) -> Tensor:
    """[n_critic, M, ...] → [n_critic, m, ...], zeros (False) in the new rows."""
    if t.shape[1] == m:
        return t
    return torch.cat([t, t.new_zeros((t.shape[0], m - t.shape[1], *t.shape[2:]))], dim=1)


def _finish(
    s: Scenario,
    data: FederatedData,
    p: _Prepared,
    private: dict[str, np.ndarray],
    answers: tuple[np.ndarray, ...],
    stats: dict[str, float],
) -> StepUpdate:
    """The reply of a client whose step gave `answers` and left its critic at `private`."""
    r = p.request
    ins = r.instruction
    arrays: dict[str, np.ndarray] = dict(zip(answer_keys(ins.answer), answers, strict=True))
    # Faults change the reply only: corrupt scales the answer (measured from 0, as the bound).
    arrays = inject(s, p.fault, arrays, {k: np.zeros_like(v) for k, v in arrays.items()})
    if ins.send_critic:
        arrays.update(private)
    score = None
    if FAKE_SCORE in r.received:
        fake = r.received[FAKE_SCORE]
        score = local_evaluation(s, data, r.client, fake if len(fake) else None)
    reply = StepReply(
        partition_id=r.client,
        num_examples=len(data.client_train[r.client]),
        train=stats,
        bytes_received=float(sum(v.nbytes for v in r.received.values())),
        bytes_sent=float(sum(v.nbytes for v in arrays.values())),
        score=score,
    )
    return StepUpdate(arrays, private, reply)
