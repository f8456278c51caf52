"""`dpfedavg_gan`: DP-FedAvg-GAN (Augenstein et al., ICLR 2020) — only the critic is federated;
the generator lives on the server and is trained there against the aggregated critic.

One exchange a round:

1. the server sends the round's clients the current generator and critic (`generator.*`,
   `critic.*`, `critic_buffer.*`) with a critic-only train instruction (`critic-only`);
2. each client takes `federation.local_steps` × `gan.n_critic` critic steps on its own real
   data against fakes from the received generator, which it never updates (DP-SGD under
   `privacy.level: sample`), and returns its critic alone; it keeps its critic optimizer's
   state (`clients.training`, critic-only rounds);
3. the server combines the critics. Without user-level privacy: their **uniform** mean over
   the clients that answered (each 1/K — Augenstein's uniform weights; no client's size is
   read). Under `privacy.level: user`: DP-FedAvg over the critic arrays only, with fedavg's
   seeded aggregator (`user_level_aggregator`): each client's critic update θ_k − θ clipped as
   one vector to C, the clipped updates summed, N(0, σ²C²) added to every coordinate, divided
   by the *expected* cohort — one release a round, as `simulator.privacy.budget` counts it
   for every protocol but the server-held ones;
4. the server takes `generator_steps` generator steps (default `federation.local_steps`:
   Augenstein's 6 D / 6 G steps with local_steps 6) against the new critic with the scenario's
   `g_opt` (`GAN.generator_step`; latents `torch_generator(seed, "server-z", t)`, t the run's
   generator step (round − 1) · generator_steps + j; the learning-rate schedule spans rounds ×
   generator_steps). This reads the released critic only: post-processing, no privacy cost.

The generator, its optimizer moments and its EMA (`gan.ema`, per generator step, as the
server-held protocols and the centralized twin keep it) live on the server; the protocol state
holds them with the critic (and, under user-level DP, the aggregator's adaptive clip), so a
stopped run resumes to the uninterrupted table. A round skipped for too few replies changes
nothing: no critic is combined and the generator takes no step.

What does not apply is refused (`check`): a Flower strategy other than plain fedavg and a
critic strategy (the combination is this protocol's), `federation.federate` other than `both`
(the generator travels to the clients, the critic both ways), `federation.local_epochs` (a
round is `local_steps` critic rounds on every client) and `federation.proximal_mu`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from fedgan.server.protocols.base import Expect, Protocol, ProtocolState, Reply, Round, Setup
from fedgan.server.protocols.fedavg import DP_STATE, user_level_aggregator
from fedgan.simulator.lazy import lazy
from fedgan.simulator.messages import (
    CRITIC_OPT,
    CRITIC_PREFIXES,
    GENERATOR,
    GENERATOR_EMA,
    TRAIN_REPLY_KEYS,
    TrainInstruction,
    select,
)
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import torch_generator
from fedgan.wire.codec import content
from fedgan.wire.records import to_record
from flwr.app import Message

if TYPE_CHECKING:
    import torch
    from fedgan.simulator.gan.train import GANState
    from torch import Tensor
else:  # `check` (the preflight) needs no torch: a run imports it on first use
    torch = lazy("torch", globals(), "torch")


class DPFedAvgGAN(Protocol):
    """DP-FedAvg-GAN: critics trained on the clients and averaged (DP-FedAvg under user-level
    privacy), the generator trained on the server against their mean (see the module).

    Parameters
    ----------
    generator_steps : int or None (default: None, `federation.local_steps`)
        Generator steps the server takes each round against the combined critic.
    """

    def __init__(self, setup: Setup, generator_steps: int | None = None) -> None:
        # torch's, imported when a run builds the protocol (its `check` needs none of them)
        from fedgan.simulator.gan.train import GAN
        from fedgan.simulator.prepare import initial_state

        super().__init__(setup)
        s = setup.scenario
        assert s.federation is not None
        data = setup.data
        self.generator_steps = (
            generator_steps if generator_steps is not None else s.federation.local_steps
        )
        self.total = s.federation.rounds * self.generator_steps
        # The server's GAN keeps the per-step generator EMA, as the centralized twin does.
        from fedgan.simulator.data.encoding import output_spans

        self.gan = GAN(  # the clients' networks (a mixed table's output heads)
            s.gan.config(),
            data.train.X.shape[1],
            data.train.image_shape,
            output_spans(data.train.info),
        )
        self.gstate: GANState = initial_state(s, self.gan)
        self.critic: dict[str, np.ndarray] = select(self.gstate.arrays(), CRITIC_PREFIXES)
        """The global critic (and its buffers) after the last combination."""
        self.shapes = {k: tuple(v.shape) for k, v in self.critic.items()}
        self.dp = user_level_aggregator(s)
        """User-level DP (`privacy.level: user`): fedavg's seeded DP aggregator, over the
        critic arrays only; None otherwise."""
        self._clipped: list[float] = []
        self._losses: list[float] = []
        self._shares: dict[int, float] = {}

    # --- scenario checks ----------------------------------------------------------------------

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        """What does not apply to DP-FedAvg-GAN, and `generator_steps`."""
        f = s.federation
        if f is None:
            return []
        why = "dpfedavg_gan averages the clients' critics itself (uniformly, or DP-FedAvg)"
        problems = []
        if s.strategy.name != "fedavg" or s.strategy.params:
            problems.append(
                f"strategy.name: {why}, so a Flower strategy does not apply (leave `strategy` out)"
            )
        if s.strategy.critic is not None:
            problems.append(f"strategy.critic: {why}: there is no second aggregation")
        if f.federate != "both":
            problems.append(
                "federation.federate: dpfedavg_gan sends the generator to the clients and "
                "federates the critic; the generator is trained on the server (leave it out)"
            )
        if f.local_epochs is not None:
            problems.append(
                "federation.local_epochs: a dpfedavg_gan round is federation.local_steps × "
                "gan.n_critic critic steps on every client (use local_steps)"
            )
        if f.proximal_mu:
            problems.append(
                "federation.proximal_mu: dpfedavg_gan has no proximal term (the clients' "
                "critics are averaged, the generator is the server's)"
            )
        steps = f.protocol_params.get("generator_steps")
        ok = steps is None or (isinstance(steps, int) and not isinstance(steps, bool))
        if not ok or (steps is not None and steps < 1):
            problems.append(
                "federation.protocol_params.generator_steps: expected an integer ≥ 1 (the "
                f"server's generator steps a round; default federation.local_steps), got {steps!r}"
            )
        return problems

    # --- the exchange ---------------------------------------------------------------------------

    def instructions(self, r: Round, step: int) -> list[Message]:
        arrays = {GENERATOR + k: v.detach().numpy() for k, v in self.gstate.g.items()}
        config = TrainInstruction(r.number, critic_only=True).config()
        # One record object for every client: an engine decodes it once.
        return r.send(content(arrays=to_record(arrays | self.critic), config=config))

    def expect(self, r: Round, step: int) -> Expect:
        f = self.setup.scenario.federation
        bounded = f is not None and f.max_update_norm is not None
        return Expect(self.shapes, TRAIN_REPLY_KEYS, dict(self.critic) if bounded else None)

    def combine(self, r: Round, step: int, replies: Sequence[Reply]) -> None:
        critics = [rep.arrays() for rep in replies]
        if self.dp is not None:
            out = self.dp.combine(self.critic, critics, r.number, step)
            self._clipped.append(out.clipped_fraction)
            self.critic = out.mean
            self._shares = {rep.partition_id: 1.0 / self.dp.expected_cohort for rep in replies}
        else:
            self.critic = uniform_mean(self.critic, critics)
            self._shares = {rep.partition_id: 1.0 / len(replies) for rep in replies}
        self.gstate = self.gstate.load_arrays(self.critic)
        self._train_generator(r)

    def _train_generator(self, r: Round) -> None:
        """`generator_steps` generator steps against the combined critic (module doc, 4)."""
        s, c = self.setup.scenario, self.gan.config
        for j in range(self.generator_steps):
            t = (r.number - 1) * self.generator_steps + j
            z = server_latents(s.seed, t, c.batch_size, c.latent_dim)
            self.gstate, stats = self.gan.generator_step(self.gstate, z, c.lr_scale(t, self.total))
            self._losses.append(float(stats["g_loss"]))

    # --- weights --------------------------------------------------------------------------------

    def weights(self, r: Round, replies: Sequence[Reply]) -> np.ndarray:
        """Uniform: every client's critic counts the same (no client's size is read)."""
        return np.ones(len(replies), dtype=np.float64)

    def shares(self, r: Round, step: int, replies: Sequence[Reply]) -> dict[int, float]:
        """1/K over the K clients that answered; under user-level DP 1/m, m the expected
        cohort (the DP mean's divisor)."""
        return dict(self._shares)

    def round_metrics(self) -> dict[str, float]:
        """`server.g_loss` (the mean of the round's generator steps' losses, against the
        released critic: post-processing); under user-level DP `privacy.clipped_fraction`
        and, with adaptive clipping, `privacy.clip`."""
        out = {"server.g_loss": float(np.mean(self._losses))} if self._losses else {}
        self._losses = []
        if self.dp is not None and self._clipped:
            out["privacy.clipped_fraction"] = float(np.mean(self._clipped))
            if self.dp.adaptive is not None:
                out["privacy.clip"] = self.dp.clip
            self._clipped = []
        return out

    # --- what the server holds ------------------------------------------------------------------

    def _sampling_params(self) -> dict[str, Tensor]:
        """The generator that is sampled and evaluated: its EMA when one is kept."""
        return self.gstate.g_ema or self.gstate.g

    def generator(self) -> dict[str, np.ndarray]:
        return {GENERATOR + k: v.detach().numpy() for k, v in self._sampling_params().items()}

    def snapshot(self) -> dict[str, np.ndarray]:
        """The generator, the critic and the generator's EMA (`checkpoints/round-<r>.npz`)."""
        st = self.state()
        return st.arrays | select(st.server, GENERATOR_EMA)

    def state(self) -> ProtocolState:
        held = {k: v for k, v in self.gstate.arrays().items() if not k.startswith(CRITIC_OPT)}
        generator = select(held, GENERATOR)
        server = {k: v for k, v in held.items() if k not in generator and k not in self.critic}
        data = {DP_STATE: self.dp.to_data()} if self.dp is not None else {}
        return ProtocolState(generator | self.critic, server, data)

    def load_state(self, state: ProtocolState) -> None:
        from fedgan.simulator.prepare import initial_state

        arrays = dict(state.arrays) | dict(state.server)
        self.gstate = initial_state(self.setup.scenario, self.gan).load_arrays(arrays)
        self.critic = select(dict(state.arrays), CRITIC_PREFIXES)
        if self.dp is not None and DP_STATE in state.data:
            self.dp.load_data(state.data[DP_STATE])


def uniform_mean(
    current: dict[str, np.ndarray], replies: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The uniform mean of the replies' arrays (the keys of `current`), in float64, written in
    `current`'s dtypes."""
    out = {}
    for k, v in current.items():
        total = np.zeros(np.shape(v), dtype=np.float64)
        for a in replies:
            total += np.asarray(a[k], dtype=np.float64)
        out[k] = (total / len(replies)).astype(np.asarray(v).dtype)
    return out


def server_latents(seed: int, t: int, batch: int, latent_dim: int) -> Tensor:
    """The latents [batch, latent_dim] of the server's generator step `t` (the run's, 0-based)."""
    return torch.randn(batch, latent_dim, generator=torch_generator(seed, "server-z", t))


__all__ = ["DPFedAvgGAN", "server_latents", "uniform_mean"]
