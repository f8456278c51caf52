"""What MD-GAN and UA-GAN share: the generator and its optimizer on the server, a private
critic on every client, one exchange per generator step, client weights from a weighting rule.

A round is `federation.local_steps` generator steps (`exchanges`); the run's step t =
(round − 1) · local_steps + step sets both learning-rate schedules, so a run of R rounds takes
R · local_steps generator steps, like its centralized twin. Per step the server draws latents
(`torch_generator(seed, "server-z", t[, client])`), sends the generated batches
(`fakes.critic` [n_critic, B, d], `fakes.feedback` [B, d]), gates the answers (exact keys and
shapes, finite values; `federation.max_update_norm` bounds the answer — see `bounded_key`),
weights the clients that answered (renormalised over them) and steps the generator with
J_θᵀ e (`simulator.gan.split.generator_step`).

Client weights: a base weight b_k (the subclass's; MD-GAN 1, UA-GAN n_k or 1) and, with a
`weighting` (`simulator.weighting`), the rule's weight from the clients' scores of generated
points: every `weights_every` rounds, step 0 of the round also sends each client `fakes.score`
(as many points as its held-out split, from the generator that is evaluated) and the reply
carries the scores; a client not scored yet keeps its base weight (AFL: its λ).

User-level differential privacy (`privacy.level: user`): every generator step is one
Poisson-subsampled (or fixed-cohort) Gaussian release, `local_steps` a round, as
`simulator.privacy.budget` accounts them. The server turns each accepted client's answer into
*one* vector — its answer block, what the subclass's `release_block` says the client releases
(MD-GAN: its feedback on the common feedback batch; UA-GAN: its odds and their input
gradients) —, and the seeded DP aggregator (`user_level_aggregator`, the one DP-FedAvg uses)
clips each block as a whole to L2 norm C, sums them, adds N(0, σ²C²) to every coordinate of
the sum and divides by the *expected* cohort m (`DPAggregator.release`, noise drawn for
(round, exchange)); the subclass's `released_feedback` turns that noised mean into the
generator's feedback (post-processing). Client weights are uniform (1/m each: the `fed.weight`
rows), no weighting and no client statistic is read (`simulator.privacy.checks`).

Which clipping, and the sensitivity: the *whole block* of a client is clipped as one vector,
so adding or removing one client (all of its data: the unit at user level) moves the sum by
at most C — sensitivity C under add/remove (Poisson cohorts), 2C under replace-one (fixed
cohorts; the accountant counts the 2) — and one step is one Gaussian release of multiplier σ.
GS-WGAN (Chen et al. 2020), the same structure with one critic per data shard, clips *per
row*: each generated sample's gradient ∂L/∂x_i to C (C/B on the batch mean), noise of std
σ·2C per coordinate (their sensitivity 2C: replace-one of a training point), and accounts B
releases per generator step (one per generated sample, each a Gaussian of multiplier σ,
sampled with the critic: `evaluation/privacy_analysis.py` of their code). A unit moves every
row (it trained the critic that answers on all of them), and B Gaussian releases of multiplier
σ cost (unsampled, exactly) what one release of the whole block of multiplier σ/√B costs:
per-row clipping at C is, in the guarantee, whole-block clipping at √B·C with the noise of
one row (a whole-block L2 sensitivity of √B·C, 2√B·C replace-one). Ours spends the bound
where the block's mass is and scales a client's block as a whole — its rows keep their
relative sizes, where per-row clipping flattens the large ones.

What stays with privacy: the replies' statistics are withheld (the loop reads none; MD-GAN's
`server.g_loss` then has no value under DP, UA-GAN's is computed from the release); the
`privacy.clipped_fraction` row is the mean over the round's exchanges of the share of blocks
the clip scaled down (with adaptive clipping, `privacy.clip` the clip after the round); the
aggregator's adaptive clip is part of the protocol state (checkpoints, resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from fedgan.server.protocols.base import Expect, Protocol, ProtocolState, Reply, Round, Setup
from fedgan.server.protocols.fedavg import DP_STATE, user_level_aggregator
from fedgan.simulator.lazy import lazy
from fedgan.simulator.messages import (
    CRITIC_STATE,
    FAKE_SCORE,
    GENERATOR,
    SCORE_KEYS,
    STEP_REPLY_KEYS,
    StepInstruction,
    select,
)
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.seeding import torch_generator
from fedgan.simulator.weighting import Weighting, build_weighting, check_weighting
from fedgan.wire.codec import content, read_step_reply
from fedgan.wire.records import to_record
from flwr.app import Message, RecordDict

if TYPE_CHECKING:
    import torch
    from fedgan.simulator.gan.conditional import Condition
    from fedgan.simulator.gan.train import GAN, GANState
    from torch import Tensor
else:  # `check` (the preflight) needs no torch: a run imports it on first use
    torch = lazy("torch", globals(), "torch")


class ServerHeld(Protocol):
    """A generator held by the server, answered by the clients' private critics (see module).

    Subclasses set `answer`, `bounded_key` and `name`, and implement `fakes` (the batches
    each client gets) and `feedback` (one feedback batch from the weighted answers); under
    user-level privacy `release_block` (a client's answer as the one vector it releases) and
    `released_feedback` (the feedback from the noised mean of those vectors).
    """

    answer: ClassVar[str]
    """What clients answer (`simulator.messages.ANSWERS`)."""
    bounded_key: ClassVar[str]
    """The answer array whose Frobenius norm `federation.max_update_norm` bounds."""
    name: ClassVar[str]

    def __init__(
        self,
        setup: Setup,
        weighting: Mapping[str, Any] | None = None,
        weights_every: int = 1,
    ) -> None:
        # torch's, imported when a run builds the protocol (its `check` needs none of them)
        from fedgan.simulator.gan.train import GAN
        from fedgan.simulator.prepare import condition_of, critic_state, initial_state

        super().__init__(setup)
        s = setup.scenario
        assert s.federation is not None
        data = setup.data
        self.exchanges = s.federation.local_steps
        self.total = s.federation.rounds * s.federation.local_steps
        # The server's GAN keeps the per-step generator EMA, as the centralized twin does.
        from fedgan.simulator.data.encoding import output_spans

        # The clients' networks: a mixed table's output heads, the condition (if any).
        self.gan = GAN(
            s.gan.config(),
            data.train.X.shape[1],
            data.train.image_shape,
            output_spans(data.train.info),
            condition_of(s),
        )
        self.gstate: GANState = initial_state(s, self.gan)
        self.weighting: Weighting = build_weighting(weighting)
        self.weights_every = weights_every
        self.sizes = np.array([len(ix) for ix in data.client_train], dtype=np.float64)
        self.critic_shapes = {k: tuple(v.shape) for k, v in critic_state(s).items()}
        self.data_dim = int(data.train.X.shape[1])
        """d, the generated rows' width."""
        self.dim = self.data_dim
        """The width of the rows that travel: d, or d + K with the one-hot condition."""
        self.cond: Condition | None = self.gan.condition
        if self.cond is not None:
            from fedgan.simulator.gan.conditional import client_counts, renormalized

            self.dim += self.cond.width
            self.counts = client_counts(self.cond, data)
            """n_{j,o}: client j's training rows of option o (the counts clients release)."""
            self.global_p = self.cond.global_probs(self.counts.sum(axis=0))
            self.client_p = [renormalized(self.global_p, n > 0) for n in self.counts]
        self.weight_of: dict[int, float] = {}
        """The weighting's latest weight of each client scored so far (unnormalised)."""
        self._losses: list[float] = []
        self.dp = user_level_aggregator(s)
        """User-level DP (`privacy.level: user`): the seeded DP aggregator that releases each
        step's answer blocks (module doc); None otherwise."""
        self._clipped: list[float] = []

    # --- scenario checks ----------------------------------------------------------------------

    @classmethod
    def check(cls, s: Scenario) -> list[str]:
        """What does not apply to a server-held generator, and the protocol's parameters."""
        f = s.federation
        if f is None:
            return []
        name = cls.name
        why = f"{name} keeps the generator on the server and averages no parameters"
        problems = []
        if s.strategy.name != "fedavg" or s.strategy.params:
            problems.append(
                f"strategy.name: {why}, so a Flower strategy does not apply (leave `strategy` "
                f"out; client weights come from federation.protocol_params.weighting)"
            )
        if s.strategy.critic is not None:
            problems.append(f"strategy.critic: {why}: there is no critic to aggregate")
        if f.federate != "both":
            problems.append(
                f"federation.federate: {why}: the generator stays on the server and every "
                f"critic on its client (leave it out)"
            )
        if f.local_epochs is not None:
            problems.append(
                f"federation.local_epochs: a {name} round is federation.local_steps generator "
                f"steps, one exchange each (use local_steps)"
            )
        if f.proximal_mu:
            problems.append(f"federation.proximal_mu: {why}: there is no proximal term")
        params = f.protocol_params
        problems += check_weighting(params.get("weighting"), "federation.protocol_params.weighting")
        every = params.get("weights_every", 1)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            problems.append(
                f"federation.protocol_params.weights_every: expected an integer ≥ 1 (rounds "
                f"between scorings), got {every!r}"
            )
        return problems

    # --- one exchange = one generator step -----------------------------------------------------

    def step_of(self, r: Round, step: int) -> int:
        """The run's generator step (0-based) of exchange `step` of round `r`."""
        return (r.number - 1) * self.exchanges + step

    def scoring(self, r: Round, step: int) -> bool:
        """Whether this exchange also sends points to score (a weighting's inputs)."""
        due = (r.number - 1) % self.weights_every == 0
        return step == 0 and due and type(self.weighting) is not Weighting

    def sends_critic(self, t: int) -> bool:
        """Whether step `t`'s replies carry the clients' critics (MD-GAN's swaps)."""
        return False

    def fakes(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        """The generated batches each client of `r` gets at step `t` (one dict object for all
        when they are the same: an engine decodes it once)."""
        raise NotImplementedError

    def extra(self, r: Round, t: int) -> dict[int, dict[str, np.ndarray]]:
        """Further arrays for some clients at step `t` (MD-GAN: a swapped-in critic)."""
        return {}

    def instructions(self, r: Round, step: int) -> list[Message]:
        t = self.step_of(r, step)
        config = StepInstruction(r.number, t, self.answer, self.sends_critic(t)).config()
        fakes = self.fakes(r, t)
        extra = self.extra(r, t)
        if self.scoring(r, step):
            for p, pts in self._score_points(r).items():
                extra.setdefault(p, {})[FAKE_SCORE] = pts
        shared: dict[int, RecordDict] = {}
        records: dict[int, RecordDict] = {}
        for p in r.clients:
            if p in extra:
                records[p] = content(arrays=to_record(fakes[p] | extra[p]), config=config)
                continue
            key = id(fakes[p])  # one record object per distinct batch dict
            if key not in shared:
                shared[key] = content(arrays=to_record(fakes[p]), config=config)
            records[p] = shared[key]
        return r.send(records)

    def expect(self, r: Round, step: int) -> Expect:
        t = self.step_of(r, step)
        from fedgan.simulator.messages import answer_shapes

        arrays = answer_shapes(self.answer, self.setup.scenario.gan.batch_size, self.dim)
        reference = None
        f = self.setup.scenario.federation
        if f is not None and f.max_update_norm is not None:
            reference = {self.bounded_key: np.zeros(arrays[self.bounded_key], np.float32)}
        if self.sends_critic(t):
            arrays = arrays | self.critic_shapes
        metrics = STEP_REPLY_KEYS + (SCORE_KEYS if self.scoring(r, step) else ())
        return Expect(arrays, metrics, reference)

    def combine(self, r: Round, step: int, replies: Sequence[Reply]) -> None:
        t = self.step_of(r, step)
        if self.scoring(r, step):
            self._score(replies)
        loss: Tensor | None
        if self.dp is not None:
            z, e, loss = self._release(r, step, replies)
        else:
            w = self.weights(r, replies)
            self._shares = {rep.partition_id: float(v) for rep, v in zip(replies, w, strict=True)}
            z, e, loss = self.feedback(replies, w)
        lr = self.gan.config.lr_scale(t, self.total)
        from fedgan.simulator.gan.split import generator_step

        self.gstate = generator_step(self.gan, self.gstate, z, e, lr)
        if loss is not None:
            self._losses.append(float(loss))
        self.after_step(t, replies)

    def feedback(
        self, replies: Sequence[Reply], w: np.ndarray
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(latents z [M, latent], feedback e [M, d] on G(z), the generator loss or None when
        the server cannot know it) from the answers and the normalised weights `w` [K]."""
        raise NotImplementedError

    # --- user-level DP: one release per generator step ------------------------------------------

    def _release(
        self, r: Round, step: int, replies: Sequence[Reply]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The step's DP release (module doc): every reply's answer block, clipped as one
        vector, summed, noised, over the expected cohort; then the feedback from that mean."""
        dp = self.dp
        assert dp is not None
        self._shares = {rep.partition_id: 1.0 / dp.expected_cohort for rep in replies}
        blocks = [self.release_block(rep.arrays()) for rep in replies]
        noise_std = dp.noise_multiplier * dp.clip / dp.expected_cohort  # the clip in force
        mean, norms, clipped = dp.release(blocks, r.number, step)
        self._clipped.append(clipped / len(norms) if len(norms) else 0.0)
        return self.released_feedback(mean, noise_std)

    def release_block(self, answer: Mapping[str, np.ndarray]) -> np.ndarray:
        """The one vector (float64, flat) a client's `answer` arrays release under user-level
        DP: what is clipped as a whole and summed."""
        raise NotImplementedError

    def released_feedback(
        self, mean: np.ndarray, noise_std: float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(latents z, feedback e on G(z), the generator loss or None) from the released
        noised mean of the answer blocks (`noise_std`: the noise's std on each coordinate of
        that mean, σ·C/m) — post-processing only."""
        raise NotImplementedError

    def after_step(self, t: int, replies: Sequence[Reply]) -> None:
        """Bookkeeping after the generator step (MD-GAN: collect critics for a swap)."""

    # --- weights --------------------------------------------------------------------------------

    def base(self, pids: Sequence[int]) -> np.ndarray:
        """The base weights b_k of clients `pids` (before any weighting)."""
        return np.ones(len(pids))

    def weights(self, r: Round, replies: Sequence[Reply]) -> np.ndarray:
        """The replying clients' weights, normalised over them (a client whose reply did not
        arrive drops out and the others' shares grow)."""
        pids = [rep.partition_id for rep in replies]
        return self._normalised(pids)

    def _normalised(self, pids: Sequence[int]) -> np.ndarray:
        base = self.base(pids)
        w = np.array(
            [
                self.weight_of.get(p, self.weighting.unscored(p, b))
                for p, b in zip(pids, base, strict=True)
            ],
            dtype=np.float64,
        )
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"{self.name}: invalid client weights {w} for clients {list(pids)}")
        return w / w.sum()

    def shares(self, r: Round, step: int, replies: Sequence[Reply]) -> dict[int, float]:
        return dict(self._shares)

    def _score_points(self, r: Round) -> dict[int, np.ndarray]:
        """Points each client of `r` scores: as many as its held-out split holds (none when
        it holds ≤ k: too few to measure), from the generator that is evaluated."""
        s = self.setup.scenario
        g = self._sampling_params()
        out = {}
        for p in r.clients:
            n = len(self.setup.data.client_held[p])
            n = n if n > s.evaluation.k else 0
            gen = torch_generator(s.seed, "score", p, r.number)
            z = torch.randn(n, self.gan.config.latent_dim, generator=gen)
            with torch.no_grad():
                out[p] = self.gan.G(g, z).numpy()
        return out

    def _score(self, replies: Sequence[Reply]) -> None:
        scored = [(rep.partition_id, read_step_reply(rep.message).score) for rep in replies]
        pids = [p for p, sc in scored if sc is not None]
        scores = [sc for _, sc in scored if sc is not None]
        if pids:
            w = self.weighting.weights(pids, self.base(pids), scores)
            self.weight_of.update({p: float(v) for p, v in zip(pids, w, strict=True)})

    # --- what the server holds ------------------------------------------------------------------

    def _sampling_params(self) -> dict[str, Tensor]:
        """The generator that is sampled and evaluated: its EMA when one is kept."""
        return self.gstate.g_ema or self.gstate.g

    def generator(self) -> dict[str, np.ndarray]:
        return {GENERATOR + k: v.detach().numpy() for k, v in self._sampling_params().items()}

    def snapshot(self) -> dict[str, np.ndarray]:
        return self._generator_arrays()

    def _generator_arrays(self) -> dict[str, np.ndarray]:
        """The generator, its optimizer state and its EMA (`GANState.arrays()` names)."""
        return {k: v for k, v in self.gstate.arrays().items() if not k.startswith(CRITIC_STATE)}

    def state(self) -> ProtocolState:
        held = self._generator_arrays()
        arrays = select(held, GENERATOR)
        server = {k: v for k, v in held.items() if k not in arrays}
        data = {"weight_of": dict(self.weight_of), "weighting": self.weighting.state()}
        if self.dp is not None:
            data[DP_STATE] = self.dp.to_data()
        return ProtocolState(arrays, server, data | self.extra_state())

    def extra_state(self) -> dict[str, Any]:
        """A subclass's further state, as plain data."""
        return {}

    def load_state(self, state: ProtocolState) -> None:
        from fedgan.simulator.prepare import initial_state

        self.gstate = initial_state(self.setup.scenario, self.gan).load_arrays(
            dict(state.arrays) | dict(state.server)
        )
        self.weight_of = {int(k): float(v) for k, v in state.data["weight_of"].items()}
        self.weighting.load_state(state.data["weighting"])
        if self.dp is not None and DP_STATE in state.data:
            self.dp.load_data(state.data[DP_STATE])
        self.load_extra_state(state.data)

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        """Take up `extra_state`."""

    def round_metrics(self) -> dict[str, float]:
        """`server.g_loss`: the generator loss of the round's steps (mean); under user-level
        DP `privacy.clipped_fraction` (mean over the round's steps of the share of answer
        blocks the clip scaled down) and, with adaptive clipping, `privacy.clip`."""
        out = {"server.g_loss": float(np.mean(self._losses))} if self._losses else {}
        self._losses = []
        if self.dp is not None and self._clipped:
            out["privacy.clipped_fraction"] = float(np.mean(self._clipped))
            if self.dp.adaptive is not None:
                out["privacy.clip"] = self.dp.clip
            self._clipped = []
        return out


def draw_options(
    s: Scenario, gan: GAN, z: Tensor, probs: np.ndarray, t: int, *keys: int
) -> np.ndarray:
    """Conditional training: draw each row's option of latents z [..., latent] from `probs`
    [K] (a stream of its own, `torch_generator(seed, "server-c", t, *keys)`: the latents'
    streams stay those of an unconditional run) and set it in z's condition coordinate, in
    place. Returns the options [...]."""
    cond = gan.condition
    assert cond is not None
    gen = torch_generator(s.seed, "server-c", t, *keys)
    n = int(np.prod(z.shape[:-1]))
    opts = torch.multinomial(torch.as_tensor(probs), n, replacement=True, generator=gen)
    opts = opts.view(*z.shape[:-1])
    z[..., -1] = cond.code(opts)
    return opts.numpy()


def with_condition(gan: GAN, x: np.ndarray, z: Tensor) -> np.ndarray:
    """Generated rows x [..., d] with the one-hot condition of their latents z appended:
    [..., d + K], what travels to the clients (their critics see [x, c])."""
    if gan.condition is None:
        return x
    c = gan.cond(z).numpy().astype(x.dtype)
    return np.concatenate([x, c], axis=-1)


def latents(s: Scenario, gan: GAN, t: int, *keys: int) -> tuple[Tensor, Tensor]:
    """Step `t`'s latents (for a client when `keys` name it): (critic batches [n_critic, B,
    latent], feedback batch [B, latent])."""
    c = gan.config
    gen = torch_generator(s.seed, "server-z", t, *keys)
    z_d = torch.randn(c.n_critic, c.batch_size, c.latent_dim, generator=gen)
    z_g = torch.randn(c.batch_size, c.latent_dim, generator=gen)
    return z_d, z_g


def generate(gan: GAN, g: dict[str, Tensor], zs: Sequence[Tensor]) -> list[np.ndarray]:
    """G(z) for each latent block of `zs` (one forward pass for all), as float32 arrays."""
    flat = torch.cat([z.reshape(-1, z.shape[-1]) for z in zs])
    with torch.no_grad():
        x = gan.G(g, flat).numpy()
    out, at = [], 0
    for z in zs:
        n = int(np.prod(z.shape[:-1]))
        out.append(x[at : at + n].reshape(*z.shape[:-1], x.shape[-1]))
        at += n
    return out


__all__ = ["ServerHeld", "draw_options", "generate", "latents", "with_condition"]
