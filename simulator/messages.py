"""The message format clients and server share: record names, keys, array prefixes, typed messages.

Framework-free: keys are plain strings and messages plain dataclasses, encoded to and decoded
from flat `key → value` dicts. `wire/` turns those dicts into Flower records and Messages;
`clients/`, `server/`, the engines and the gate speak only through this module, so every key
below is written once, here.

A message has up to three records (`RECORDS`): `arrays` (one ArrayRecord of prefixed arrays:
Flower's stock strategies accept exactly one), `metrics` (one MetricRecord: scalars and
fixed-length lists) and `config` (one ConfigRecord). What travels:

| message | config | arrays | metrics |
|---|---|---|---|
| train instruction | `server-round`, `proximal-mu` (FedProx), `critic-only` | the networks | — |
| train reply | — | the client's federated networks (`critic-only`: its critic) | `TrainReply` |
| evaluate instruction | `server-round` | the generator to score (empty: the client's own) | — |
| evaluate reply | — | — | `EvaluateReply` |
| query | `ask`: `partition-id` \\| `private` \\| `restore` | `restore`: the private state | — |
| query reply | — | `private`: the private state | `QueryReply` |
| step instruction (mdgan, uagan) | `StepInstruction` | `fakes.*` batches; a swapped critic | — |
| step reply | — | `answer.*` (+ its critic on a swap) | `StepReply` |

A *step* is one generator step of a protocol whose generator lives on the server: a train
message whose config holds `gen-step`. The client steps its private critic on its own real data
against the sent `fakes.critic` batches and answers on `fakes.feedback`: MD-GAN's error feedback
`answer.feedback` ∂L_G/∂x, or UA-GAN's logits `answer.logits` and their input gradients
`answer.logit_grads`. `fakes.score` (when weights are due) are generated points the client
scores on its held-out split, for the fairness weightings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

# --- records ------------------------------------------------------------------------------------

ARRAYS = "arrays"
"""The one ArrayRecord of a message (Flower's strategies' default `arrayrecord_key`)."""
METRICS = "metrics"
"""The one MetricRecord of a reply."""
CONFIG = "config"
"""The one ConfigRecord of an instruction (Flower's strategies' default `configrecord_key`)."""
RECORDS = (ARRAYS, METRICS, CONFIG)

# --- keys -----------------------------------------------------------------------------------------

PARTITION_ID = "partition-id"
"""Metric key: the partition id a reply comes from (checked by the gate against the node's)."""
NODE_PARTITION_ID = PARTITION_ID
"""node_config key of a node's partition id: Flower's simulation sets it, `fedgan up` passes it
to each SuperNode, and replies echo it under the same name."""
NODE_NUM_PARTITIONS = "num-partitions"
"""node_config key of the number of partitions (set beside `partition-id`)."""
NUM_EXAMPLES = "num-examples"
"""Metric key: training points (train replies; Flower's `weighted_by_key`) or held-out points
(evaluate replies)."""
SERVER_ROUND = "server-round"
"""Config key: the round of an instruction (Flower's strategies write it into every one)."""
PROXIMAL_MU = "proximal-mu"
"""Config key: FedProx's μ (Flower's FedProx sends it; the client adds the term itself)."""
CRITIC_ONLY = "critic-only"
"""Config key of a train instruction: 1 when the client takes only critic steps, against the
received generator held fixed, and returns its critic alone (`dpfedavg_gan`: DP-FedAvg-GAN,
Augenstein et al. 2020). Absent (the default): a full local GAN round."""
ASK = "ask"
"""Config key of a query: what the server asks for (`QUERIES`)."""
HAS_PRIVATE = "has-private"
"""Metric key of an `ask: private` reply: 1 when the client holds private state."""
TRAIN_LOSS = "train_loss"
"""Metric key of the positive quality loss q-FedAvg raises to a power (its `train_loss_key`)."""

TRAIN = "train."
"""Prefix of the local-training statistics of a train reply (losses, gradient norms, ...)."""
LOCAL = "local."
"""Prefix of a generator's scores on the client's own held-out split (`LocalEvaluation`)."""
TIME = "time."
"""Prefix of wall times: the server moves them to timings.csv, out of the metrics table."""

LOCAL_RECALL = LOCAL + "recall"
LOCAL_COVERAGE = LOCAL + "coverage"
LOCAL_EXPECTED_COVERAGE = LOCAL + "expected_coverage"
RECALL_HITS = LOCAL + "recall_hits"
"""Per-group counts (lists over `FederatedData.groups`), one name in train and evaluate
replies: recall hits, coverage hits and held-out points of each group, pooled by summing."""
COVERAGE_HITS = LOCAL + "coverage_hits"
GROUP_N = LOCAL + "group_n"
OTHER_RECALL_HITS = LOCAL + "other_recall_hits"
"""The same counts for every other grouping of `evaluation.group_by` (another column, an
intersection), concatenated in `FederatedData.others` order; absent when the partition
column is the only grouping, so such a scenario's replies are what they always were."""
OTHER_COVERAGE_HITS = LOCAL + "other_coverage_hits"
OTHER_GROUP_N = LOCAL + "other_group_n"
QUALITY_LOSS = LOCAL + "quality_loss"
"""Coverage shortfall below what two same-distribution samples reach (≥ 0)."""
BYTES_RECEIVED = "bytes.received"
BYTES_SENT = "bytes.sent"
TIME_CLIENT_TRAIN = TIME + "client_train"
TIME_CLIENT_STEP = TIME + "client_step"

GEN_STEP = "gen-step"
"""Config key of a step instruction: the run's generator step (0-based) it belongs to."""
ANSWER = "answer"
"""Config key of a step instruction: what the client answers (`ANSWERS`)."""
ANSWER_FEEDBACK = "feedback"
"""MD-GAN: the error feedback e = ∂L_G/∂x on the feedback batch."""
ANSWER_LOGITS = "logits"
"""UA-GAN: the critic's logits l(x) and their input gradients ∇ₓ l on the feedback batch."""
ANSWERS = (ANSWER_FEEDBACK, ANSWER_LOGITS)
SEND_CRITIC = "send-critic"
"""Config key of a step instruction: 1 when the reply must also carry the client's critic
(parameters, buffers and optimizer state) for a swap."""


def local_key(metric: str) -> str:
    """The local score key of `metric` (`recall` or `coverage`)."""
    return {"recall": LOCAL_RECALL, "coverage": LOCAL_COVERAGE}[metric]


def hits_key(metric: str) -> str:
    """The per-group hit-count key of `metric` (`recall` or `coverage`)."""
    return {"recall": RECALL_HITS, "coverage": COVERAGE_HITS}[metric]


# --- queries -------------------------------------------------------------------------------------

ASK_PARTITION = PARTITION_ID
"""Query: which partition does this node hold (Flower's node ids are random)."""
ASK_PRIVATE = "private"
"""Query: send your private state (a checkpoint collects it)."""
ASK_RESTORE = "restore"
"""Query: take this private state back (a resume restores it)."""
QUERIES = (ASK_PARTITION, ASK_PRIVATE, ASK_RESTORE)
"""What a query's `ask` may be (absent: the partition id)."""

# --- array prefixes ------------------------------------------------------------------------------

GENERATOR = "generator."
CRITIC = "critic."
CRITIC_BUFFER = "critic_buffer."
"""Non-trained critic tensors that travel with it (spectral-norm power-iteration vectors)."""
GENERATOR_EMA = "generator_ema."
CRITIC_PREFIXES = (CRITIC, CRITIC_BUFFER)
"""Everything that belongs to the critic network."""
CRITIC_OPT = "critic_opt."
"""The critic's optimizer state (private; it travels with the critic on an MD-GAN swap)."""
CRITIC_STATE = (CRITIC, CRITIC_BUFFER, CRITIC_OPT)
"""A critic with its optimizer: what a client of a server-held generator keeps, and what moves
between clients when MD-GAN swaps critics."""
FAKES = "fakes."
"""Prefix of generated points a server-held generator sends (never real data)."""
FAKE_CRITIC = FAKES + "critic"
"""[n_critic, B, d]: the batches the client's critic steps train against."""
FAKE_FEEDBACK = FAKES + "feedback"
"""[B, d]: the batch the client answers on."""
FAKE_SCORE = FAKES + "score"
"""[n_held, d]: points the client scores on its held-out split (for the weightings)."""
ANSWERS_PREFIX = "answer."
FEEDBACK = ANSWERS_PREFIX + "feedback"
"""[B, d]: MD-GAN's e_k = ∂L_G,k/∂x (a batch mean: it carries the 1/B)."""
LOGITS = ANSWERS_PREFIX + "logits"
"""[B]: UA-GAN's logits l_k(x)."""
LOGIT_GRADS = ANSWERS_PREFIX + "logit_grads"
"""[B, d]: UA-GAN's ∇ₓ l_k(x), one row per sample."""
FAULT_PADDING = "fault.padding"
"""The extra array an oversized (simulated faulty) reply carries: never an expected key."""

ANSWER_ARRAYS: dict[str, dict[str, tuple[str, ...]]] = {
    ANSWER_FEEDBACK: {FEEDBACK: ("B", "d")},
    ANSWER_LOGITS: {LOGITS: ("B",), LOGIT_GRADS: ("B", "d")},
}
"""Every answer kind (`ANSWERS`): the arrays of its step reply and their shapes on a feedback
batch of B points of d features — one table, so a new kind is one entry here and one in
`clients.answers.ANSWER_KINDS` (an unknown kind is a KeyError, never another kind's branch)."""


def answer_keys(answer: str) -> tuple[str, ...]:
    """The arrays of a step reply that answer it (MD-GAN: feedback; UA-GAN: logits, grads)."""
    return tuple(ANSWER_ARRAYS[answer])


def answer_shapes(answer: str, batch: int, dim: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the answer arrays on a feedback batch of `batch` points of `dim` features."""
    size = {"B": batch, "d": dim}
    return {k: tuple(size[a] for a in axes) for k, axes in ANSWER_ARRAYS[answer].items()}


FEDERATED: dict[str, tuple[str, ...]] = {
    "both": (GENERATOR, *CRITIC_PREFIXES),
    "generator": (GENERATOR,),
    "critic": CRITIC_PREFIXES,
}
"""Array prefixes that travel for each `federation.federate`; the rest stays on the client."""

V = TypeVar("V")


def select(arrays: Mapping[str, V], prefixes: tuple[str, ...] | str) -> dict[str, V]:
    """The entries of `arrays` (a dict or an ArrayRecord) whose key starts with `prefixes`,
    values untouched (a record's arrays stay undecoded)."""
    return {k: arrays[k] for k in arrays if k.startswith(prefixes)}


def split_arrays(arrays: Mapping[str, V], federate: str) -> tuple[dict[str, V], dict[str, V]]:
    """(travelling, private) parts of a state's arrays for `federate`."""
    keep = FEDERATED[federate]
    out: dict[str, V] = {}
    private: dict[str, V] = {}
    for k, v in arrays.items():
        (out if k.startswith(keep) else private)[k] = v
    return out, private


def generator_travels(federate: str) -> bool:
    """Whether the generator is federated (else each client keeps a private one)."""
    return GENERATOR in FEDERATED[federate]


def as_ema(generator: Mapping[str, V]) -> dict[str, V]:
    """`generator.*` arrays under the names a GAN state gives its EMA copy (`generator_ema.*`)."""
    return {GENERATOR_EMA + k.removeprefix(GENERATOR): v for k, v in generator.items()}


# --- typed messages ----------------------------------------------------------------------------

MetricValue = int | float | list[int] | list[float]
ConfigValue = int | float | str | bool
Metrics = Mapping[str, object]
"""A decoded MetricRecord (values as Flower returns them)."""


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _ints(value: object) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of counts, got {value!r}")
    return [int(v) for v in value]


@dataclass
class LocalEvaluation:
    """A generator against one client's held-out points (as many generated points).

    Per-group lists follow `FederatedData.groups`: hits and point counts, pooled exactly by
    summing over clients; the `other_*` lists the same over `FederatedData.others`.
    """

    recall: float
    coverage: float
    expected_coverage: float
    n_real: int
    recall_hits: list[int]
    coverage_hits: list[int]
    group_n: list[int]
    other_recall_hits: list[int] = field(default_factory=list)
    other_coverage_hits: list[int] = field(default_factory=list)
    other_group_n: list[int] = field(default_factory=list)
    measured: bool = True
    """False for a round whose local evaluation was not due (`simulator.schedule.scores_due`):
    the reply then carries none of its keys."""

    @classmethod
    def skipped(cls) -> LocalEvaluation:
        """A local evaluation a round did not pay for (no `local.*` keys in its reply)."""
        nan = float("nan")
        return cls(nan, nan, nan, 0, [], [], [], measured=False)

    def scalars(self) -> dict[str, float]:
        if not self.measured:
            return {}
        return {
            LOCAL_RECALL: self.recall,
            LOCAL_COVERAGE: self.coverage,
            LOCAL_EXPECTED_COVERAGE: self.expected_coverage,
        }

    def counts(self) -> dict[str, list[int]]:
        if not self.measured:
            return {}
        out = {
            RECALL_HITS: self.recall_hits,
            COVERAGE_HITS: self.coverage_hits,
            GROUP_N: self.group_n,
        }
        if self.other_group_n:
            out[OTHER_RECALL_HITS] = self.other_recall_hits
            out[OTHER_COVERAGE_HITS] = self.other_coverage_hits
            out[OTHER_GROUP_N] = self.other_group_n
        return out

    @property
    def quality_loss(self) -> float:
        """max(expected − coverage, 0): the coverage shortfall below what two samples of the
        same distribution reach; 0 when covered fully or not measured (NaN expected)."""
        if not math.isfinite(self.expected_coverage):
            return 0.0
        cov = self.coverage if math.isfinite(self.coverage) else 0.0
        return max(self.expected_coverage - cov, 0.0)

    @classmethod
    def decode(cls, m: Metrics) -> LocalEvaluation:
        """From a reply's metrics (`n_real`: the summed group counts); `skipped` when the
        reply carries none (a round that did not pay for it)."""
        if GROUP_N not in m:
            return cls.skipped()
        group_n = _ints(m[GROUP_N])
        return cls(
            _num(m[LOCAL_RECALL]),
            _num(m[LOCAL_COVERAGE]),
            _num(m[LOCAL_EXPECTED_COVERAGE]),
            sum(group_n),
            _ints(m[RECALL_HITS]),
            _ints(m[COVERAGE_HITS]),
            group_n,
            other_recall_hits=_ints(m.get(OTHER_RECALL_HITS, [])),
            other_coverage_hits=_ints(m.get(OTHER_COVERAGE_HITS, [])),
            other_group_n=_ints(m.get(OTHER_GROUP_N, [])),
        )


@dataclass
class ClientCoverage:
    """The global evaluation's samples against one client's held-out points: which are covered.

    Each point's k-NN radius comes from the pooled held-out set and the samples are the ones
    the global evaluation scores (same noise stream), so a client's score of a group means
    what the global table's coverage means — never recall from its own few points, whose
    large balls let stray samples "reach" a forgotten group. Lists as in `LocalEvaluation`:
    per group of `FederatedData.groups` (then `others`, concatenated).
    """

    coverage: float
    n_real: int
    coverage_hits: list[int]
    group_n: list[int]
    other_coverage_hits: list[int] = field(default_factory=list)
    other_group_n: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, MetricValue]:
        out: dict[str, MetricValue] = {
            LOCAL_COVERAGE: self.coverage,
            COVERAGE_HITS: self.coverage_hits,
            GROUP_N: self.group_n,
        }
        if self.other_group_n:
            out[OTHER_COVERAGE_HITS] = self.other_coverage_hits
            out[OTHER_GROUP_N] = self.other_group_n
        return out

    @classmethod
    def decode(cls, m: Metrics) -> ClientCoverage:
        group_n = _ints(m[GROUP_N])
        return cls(
            _num(m[LOCAL_COVERAGE]),
            sum(group_n),
            _ints(m[COVERAGE_HITS]),
            group_n,
            _ints(m.get(OTHER_COVERAGE_HITS, [])),
            _ints(m.get(OTHER_GROUP_N, [])),
        )


@dataclass(frozen=True)
class TrainInstruction:
    """What a train message asks: local steps for round `round` (FedProx: with μ); with
    `critic_only`, critic steps only against the received generator (`CRITIC_ONLY`)."""

    round: int
    proximal_mu: float | None = None
    critic_only: bool = False

    def config(self) -> dict[str, ConfigValue]:
        out: dict[str, ConfigValue] = {SERVER_ROUND: self.round}
        if self.proximal_mu is not None:
            out[PROXIMAL_MU] = self.proximal_mu
        if self.critic_only:  # written only when set: a fedavg instruction is unchanged
            out[CRITIC_ONLY] = 1
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> TrainInstruction:
        mu = config.get(PROXIMAL_MU)
        return cls(
            int(_num(config[SERVER_ROUND])),
            _num(mu) if mu is not None else None,
            bool(_num(config.get(CRITIC_ONLY, 0))),
        )


@dataclass(frozen=True)
class EvaluateInstruction:
    """What an evaluate message asks: score the sent generator on the client's held-out split."""

    round: int

    def config(self) -> dict[str, ConfigValue]:
        return {SERVER_ROUND: self.round}

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> EvaluateInstruction:
        return cls(int(_num(config[SERVER_ROUND])))


@dataclass(frozen=True)
class Query:
    """A query's `ask` (one of `QUERIES`)."""

    ask: str = ASK_PARTITION

    def __post_init__(self) -> None:
        if self.ask not in QUERIES:
            raise ValueError(f"unknown query ask={self.ask!r}; allowed: {', '.join(QUERIES)}")

    def config(self) -> dict[str, ConfigValue]:
        return {ASK: self.ask}

    @classmethod
    def from_config(cls, config: Mapping[str, object] | None) -> Query:
        ask = config.get(ASK, ASK_PARTITION) if config is not None else ASK_PARTITION
        return cls(str(ask))


@dataclass(frozen=True)
class TrainReply:
    """A client's statistics after local training (its arrays travel beside them).

    `train`: means over the local steps, keys without the `train.` prefix (losses, gradient
    norms, `lipschitz.*`); `received`: the generator it received, on its held-out split;
    bytes of the received and the sent arrays; `seconds`: wall time (None: not measured).
    """

    partition_id: int
    num_examples: int
    train: dict[str, float]
    received: LocalEvaluation
    bytes_received: float
    bytes_sent: float
    seconds: float | None = None

    @property
    def train_loss(self) -> float:
        """1 − local coverage + 10⁻³: positive, for q-FedAvg (the GAN loss can be negative)."""
        cov = self.received.coverage if math.isfinite(self.received.coverage) else 0.0
        return 1.0 - cov + 1e-3

    @property
    def quality_loss(self) -> float:
        """max(expected − local coverage, 0): 0 when the generator covers the client fully."""
        return self.received.quality_loss

    def metrics(self) -> dict[str, MetricValue]:
        """The reply's MetricRecord: every reply carries the same keys (Flower's strategies
        refuse replies whose keys differ), an undefined value as NaN."""
        out: dict[str, MetricValue] = {TRAIN + k: v for k, v in self.train.items()}
        out[NUM_EXAMPLES] = float(self.num_examples)
        out[PARTITION_ID] = float(self.partition_id)
        out.update(self.received.scalars())
        if self.received.measured:  # both read the local evaluation
            out[TRAIN_LOSS] = self.train_loss
            out[QUALITY_LOSS] = self.quality_loss
        out[BYTES_RECEIVED] = self.bytes_received
        out[BYTES_SENT] = self.bytes_sent
        out.update(self.received.counts())
        if self.seconds is not None:
            out[TIME_CLIENT_TRAIN] = self.seconds
        return out

    @classmethod
    def from_metrics(cls, m: Metrics) -> TrainReply:
        t = m.get(TIME_CLIENT_TRAIN)
        return cls(
            partition_id=int(_num(m[PARTITION_ID])),
            num_examples=int(_num(m[NUM_EXAMPLES])),
            train={k.removeprefix(TRAIN): _num(v) for k, v in m.items() if k.startswith(TRAIN)},
            received=LocalEvaluation.decode(m),
            bytes_received=_num(m[BYTES_RECEIVED]),
            bytes_sent=_num(m[BYTES_SENT]),
            seconds=_num(t) if t is not None else None,
        )


@dataclass(frozen=True)
class EvaluateReply:
    """A client's coverage of the generator it was sent, on its held-out split."""

    partition_id: int
    evaluation: ClientCoverage

    def metrics(self) -> dict[str, MetricValue]:
        return {
            PARTITION_ID: float(self.partition_id),
            NUM_EXAMPLES: float(self.evaluation.n_real),
            **self.evaluation.metrics(),
        }

    @classmethod
    def from_metrics(cls, m: Metrics) -> EvaluateReply:
        ev = ClientCoverage.decode(m)
        ev.n_real = int(_num(m[NUM_EXAMPLES]))
        return cls(int(_num(m[PARTITION_ID])), ev)


@dataclass(frozen=True)
class QueryReply:
    """A query's answer: the node's partition id; for `ask: private`, whether it has any."""

    partition_id: int
    has_private: bool | None = None

    def metrics(self) -> dict[str, MetricValue]:
        out: dict[str, MetricValue] = {PARTITION_ID: self.partition_id}
        if self.has_private is not None:
            out[HAS_PRIVATE] = int(self.has_private)
        return out

    @classmethod
    def from_metrics(cls, m: Metrics) -> QueryReply:
        has = m.get(HAS_PRIVATE)
        return cls(int(_num(m[PARTITION_ID])), bool(has) if has is not None else None)


@dataclass(frozen=True)
class StepInstruction:
    """One generator step of a server-held generator: round `round`, the run's generator step
    `step` (0-based), what to `answer` (`ANSWERS`), and whether to send the critic (a swap)."""

    round: int
    step: int
    answer: str
    send_critic: bool = False

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"unknown answer {self.answer!r}; allowed: {', '.join(ANSWERS)}")

    def config(self) -> dict[str, ConfigValue]:
        return {
            SERVER_ROUND: self.round,
            GEN_STEP: self.step,
            ANSWER: self.answer,
            SEND_CRITIC: int(self.send_critic),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> StepInstruction | None:
        """The step a train config asks for; None for a plain (fedavg) train instruction."""
        if GEN_STEP not in config:
            return None
        return cls(
            int(_num(config[SERVER_ROUND])),
            int(_num(config[GEN_STEP])),
            str(config[ANSWER]),
            bool(_num(config.get(SEND_CRITIC, 0))),
        )


@dataclass(frozen=True)
class StepReply:
    """A client's statistics after one step of a server-held generator (its answer travels
    beside them). `train`: means over its critic steps (keys without `train.`) and the answer's
    own (MD-GAN: its generator loss); `score`: the sent `fakes.score` on its held-out split
    (None: none were sent); bytes of the received and the sent arrays."""

    partition_id: int
    num_examples: int
    train: dict[str, float]
    bytes_received: float
    bytes_sent: float
    score: LocalEvaluation | None = None
    seconds: float | None = None

    def metrics(self) -> dict[str, MetricValue]:
        out: dict[str, MetricValue] = {TRAIN + k: v for k, v in self.train.items()}
        out[NUM_EXAMPLES] = float(self.num_examples)
        out[PARTITION_ID] = float(self.partition_id)
        out[BYTES_RECEIVED] = self.bytes_received
        out[BYTES_SENT] = self.bytes_sent
        if self.score is not None:
            out.update(self.score.scalars())
            out[QUALITY_LOSS] = self.score.quality_loss
            out.update(self.score.counts())
        if self.seconds is not None:
            out[TIME_CLIENT_STEP] = self.seconds
        return out

    @classmethod
    def from_metrics(cls, m: Metrics) -> StepReply:
        t = m.get(TIME_CLIENT_STEP)
        return cls(
            partition_id=int(_num(m[PARTITION_ID])),
            num_examples=int(_num(m[NUM_EXAMPLES])),
            train={k.removeprefix(TRAIN): _num(v) for k, v in m.items() if k.startswith(TRAIN)},
            bytes_received=_num(m[BYTES_RECEIVED]),
            bytes_sent=_num(m[BYTES_SENT]),
            score=LocalEvaluation.decode(m) if GROUP_N in m else None,
            seconds=_num(t) if t is not None else None,
        )


TRAIN_REPLY_KEYS = (NUM_EXAMPLES, PARTITION_ID)
"""Metric keys the gate requires in a train reply."""
EVALUATE_REPLY_KEYS = (PARTITION_ID, COVERAGE_HITS, GROUP_N)
"""Metric keys the gate requires in an evaluate reply."""
STEP_REPLY_KEYS = (NUM_EXAMPLES, PARTITION_ID, BYTES_RECEIVED, BYTES_SENT)
"""Metric keys the gate requires in a step reply."""
SCORE_KEYS = (LOCAL_COVERAGE, LOCAL_RECALL, RECALL_HITS, COVERAGE_HITS, GROUP_N)
"""Metric keys a step reply that scored `fakes.score` must hold as well."""


RELEASED_KEYS = (PARTITION_ID, BYTES_RECEIVED, BYTES_SENT, TIME_CLIENT_TRAIN, TIME_CLIENT_STEP)
"""Under `privacy:`, the only metrics a reply carries beside its privatized arrays: who sent
it, the size of what travelled (fixed by the shapes, not the data) and wall times. Everything
computed on the client's data — losses, D(x), Lipschitz estimates, local scores, its number of
training points — is withheld (`released`), kept in the run folder as the simulator's
instrumentation (`clients.instrumentation`), never read by the server."""


def released(m: Mapping[str, MetricValue]) -> dict[str, MetricValue]:
    """The part of a reply's metrics that may leave a client under privacy (`RELEASED_KEYS`),
    and `num-examples` = 1 for every client: not its size (withheld), the value that makes a
    stock strategy's weighted mean the uniform mean DP needs."""
    return {k: v for k, v in m.items() if k in RELEASED_KEYS} | {NUM_EXAMPLES: 1.0}


def withheld(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The metric keys a gate may require of a reply under privacy (`released`'s)."""
    return tuple(k for k in keys if k in RELEASED_KEYS or k == NUM_EXAMPLES)


def table_metrics(m: Metrics) -> dict[str, float]:
    """A reply's scalar metrics as they go into the metrics table: not its partition id (the
    row's `client`), not wall times, not per-group lists."""
    return {
        k: float(v)
        for k, v in m.items()
        if isinstance(v, int | float) and k != PARTITION_ID and not k.startswith(TIME)
    }


def wall_times(m: Metrics) -> dict[str, float]:
    """A reply's wall times by phase (the `time.` keys without their prefix)."""
    return {
        k.removeprefix(TIME): float(v)
        for k, v in m.items()
        if k.startswith(TIME) and isinstance(v, int | float)
    }
