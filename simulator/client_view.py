"""A client's view of an evaluation: which of its held-out points the evaluation's samples
cover, with radii from the pooled held-out set — what a client answers to the evaluate message,
and, under privacy, what the simulator computes for it (`server/evaluation.py`)."""

from __future__ import annotations

import numpy as np
from fedgan.simulator.messages import ClientCoverage
from fedgan.simulator.metrics.forgetting import coverage_against
from fedgan.simulator.prepare import FederatedData, pooled_reference
from fedgan.simulator.scenario import Scenario


def client_coverage(
    s: Scenario, data: FederatedData, client: int, embedded_fake: np.ndarray
) -> ClientCoverage:
    """Generated points (`embedded_fake`, in the evaluation's space) against client `client`'s
    held-out points, each with its k-NN radius among the pooled held-out set
    (`metrics.forgetting.coverage_against`); counts per group. What a client answers to the
    evaluate message — and, under privacy, what the simulator computes for it (no client
    releases a statistic of its held-out data)."""
    idx = data.client_held[client]
    ref = pooled_reference(s)
    covered = coverage_against(
        ref.held, ref.embed(data.train.X[idx]), embedded_fake, s.evaluation.k
    )
    hits, other_hits = data.counts(idx, covered.astype(np.float64))
    group_n, other_n = data.counts(idx)
    return ClientCoverage(
        coverage=float(covered.mean()) if len(idx) else float("nan"),
        n_real=len(idx),
        coverage_hits=hits,
        group_n=group_n,
        other_coverage_hits=other_hits,
        other_group_n=other_n,
    )
