"""`uagan`: UA-GAN (Zhang et al. 2021), one generator on the server trained against the odds
aggregation of the clients' private discriminators.

The server's discriminator is D_ua = Φ/(1 + Φ), Φ = Σ_k π_k D_k/(1 − D_k); in logits
logit_ua = logsumexp_k(log π_k + l_k) (`simulator.gan.split.uagan_logit`). Its input gradient
∇ₓ logit_ua = Σ_k softmax(log π + l)_k ∇ₓ l_k needs every client's logit at x, so per
generator step every client of the round gets *the same* batches — `fakes.critic` [n_critic,
B, d] for its critic steps (all discriminators train against the same generated points, as in
the reference code) and `fakes.feedback` [B, d] — steps its discriminator on its own data and
answers its logits `answer.logits` [B] and their input gradients `answer.logit_grads` [B, d]
on the feedback batch. The server combines them (`uagan_feedback`) into e = ∂L_G/∂x and steps
G with J_θᵀ e. The feedback batch is distinct from the critic batches for MD-GAN's reason: a
discriminator just stepped against a batch has memorised it.

π_k ∝ n_k (`pi: size`, the default: then Σ_k π_k p_k is the pooled data, which the optimal G
matches) or uniform 1/N (`pi: uniform`, as the reference code yz422/UAGAN does); a weighting
multiplies the base (AFL replaces it with λ) and so moves the target to the π-mixture
Σ_k π_k p_k: the evaluation also scores the generator against that mixture (scope `mixture`).
Needs a probability-output discriminator (D = sigmoid(logit)): `validate` refuses the others.

User-level differential privacy (`privacy.level: user`; the release in `server_held`; `pi`
must be `uniform`: `simulator.privacy.checks`). The odds aggregation is a *sum* over clients,
which is what a DP release can noise. With o_k = D_k/(1 − D_k) = exp(l_k) [B]:

    Φ = Σ_k π_k o_k,    D_ua = Φ/(1 + Φ),    logit_ua = log Φ,
    ∇ₓΦ = Σ_k π_k ∇ₓo_k = Σ_k π_k o_k ∇ₓl_k,    ∇ₓ logit_ua = ∇ₓΦ / Φ,

and with π_k = 1/m both Φ and ∇ₓΦ are means over clients. So a client's answer block — the one
vector it releases — is v_k = [o_k (B) ; o_k ⊙ ∇ₓl_k (B·d)], B(d + 1) numbers (384 on the
ring with B = 128), clipped as one vector to C (odds and gradients together: one client, one
release). The released mean (Σ_k clip_C(v_k) + N(0, σ²C²I)) / m is [Φ̃ ; ∇Φ̃] — Φ and ∇ₓΦ
with uniform π_k = 1/m over the expected cohort m (the sampled clients, each at 1/m: Σπ = |S|/m
is 1 on average, exactly with fixed cohorts) — and the server takes, per row of the feedback
batch (post-processing, no further privacy cost),

    logit_ua = log Φ̂,    e = ∂L_G/∂logit_ua · ∇Φ̃ / Φ̂,    Φ̂ = max(Φ̃, σC/m),

L_G the objective's generator loss of logit_ua (`odds_feedback`). The floor: noise can make Φ̃
≤ 0, where log Φ̃ and the ratio are undefined or explode; σC/m is the noise's std on each
coordinate (public), below which Φ̃ says nothing — e is then at most the noise's size over
the floor. With σ = 0 the floor is the smallest positive float: no noise and no clip
(C → ∞) give today's logsumexp combination with uniform π (to float rounding, `pi: uniform`).
Clipping scales a client's odds and gradients together, so its own ∇o_k/o_k is kept: a clipped
client's critic speaks at a lower π_k, nothing else. What clients send stays their logits and
input gradients: the server forms v_k from them before clipping (o_k = exp(l_k) in float64; a
logit above ≈ 709 overflows and the block counts as a diverged client's, 0). A client that
should clip its own block (a server that is not trusted with raw answers, secure
aggregation) would send v_k itself — not done here: the server is the trusted aggregator, as
for DP-FedAvg.
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
from fedgan.simulator.gan.objectives import OBJECTIVES
from fedgan.simulator.lazy import lazy
from fedgan.simulator.messages import (
    ANSWER_LOGITS,
    FAKE_CRITIC,
    FAKE_FEEDBACK,
    LOGIT_GRADS,
    LOGITS,
)
from fedgan.simulator.registry import RegistryError
from fedgan.simulator.scenario import Scenario

if TYPE_CHECKING:
    import torch
    from fedgan.simulator.gan.train import GAN
    from torch import Tensor
else:  # `check` (the preflight) needs no torch: a run imports it on first use
    torch = lazy("torch", globals(), "torch")

PIS = ("size", "uniform")


class UAGAN(ServerHeld):
    """UA-GAN: the same batches for every client, logits and their gradients back, the odds
    aggregation D_ua on the server (module doc).

    Parameters
    ----------
    pi : {"size", "uniform"} (default: "size")
        Base mixture weights: π_k ∝ n_k (training points), or 1/N as the reference code.
    weighting : {name, params} or None (default: None, π = the base)
        A weighting rule (`simulator.weighting`), which moves π and so the target mixture.
    weights_every : int (default: 1)
        Rounds between the scorings a weighting's weights come from.
    """

    answer = ANSWER_LOGITS
    bounded_key = LOGIT_GRADS
    name = "uagan"

    def __init__(
        self,
        setup: Setup,
        pi: str = "size",
        weighting: Mapping[str, Any] | None = None,
        weights_every: int = 1,
    ) -> None:
        super().__init__(setup, weighting, weights_every)
        self.pi = pi
        self._z: Tensor | None = None
        self._opts: np.ndarray | None = None
        """Conditional training: the feedback rows' options [B]."""

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        problems = super().check(s)
        try:
            objective = OBJECTIVES.get(s.gan.objective)
        except RegistryError as exc:  # the schema imported it; a plug-in may still change
            return [*problems, f"gan.objective: {exc}"]
        if not objective.probabilistic:
            allowed = [n for n in OBJECTIVES.names() if OBJECTIVES.get(n).probabilistic]
            problems.append(
                f"gan.objective: uagan combines discriminators' odds D/(1 − D), so it needs a "
                f"probability-output discriminator (D = sigmoid(logit)); "
                f"{s.gan.objective!r} is not one; allowed: {', '.join(allowed)}"
            )
        f = s.federation
        pi = f.protocol_params.get("pi", "size") if f is not None else "size"
        if pi not in PIS:
            problems.append(
                f"federation.protocol_params.pi: unknown {pi!r}; allowed: {', '.join(PIS)}"
            )
        return problems

    def base(self, pids: Sequence[int]) -> np.ndarray:
        if self.pi == "uniform":
            return np.ones(len(pids))
        return self.sizes[list(pids)]

    def fakes(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        s = self.setup.scenario
        z_d, z_g = latents(s, self.gan, t)
        self._z = z_g
        if self.cond is not None:
            return self._conditional_fakes(r, t, z_d, z_g)
        x_d, x_g = generate(self.gan, self.gstate.g, [z_d, z_g])
        batch = {FAKE_CRITIC: x_d, FAKE_FEEDBACK: x_g}  # one object: the same for every client
        return {p: batch for p in r.clients}

    def _conditional_fakes(
        self, r: Round, t: int, z_d: Tensor, z_g: Tensor
    ) -> dict[int, dict[str, np.ndarray]]:
        """Conditional training: one feedback batch for all (its options from the global
        sampler: Φ(x|c) needs every client's logit at the same [x, c]); each client's critic
        batches on the same latents with options of the categories it holds (its renormalized
        sampler: it pairs each with a real row of its own)."""
        s = self.setup.scenario
        self._opts = draw_options(s, self.gan, z_g, self.global_p, t)
        zs = []
        for p in r.clients:
            z = z_d.clone()
            draw_options(s, self.gan, z, self.client_p[p], t, p)
            zs.append(z)
        xs = generate(self.gan, self.gstate.g, [*zs, z_g])
        x_g = with_condition(self.gan, xs[-1], z_g)
        return {
            p: {FAKE_CRITIC: with_condition(self.gan, xs[i], zs[i]), FAKE_FEEDBACK: x_g}
            for i, p in enumerate(r.clients)
        }

    def feedback(
        self, replies: Sequence[Reply], w: np.ndarray
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        answers = [rep.arrays() for rep in replies]
        logits = torch.as_tensor(np.stack([a[LOGITS] for a in answers]))
        grads = torch.as_tensor(np.stack([a[LOGIT_GRADS] for a in answers]))
        if self.cond is not None:  # Φ(x|c): per-row π_j(c) (`conditional.row_weights`)
            from fedgan.simulator.gan.conditional import row_weights, uagan_feedback_rows

            assert self._opts is not None
            pids = [rep.partition_id for rep in replies]
            pi = torch.as_tensor(row_weights(w, self.counts[pids], self._opts), dtype=logits.dtype)
            e, loss = uagan_feedback_rows(self.gan, logits, grads[..., : self.data_dim], pi)
            assert self._z is not None
            return self._z, e, loss
        log_pi = torch.log(torch.as_tensor(w, dtype=logits.dtype))
        from fedgan.simulator.gan.split import uagan_feedback

        e, loss = uagan_feedback(self.gan, logits, grads, log_pi)
        assert self._z is not None
        return self._z, e, loss

    def release_block(self, answer: Mapping[str, np.ndarray]) -> np.ndarray:
        """v_k = [o_k ; o_k ⊙ ∇ₓl_k] (module doc), o_k = exp(l_k), flat float64."""
        logits = np.asarray(answer[LOGITS], dtype=np.float64)
        grads = np.asarray(answer[LOGIT_GRADS], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow → inf: a diverged client
            odds = np.exp(logits)
            return np.concatenate([odds, (odds[:, None] * grads).ravel()])

    def released_feedback(
        self, mean: np.ndarray, noise_std: float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """e from the released [Φ̃ ; ∇Φ̃] (module doc)."""
        assert self._z is not None
        b = len(self._z)
        phi = torch.as_tensor(mean[:b])
        dphi = torch.as_tensor(mean[b:].reshape(b, self.dim))
        floor = max(noise_std, float(np.finfo(np.float64).tiny))
        e, loss = odds_feedback(self.gan, phi.clamp(min=floor), dphi)
        return self._z, e.float(), loss.float()

    def targets(self) -> dict[str, np.ndarray]:
        """`mixture`: π over every client (a client not scored yet: its base weight)."""
        return {"mixture": self._normalised(list(range(len(self.sizes))))}

    def extra_state(self) -> dict[str, Any]:
        return {}


def odds_feedback(gan: GAN, phi: Tensor, dphi: Tensor) -> tuple[Tensor, Tensor]:
    """The feedback e = ∂L_G/∂x [B, d] against D_ua from Φ [B] (> 0) and ∇ₓΦ [B, d]:
    logit_ua = log Φ, ∇ₓ logit_ua = ∇ₓΦ/Φ, e = ∂L_G/∂logit_ua · ∇ₓΦ/Φ. Returns (e, L_G)."""
    lg = torch.log(phi).detach().requires_grad_(True)
    with torch.enable_grad():
        loss = gan.objective.generator_loss(lg)
        (dl,) = torch.autograd.grad(loss, lg)  # [B]
    return dl[:, None] * dphi / phi[:, None], loss.detach()
