"""Fairness-aware aggregation: strategies that weight clients by how well the generator serves them.

Every client's train reply carries statistics of the generator it *received* (the current global
one) on its own held-out split: `local.coverage`, `local.quality_loss` (coverage shortfall below
what two same-distribution samples reach) and per-group counts `local.recall_hits` /
`local.group_n`. The strategies here turn those into aggregation weights:

- `CoverageWeightedFedAvg` (`coverage_weighted`): n_k · (1 − coverage_k + ε)^q.
- `QualityQFedAvg` (`quality_qfedavg`): q-FFL's q-FedAvg update driven by the quality loss.
- `AgnosticFedAvg` (`agnostic`): AFL's mixture weights λ, moved by exponentiated gradient.
- `GroupAwareFedAvg` (`group_aware`): n_k · (1 + β · Σ_g share_kg · (1 − recall_g)).
- `GroupDROFedAvg` (`group_dro`): Σ_g q_g · n_kg / N_g, q moved by exponentiated gradient on
  each group's pooled coverage shortfall (group DRO).

The weighted strategies compute one weight per reply, put it into a copy of the reply's
MetricRecord under `WEIGHT_KEY` and average with Flower's own `aggregate_arrayrecords`, so the
arithmetic is exactly FedAvg's with other weights. Train metrics are still averaged by
`num-examples`, so the reported metrics mean the same under every strategy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from logging import INFO
from typing import Any

import numpy as np
from fedgan.simulator.messages import (
    GROUP_N,
    LOCAL_COVERAGE,
    PARTITION_ID,
    QUALITY_LOSS,
    hits_key,
    local_key,
)
from fedgan.simulator.weighting import (
    GROUP_DRO_FLOOR,
    GROUP_DRO_STEP_SIZE,
    agnostic_weights,
    check,
    check_agnostic,
    check_coverage,
    check_group_aware,
    check_group_dro,
    coverage_weights,
    finite,
    group_aware_weights,
    group_deficits,
    group_dro_weights,
)
from fedgan.wire.flwr_internals import (
    AggregationError,
    aggregate_arrayrecords,
    check_and_log_replies,
    copy_message,
    log,
)
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, QFedAvg

WEIGHT_KEY = "fair.weight"
"""MetricRecord key the weighted strategies write each reply's aggregation weight under."""

QUALITY_LOSS_KEY = "fair.quality_loss"
"""MetricRecord key `QualityQFedAvg` writes the floored quality loss under for q-FedAvg."""


def _metrics(msg: Message) -> MetricRecord:
    """The reply's one MetricRecord (Flower's consistency check guarantees exactly one)."""
    return next(iter(msg.content.metric_records.values()))


def _scalar(msg: Message, key: str) -> float:
    """A scalar metric of a reply, NaN when absent or not a number."""
    value = _metrics(msg).get(key)
    return float(value) if isinstance(value, int | float) else float("nan")


def _counts(msg: Message, key: str) -> np.ndarray:
    """A per-group count list of a reply, as floats."""
    value = _metrics(msg).get(key)
    if not isinstance(value, list):
        raise AggregationError(f"reply has no per-group list {key!r} in its MetricRecord")
    return np.asarray(value, dtype=np.float64)


def _partition_id(msg: Message) -> int:
    pid = _scalar(msg, PARTITION_ID)
    if not math.isfinite(pid):
        raise AggregationError(f"reply has no {PARTITION_ID!r} in its MetricRecord")
    return int(pid)


def _with_metric(msg: Message, key: str, value: float) -> Message:
    """A copy of `msg` whose MetricRecord also holds `key: value`.

    Records are new but the Arrays in them are shared: `QFedAvg` empties the ArrayRecords it
    reads (`keep_input=False`), which must not empty the caller's replies, while copying the
    array data itself would double the round's memory for nothing.
    """
    content = RecordDict()
    for name, record in msg.content.items():
        if isinstance(record, MetricRecord):
            record = MetricRecord({**dict(record), key: value})
        elif isinstance(record, ArrayRecord):
            record = ArrayRecord(array_dict=dict(record))
        content[name] = record
    return copy_message(msg, content)


