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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from fedgan.server.protocols.base import Reply, Round, Setup
from fedgan.server.protocols.server_held import ServerHeld, generate, latents
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
    swap_every : int (default: 100)
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
        self.swap_every = swap_every
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        """Swapped critics waiting for their new client (partition id → critic state)."""
        self._z: dict[int, Tensor] = {}

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
        return problems

    def fakes(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        s = self.setup.scenario
        zs = {p: latents(s, self.gan, t, p) for p in r.clients}
        self._z = {p: z_g for p, (_, z_g) in zs.items()}
        xs = generate(self.gan, self.gstate.g, [z for p in r.clients for z in zs[p]])
        return {
            p: {FAKE_CRITIC: xs[2 * i], FAKE_FEEDBACK: xs[2 * i + 1]}
            for i, p in enumerate(r.clients)
        }

    def extra(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        return {p: self.pending.pop(p) for p in r.clients if p in self.pending}

    def sends_critic(self, t: int) -> bool:
        return self.swap_every > 0 and (t + 1) % self.swap_every == 0 and len(self.sizes) > 1

    def feedback(self, replies: Sequence[Reply], w: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        e = [torch.as_tensor(rep.arrays()[FEEDBACK]) for rep in replies]
        z = torch.cat([self._z[rep.partition_id] for rep in replies])
        fb = torch.cat([float(wk) * ek for wk, ek in zip(w, e, strict=True)])
        losses = [read_step_reply(rep.message).train.get("g_loss", np.nan) for rep in replies]
        return z, fb, torch.tensor(float(np.dot(w, losses)))

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
