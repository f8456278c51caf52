"""`mdgan`: MD-GAN (Hardy, Le Merrer & Sericola 2019), one generator on the server, one private
critic per client, critics swapped between clients every `swap_every` generator steps.

Per generator step t the server sends every client of the round batches of its *own*:
`fakes.critic` [n_critic, B, d] for the client's `gan.n_critic` critic steps and a distinct
`fakes.feedback` [B, d] (the paper's X^(d) and X^(g)). Distinct batches per client, as in the
paper: each critic answers on points the generator has not shown any other critic, so the K
feedbacks cover K·B points of G's support per step, not B; and a separate feedback batch
because the critic has just been stepped *against* the critic batches — its gradients on
those measure what it memorised, not where G's samples fall short. Client k answers
e_k = ∂L_G,k/∂x on its feedback batch (`answer.feedback` [B, d], a batch mean); the server
steps G with Σ_k w_k J_θ(z_k)ᵀ e_k, w_k = 1/|S| over the clients S that answered, or a
weighting's w_k (renormalised over S).

Swaps go through the server (Flower has no client-to-client channel): at every step t with
(t + 1) % swap_every = 0 each reply also carries the client's critic *with its optimizer
state* (`critic.*`, `critic_buffer.*`, `critic_opt.*`: Adam's moments belong to the parameters
they were accumulated on; resetting them restarts Adam's bias correction, keeping the
receiver's old ones pairs moments with foreign parameters), and at the client's next step the
server sends it the critic of another client (a seeded random cycle over the clients whose
critic arrived, so nobody gets its own back). Those bytes are counted in `fed.bytes_*` like
any other. A critic handed to a client that was not sent a step waits on the server for it; one
handed to a client that then fails is lost and the client keeps its own.

User-level differential privacy (`privacy.level: user`; the release in `server_held`): a
client's release is its feedback e_k [B, d] — its whole answer, B·d numbers (256 on the ring
with B = 128), clipped as one vector to C. A sum of feedbacks is only a feedback if they are
on the same points, so under user-level DP every client of the step answers on *one* common
feedback batch x = G(z), z from the step's own stream (`latents(seed, t)`, UA-GAN's), while
each keeps its own critic batches (server → client only: not released). The server steps G
with J_θ(z)ᵀ ẽ, ẽ = (Σ_k clip_C(e_k) + N(0, σ²C²I)) / m the released mean (m the expected
cohort; a client that was sent the step and did not answer counts as 0). What this gives up:
the K·B distinct points per step of the non-private protocol (now B); what it buys: one noise
draw on B·d coordinates for the whole cohort — per-client batches would need a release per
client (each noised on its own: K times the noise variance on J_θᵀ e, and the slot of each
client would say who was sampled). e_k is a batch mean (it carries 1/B): C is on that scale
(`privacy.clipped_fraction` shows how often it binds; `privacy.adaptive` follows a quantile).
The clients' g_loss is withheld under privacy (either level), so `server.g_loss` has no rows.

Swaps under user-level DP: a critic is a function of all of its client's data, and a swap
hands it, un-noised, to another client — a release no noise covers. Swapping is therefore off
by default under user-level DP (`swap_every` left out means 0 there), and an explicit
`federation.protocol_params.swap_every` > 0 is refused by `check`. At sample level the critics
are DP-SGD's (post-processing): swaps stay as configured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from fedgan.server.protocols.base import Reply, Round, Setup
from fedgan.server.protocols.server_held import (
    ServerHeld,
    draw_options,
    generate,
    latents,
    with_condition,
)
from fedgan.simulator.lazy import lazy
from fedgan.simulator.messages import (
    ANSWER_FEEDBACK,
    CRITIC_STATE,
    FAKE_CRITIC,
    FAKE_FEEDBACK,
    FEEDBACK,
    select,
)
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import numpy_rng
from fedgan.wire.codec import read_step_reply

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:  # `check` (the preflight) needs no torch: a run imports it on first use
    torch = lazy("torch", globals(), "torch")


class MDGAN(ServerHeld):
    """MD-GAN: per-client batches, error feedback, weighted J_θᵀ e, critic swaps (module doc).

    Parameters
    ----------
    swap_every : int (default: 100; 0 under user-level privacy, where > 0 is refused)
        Generator steps between critic swaps (0: never swap).
    weighting : {name, params} or None (default: None, w_k = 1/|S|)
        A weighting rule (`simulator.weighting`: coverage_weighted, agnostic, group_aware).
    weights_every : int (default: 1)
        Rounds between the scorings a weighting's weights come from.
    """

    answer = ANSWER_FEEDBACK
    bounded_key = FEEDBACK
    name = "mdgan"

    def __init__(
        self,
        setup: Setup,
        swap_every: int = 100,
        weighting: Mapping[str, Any] | None = None,
        weights_every: int = 1,
    ) -> None:
        super().__init__(setup, weighting, weights_every)
        f = setup.scenario.federation
        assert f is not None
        if self.dp is not None and "swap_every" not in f.protocol_params:
            swap_every = 0  # a swap would release a critic un-noised (module doc)
        self.swap_every = swap_every
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        """Swapped critics waiting for their new client (partition id → critic state)."""
        self._z: dict[int, Tensor] = {}
        self._common: Tensor | None = None
        """Under user-level DP: the step's common feedback latents [B, latent]."""
        self._opts: np.ndarray | None = None
        """Conditional training: the step's feedback rows' options [B] (every client's)."""

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        problems = super().check(s)
        f = s.federation
        every = f.protocol_params.get("swap_every", 100) if f is not None else 0
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            problems.append(
                "federation.protocol_params.swap_every: expected an integer ≥ 0 (generator "
                f"steps between critic swaps; 0: never), got {every!r}"
            )
        elif (
            every > 0
            and f is not None
            and "swap_every" in f.protocol_params
            and s.privacy is not None
            and s.privacy.level == "user"
        ):
            problems.append(
                f"federation.protocol_params.swap_every: {every}: a swap hands a client's critic, "
                "un-noised, to another client — a release of its data that user-level DP does "
                "not cover; use 0 (never swap; the default under user-level privacy) or leave "
                "it out"
            )
        return problems

    def fakes(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        s = self.setup.scenario
        zs = {p: latents(s, self.gan, t, p) for p in r.clients}
        if self.dp is not None:  # one feedback batch for every client (module doc)
            _, self._common = latents(s, self.gan, t)
            xs = generate(self.gan, self.gstate.g, [zs[p][0] for p in r.clients] + [self._common])
            x_g = xs[-1]
            return {p: {FAKE_CRITIC: xs[i], FAKE_FEEDBACK: x_g} for i, p in enumerate(r.clients)}
        self._z = {p: z_g for p, (_, z_g) in zs.items()}
        if self.cond is not None:
            self._condition(r, t, zs)
        xs = generate(self.gan, self.gstate.g, [z for p in r.clients for z in zs[p]])
        xs = [
            with_condition(self.gan, x, z)
            for x, z in zip(xs, (z for p in r.clients for z in zs[p]), strict=True)
        ]
        return {
            p: {FAKE_CRITIC: xs[2 * i], FAKE_FEEDBACK: xs[2 * i + 1]}
            for i, p in enumerate(r.clients)
        }

    def _condition(self, r: Round, t: int, zs: Mapping[int, tuple[Tensor, Tensor]]) -> None:
        """Conditional training: client p's critic batches get options of the categories it
        holds (its renormalized sampler: it pairs each with a real row of its own); every
        client's feedback batch the same options, drawn once from the global sampler, so that
        row i's feedbacks can be weighted by π_j(c_i) (`feedback`)."""
        s = self.setup.scenario
        self._opts = None
        for p in r.clients:
            z_d, z_g = zs[p]
            draw_options(s, self.gan, z_d, self.client_p[p], t, p)
            if self._opts is None:
                self._opts = draw_options(s, self.gan, z_g, self.global_p, t)
            else:  # the same options for every client's feedback rows
                assert self.cond is not None
                z_g[..., -1] = self.cond.code(torch.as_tensor(self._opts))

    def extra(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        return {p: self.pending.pop(p) for p in r.clients if p in self.pending}

    def sends_critic(self, t: int) -> bool:
        return self.swap_every > 0 and (t + 1) % self.swap_every == 0 and len(self.sizes) > 1

    def feedback(
        self, replies: Sequence[Reply], w: np.ndarray
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        e = [torch.as_tensor(rep.arrays()[FEEDBACK]) for rep in replies]
        z = torch.cat([self._z[rep.partition_id] for rep in replies])
        if self.cond is not None:  # per row: π_j(c_i), 0 for a client with no row of c_i
            from fedgan.simulator.gan.conditional import row_weights

            assert self._opts is not None
            pids = [rep.partition_id for rep in replies]
            om = torch.as_tensor(row_weights(w, self.counts[pids], self._opts), dtype=e[0].dtype)
            fb = torch.cat([om[k][:, None] * ek[:, : self.data_dim] for k, ek in enumerate(e)])
        else:
            fb = torch.cat([float(wk) * ek for wk, ek in zip(w, e, strict=True)])
        if self.setup.scenario.privacy is not None:  # the clients' g_loss is withheld
            return z, fb, None
        losses = [read_step_reply(rep.message).train.get("g_loss", np.nan) for rep in replies]
        return z, fb, torch.tensor(float(np.dot(w, losses)))

    def release_block(self, answer: Mapping[str, np.ndarray]) -> np.ndarray:
        """The client's feedback e_k [B, d] on the common batch, flat."""
        return np.asarray(answer[FEEDBACK], dtype=np.float64).ravel()

    def released_feedback(
        self, mean: np.ndarray, noise_std: float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """J_θ(z)ᵀ ẽ on the common batch: ẽ the released mean feedback; no loss (withheld)."""
        assert self._common is not None
        e = torch.as_tensor(mean.reshape(len(self._common), self.dim), dtype=torch.float32)
        return self._common, e, None

    def after_step(self, t: int, replies: Sequence[Reply]) -> None:
        """At a swap step: the critics that arrived go round a seeded random cycle."""
        if not self.sends_critic(t) or len(replies) < 2:
            return
        critics = {rep.partition_id: select(rep.arrays(), CRITIC_STATE) for rep in replies}
        order = numpy_rng(self.setup.scenario.seed, "swap", t).permutation(sorted(critics))
        for i, dest in enumerate(order.tolist()):
            self.pending[dest] = critics[int(order[(i + 1) % len(order)])]

    def extra_state(self) -> dict[str, Any]:
        return {"pending": {p: dict(c) for p, c in self.pending.items()}}

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        self.pending = {int(p): dict(c) for p, c in data["pending"].items()}