class _ReweightedFedAvg(FedAvg):
    """FedAvg whose aggregation weights come from `client_weights` instead of `num-examples`.

    Subclasses implement `client_weights`; the mean itself is Flower's `aggregate_arrayrecords`
    over replies whose MetricRecord holds the weight under `WEIGHT_KEY`. The last round's
    normalized weights, by partition id, are kept in `last_weights` for inspection.
    """

    def __init__(
        self,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            **kwargs,
        )
        self.last_weights: dict[int, float] = {}

    def client_weights(self, server_round: int, replies: Sequence[Message]) -> np.ndarray:
        """One non-negative aggregation weight per reply (need not sum to one)."""
        raise NotImplementedError

    def _sizes(self, replies: Sequence[Message]) -> np.ndarray:
        """Each reply's `weighted_by_key` (num-examples): FedAvg's weight."""
        return np.array([_scalar(m, self.weighted_by_key) for m in replies], dtype=np.float64)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Weighted mean of the replies' arrays with `client_weights`; metrics by num-examples."""
        valid = check_and_log_replies(self, replies)
        if not valid:
            return None, None
        weights = np.asarray(self.client_weights(server_round, valid), dtype=np.float64)
        if weights.shape != (len(valid),) or not np.all(np.isfinite(weights)):
            raise AggregationError(f"{type(self).__name__}: invalid client weights {weights}")
        if np.any(weights < 0) or weights.sum() <= 0:
            raise AggregationError(f"{type(self).__name__}: weights must be ≥ 0, not all 0")
        self.last_weights = {
            _partition_id(m): float(w / weights.sum()) for m, w in zip(valid, weights, strict=True)
        }
        log(INFO, "%s weights by partition id: %s", type(self).__name__, self.last_weights)
        weighted = [
            _with_metric(m, WEIGHT_KEY, float(w)).content
            for m, w in zip(valid, weights, strict=True)
        ]
        arrays = aggregate_arrayrecords(weighted, WEIGHT_KEY)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return arrays, metrics


class CoverageWeightedFedAvg(_ReweightedFedAvg):
    """FedAvg that up-weights clients whose data the received generator covers poorly.

    Optimizes a coverage-tilted FedAvg objective: client k's update gets weight

        w_k ∝ n_k · (1 − c_k + ε)^q,

    where n_k is `num-examples` and c_k ∈ [0, 1] the client's `local.coverage` (Naeem et al.
    2020, "Reliable Fidelity and Diversity Metrics for Generative Models") of the generator it
    received. q tilts toward poorly covered clients the way q-FFL tilts toward high-loss ones
    (Li et al. 2020, "Fair Resource Allocation in Federated Learning", ICLR); q = 0 is FedAvg
    (McMahan et al. 2017). ε keeps a fully covered client's weight positive.

    A client whose coverage is NaN (too few held-out points to measure it) is given the mean
    coverage of the other replies, so it counts like an average client rather than a perfectly
    or a totally uncovered one; when no reply has a coverage, all weights are n_k (FedAvg).

    Parameters
    ----------
    q : float (default: 1.0)
        Tilt exponent, ≥ 0. Larger values favour poorly covered clients more.
    eps : float (default: 0.05)
        Offset added to 1 − coverage, > 0.
    **kwargs
        Passed on to `FedAvg`.
    """

    def __init__(
        self,
        q: float = 1.0,
        eps: float = 0.05,
        **kwargs: Any,
    ) -> None:
        check_coverage(q, eps)
        super().__init__(
            **kwargs,
        )
        self.q = float(q)
        self.eps = float(eps)

    def client_weights(self, server_round: int, replies: Sequence[Message]) -> np.ndarray:
        """n_k · (1 − c_k + ε)^q, NaN coverage replaced by the others' mean."""
        cov = np.array([_scalar(m, LOCAL_COVERAGE) for m in replies])
        return coverage_weights(self._sizes(replies), cov, self.q, self.eps)


