"""Which rounds pay for what: the evaluation, and the clients' expensive statistics.

A federated round always trains and records its cheap statistics (losses, gradient norms,
D(x), bytes). The expensive ones are computed only at the rounds that read them: the server's
evaluation every `evaluation.every` rounds and at the last; the clients' Lipschitz estimates
and their local evaluation of the received generator (`local.*`) at the diagnostics rounds —
`diagnostics.every`, by default the evaluation rounds — and the local evaluation every round
for a strategy that reads it (the fairness rules, q-FedAvg's loss, any plug-in strategy, whose
needs are not known). Both sides read the same functions: a client knows the round it trains.
"""

from __future__ import annotations

from fedgan.simulator.scenario import Scenario

SCORE_READERS = (
    "coverage_weighted",
    "quality_qfedavg",
    "agnostic",
    "group_aware",
    "group_dro",
    "qfedavg",
)
"""Built-in strategies whose aggregation reads the replies' local scores every round."""


def evaluation_due(s: Scenario, round_: int) -> bool:
    """Whether the server evaluates after `round_` (every `evaluation.every`, and the last)."""
    assert s.federation is not None
    return round_ % s.evaluation.every == 0 or round_ == s.federation.rounds


def diagnostics_due(s: Scenario, round_: int) -> bool:
    """Whether clients compute their Lipschitz estimates in `round_` (`diagnostics.every`,
    default the evaluation rounds; the last round always)."""
    assert s.federation is not None
    every = s.diagnostics.every or s.evaluation.every
    return round_ % every == 0 or round_ == s.federation.rounds


def scores_due(s: Scenario, round_: int) -> bool:
    """Whether clients evaluate the received generator on their held-out points in `round_`:
    at the diagnostics rounds, and every round for a strategy that reads the scores."""
    return diagnostics_due(s, round_) or strategy_reads_scores(s)


def strategy_reads_scores(s: Scenario) -> bool:
    """A built-in rule that weighs clients by their local scores, or a plug-in (`module:Class`
    or `file.py:Class`), which may read any key of a reply."""
    names = [s.strategy.name] + ([s.strategy.critic.name] if s.strategy.critic else [])
    return any(n in SCORE_READERS or ":" in n for n in names)