class QualityQFedAvg(QFedAvg):
    """q-FedAvg (q-FFL) on the generator's quality loss instead of the GAN loss.

    Optimizes q-FFL's objective (Li et al. 2020, "Fair Resource Allocation in Federated
    Learning", ICLR): min_w Σ_k p_k F_k(w)^{q+1} / (q+1), with F_k = `local.quality_loss` + floor,
    the received generator's coverage shortfall on client k's held-out data. A GAN's losses are
    not a measure of how well a client is served (they are a two-player game's values, often
    negative); the quality loss is positive and 0 when the client is fully covered.

    Flower's `QFedAvg` does the update: with L = 1 / client_learning_rate,
    Δ_k = L (w − w_k), h_k = q F_k^{q−1} ‖Δ_k‖² + L F_k^q and w ← w − Σ_k F_k^q Δ_k / Σ_k h_k.
    The floor keeps F_k > 0, since F^{q−1} with q < 1 explodes at 0; note that a small F_k makes
    h_k large, so when every client is almost fully covered the step is short.

    Parameters
    ----------
    client_learning_rate : float
        Clients' local learning rate (> 0); estimates the Lipschitz constant L = 1 / lr.
    q : float (default: 0.1)
        Fairness exponent, ≥ 0; q = 0 gives a FedAvg-like step scaled by L.
    loss_floor : float (default: 1e-3)
        Added to every quality loss, > 0.
    **kwargs
        Passed on to `QFedAvg` (its `train_loss_key` is fixed to `QUALITY_LOSS_KEY`).
    """

    def __init__(
        self,
        client_learning_rate: float,
        q: float = 0.1,
        loss_floor: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        check(
            "client_learning_rate",
            client_learning_rate,
            finite(client_learning_rate) and client_learning_rate > 0,
            "a finite number > 0",
        )
        check("q", q, finite(q) and q >= 0, "a finite number ≥ 0")
        check(
            "loss_floor",
            loss_floor,
            finite(loss_floor) and loss_floor > 0,
            "a finite number > 0",
        )
        super().__init__(
            client_learning_rate=float(client_learning_rate),
            q=float(q),
            train_loss_key=QUALITY_LOSS_KEY,
            **kwargs,
        )
        self.loss_floor = float(loss_floor)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """q-FedAvg with F_k = local.quality_loss + loss_floor (NaN/absent loss counts as 0)."""
        floored = []
        for msg in replies:
            if msg.has_error():
                floored.append(msg)
                continue
            loss = _scalar(msg, QUALITY_LOSS)
            loss = max(loss, 0.0) if math.isfinite(loss) else 0.0
            floored.append(_with_metric(msg, QUALITY_LOSS_KEY, loss + self.loss_floor))
        return super().aggregate_train(server_round, floored)


class AgnosticFedAvg(_ReweightedFedAvg):
    """Agnostic federated averaging: a minimax mixture over clients, by exponentiated gradient.

    Optimizes AFL's objective (Mohri, Sivek & Suresh 2019, "Agnostic Federated Learning",
    ICML): min_w max_{λ ∈ Δ_N} Σ_k λ_k F_k(w), with F_k the received generator's
    `local.quality_loss` on client k, over all N clients (keyed by `partition-id`).

    Each round t, with S the replying clients and λ^t the current mixture:

    1. aggregation weights are λ_k^t / Σ_{j∈S} λ_j^t for k ∈ S (not n_k: AFL weighs clients,
       not examples);
    2. λ ascends by exponentiated gradient on the losses, F_k(w_t) being measured at the model
       that was sent: λ_k ← λ_k · exp(η F_k) for k ∈ S, then rescaled so S keeps its mass
       Σ_{j∈S} λ_j. Clients not sampled keep exactly their λ, so partial participation does not
       shrink the share of absent clients.

    Step 1 uses λ^t, not λ^{t+1}: AFL's stochastic algorithm updates w and λ simultaneously from
    the gradients at (w_t, λ_t); with η = 0 every round is a plain per-client mean.

    λ is part of the run's state (like FedAdam's moments): it lives on this object and is saved
    in the resume checkpoint. Because the strategy never learns N, it is kept *relative to
    uniform*:
    `relative_lambda[k] = N · λ_k`, starting at 1 and implicitly 1 for clients not seen yet
    (updates preserve Σ_k N λ_k = N). `mixture(n_clients)` gives λ itself.

    Parameters
    ----------
    step_size : float (default: 0.5)
        η, the mirror-ascent step on λ, ≥ 0.
    **kwargs
        Passed on to `FedAvg`.
    """

    def __init__(
        self,
        step_size: float = 0.5,
        **kwargs: Any,
    ) -> None:
        check_agnostic(step_size)
        super().__init__(
            **kwargs,
        )
        self.step_size = float(step_size)
        self.relative_lambda: dict[int, float] = {}

    def mixture(self, n_clients: int) -> np.ndarray:
        """λ over partition ids 0..n_clients−1 (sums to 1)."""
        if n_clients <= max(self.relative_lambda, default=-1):
            raise ValueError(
                f"n_clients={n_clients} but partition ids up to "
                f"{max(self.relative_lambda)} have been seen"
            )
        rel = np.array([self.relative_lambda.get(k, 1.0) for k in range(n_clients)])
        return rel / rel.sum()

    def client_weights(self, server_round: int, replies: Sequence[Message]) -> np.ndarray:
        """λ_k of the replying clients (before this round's update), then update λ."""
        pids = [_partition_id(m) for m in replies]
        loss = np.array([_scalar(m, QUALITY_LOSS) for m in replies])
        lam, new = agnostic_weights(self.relative_lambda, pids, loss, self.step_size)
        self.relative_lambda.update(new)
        return lam


class GroupAwareFedAvg(_ReweightedFedAvg):
    """FedAvg that up-weights clients whose data lies in groups the generator recalls poorly.

    A FairFed-like rule (Ezzeldin et al. 2023, "FairFed: Enabling Group Fairness in Federated
    Learning", AAAI): FairFed moves each client's weight by the gap between its local and the
    global fairness metric; here the global metric is per-group recall of the received generator,
    and a client's weight grows with how much of its data sits in poorly recalled groups.

    Derivation. Pool the replies' per-group counts of the generator they received:
    recall_g = Σ_k recall_hits_kg / Σ_k group_n_kg (exact pooling: the counts are of each
    client's held-out points). The deficit of group g is d_g = 1 − recall_g; with
    `worst_groups = m` only the m lowest-recall groups keep their deficit, the others get 0.
    Client k's data has group shares s_kg = group_n_kg / Σ_g group_n_kg, so its expected deficit
    is e_k = Σ_g s_kg d_g ∈ [0, 1], and

        w_k ∝ n_k · (1 + β · e_k).

    β = 0 is FedAvg; so is any β when every group has the same deficit (e_k is then equal for
    all), i.e. the rule only moves weight when groups are served unequally. Clients whose
    recall was not measured (`local.recall` NaN: too few held-out points) are left out of the
    pooled recall, since their zero hits are not misses; a client with no held-out points has
    e_k = 0. Groups no reply holds get recall 1 (no deficit; no client has a share in them).

    `metric: coverage` uses `local.coverage_hits` (and `local.coverage` for "measured") in
    place of recall: a freshly initialized generator typically recalls no real point at all,
    so every group's recall is 0, every deficit equal and the rule is FedAvg until the
    generator spreads out; per-group coverage separates groups from the first round.

    Parameters
    ----------
    beta : float (default: 1.0)
        Strength of the up-weighting, ≥ 0.
    worst_groups : int or None (default: None)
        Only the this many lowest-recall groups count; None: all groups.
    metric : {"recall", "coverage"} (default: "recall")
        Which per-group count of the received generator defines a group's deficit.
    **kwargs
        Passed on to `FedAvg`.
    """

    def __init__(
        self,
        beta: float = 1.0,
        worst_groups: int | None = None,
        metric: str = "recall",
        **kwargs: Any,
    ) -> None:
        check_group_aware(beta, worst_groups, metric)
        super().__init__(
            **kwargs,
        )
        self.beta = float(beta)
        self.worst_groups = worst_groups
        self.metric = metric
        self.last_group_recall: np.ndarray = np.array([])

    def group_deficits(self, replies: Sequence[Message]) -> tuple[np.ndarray, np.ndarray]:
        """(pooled per-group recall, per-group deficit d_g) of the received generator.

        "Recall" stands for the chosen `metric` (recall or coverage) throughout.
        """
        return group_deficits(*self._group_counts(replies), self.worst_groups)

    def _group_counts(
        self, replies: Sequence[Message]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(group_n, hits) [K, G] and whether each reply's score was measured [K]."""
        try:
            n = np.stack([_counts(m, GROUP_N) for m in replies])
            hits = np.stack([_counts(m, hits_key(self.metric)) for m in replies])
        except ValueError as exc:  # lists of different lengths
            raise AggregationError(f"per-group lists differ in length: {exc}") from exc
        measured = np.isfinite([_scalar(m, local_key(self.metric)) for m in replies])
        return n, hits, measured

    def client_weights(self, server_round: int, replies: Sequence[Message]) -> np.ndarray:
        """n_k · (1 + β Σ_g s_kg d_g)."""
        n, hits, measured = self._group_counts(replies)
        weights, self.last_group_recall = group_aware_weights(
            self._sizes(replies), n, hits, measured, self.beta, self.worst_groups
        )
        return weights


class GroupDROFedAvg(_ReweightedFedAvg):
    """FedAvg weighted by group DRO: a weight per group, spread over the clients that hold it.

    The signal is per group, not per client (a client's coverage averages its rare groups with
    its well-covered majority): pool the replies' per-group counts of the generator they
    received, c_g = Σ_k coverage_hits_kg / Σ_k group_n_kg; move log q_g by η (1 − c_g)
    (exponentiated gradient, Sagawa et al. 2020, "Distributionally Robust Neural Networks for
    Group Shifts", ICLR); mix in an even share, q̃ = (1 − floor)·q + floor/G; and give client k
    the weight Σ_g q̃_g · n_kg / N_g — each group's weight split over the clients holding it by
    their share of its points (`simulator.weighting.group_dro_weights`). With η = 0 and floor 1
    every group weighs the same: a group-balanced FedAvg. Clients whose coverage is not
    measured (NaN) still hold their groups but do not move q. log q is the run's state (saved
    in the resume checkpoint as this object's attribute).

    Parameters
    ----------
    step_size : float (default: `GROUP_DRO_STEP_SIZE`)
        η ≥ 0.
    floor : float (default: `GROUP_DRO_FLOOR`)
        The share of the weight spread evenly over the groups, in [0, 1].
    **kwargs
        Passed on to `FedAvg`.
    """

    def __init__(
        self,
        step_size: float = GROUP_DRO_STEP_SIZE,
        floor: float = GROUP_DRO_FLOOR,
        **kwargs: Any,
    ) -> None:
        check_group_dro(step_size, floor)
        super().__init__(
            **kwargs,
        )
        self.step_size = float(step_size)
        self.floor = float(floor)
        self.log_q: list[float] = []
        self.last_group_weights: np.ndarray = np.array([])

    def client_weights(self, server_round: int, replies: Sequence[Message]) -> np.ndarray:
        """Σ_g q̃_g n_kg / N_g, after this round's move of q."""
        try:
            n = np.stack([_counts(m, GROUP_N) for m in replies])
            hits = np.stack([_counts(m, hits_key("coverage")) for m in replies])
        except ValueError as exc:  # lists of different lengths
            raise AggregationError(f"per-group lists differ in length: {exc}") from exc
        if n.shape[1] == 0:  # no group labels anywhere: the base rule (FedAvg)
            return self._sizes(replies)
        measured = np.isfinite([_scalar(m, LOCAL_COVERAGE) for m in replies])
        w, lq, q, _ = group_dro_weights(
            np.asarray(self.log_q), n, hits, measured, self.step_size, self.floor
        )
        self.log_q = lq.tolist()
        self.last_group_weights = q
        return w
