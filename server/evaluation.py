"""The evaluation step: the protocol's generator on the pooled held-out set (server side), then
on every client's own held-out split (an evaluate message to each node)."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from server.gate import check_replies
from server.run import Run
from simulator.evaluate import (
    Evaluation,
    evaluate_generator,
    generated,
    make_evaluator,
    record_evaluation,
)
from simulator.federation import FederatedData, initial_state, mixture_holdout
from simulator.messages import EVALUATE_REPLY_KEYS, EvaluateInstruction
from wire.messages import evaluate_content, read_evaluate_reply


def evaluate(run: Run, rnd: int) -> Evaluation | None:
    """Round `rnd`'s model to `checkpoints/round-<r>.npz`, its generator evaluated on the
    pooled held-out set and on each client's split; the global evaluation (None when there
    is no global generator or it emitted non-finite points)."""
    s, store = run.s, run.store
    store.save_checkpoint(rnd, run.protocol.snapshot())
    generator = run.protocol.generator()
    ev = None
    if generator:
        state = initial_state(s, run.gan).load_arrays(generator)
        ev = evaluate_generator(
            s, store, run.evaluator, run.gan, state, rnd, "global", "global_generator_diverged"
        )
        if ev is not None:
            evaluate_targets(run, rnd, generated(s, run.gan, state, rnd))
        store.flush()  # the global rows are on disk while the clients evaluate
    evaluate_clients(run, rnd, generator)
    return ev


def evaluate_targets(run: Run, rnd: int, fake: np.ndarray) -> None:
    """The evaluation's points against each mixture the protocol aims at (`Protocol.targets`:
    UA-GAN's π-mixture), as rows of its own scope, with the mixture's group weights
    (`target_mass`)."""
    data = run.data
    for scope, pi in run.protocol.targets().items():
        held, mass = mixture_holdout(data, pi, run.s.seed)
        evaluator = make_evaluator(run.s, held)
        record_evaluation(run.s, run.store, evaluator, fake, rnd, scope, f"{scope}_diverged")
        rows = [
            {**_row(rnd, scope, -1, "target_mass", m, held.n), "group_by": data.group_col}
            | {"group": g}
            for g, m in zip(data.groups, mass, strict=True)
        ]
        run.store.add_metrics(rows, flush=False)


def evaluate_clients(run: Run, rnd: int, generator: dict[str, np.ndarray]) -> None:
    """Every client scores `generator` (empty: its private one) on its held-out split; rows
    per client and per group, and the per-group numbers pooled exactly over all clients."""
    assert run.s.federation is not None
    content = evaluate_content(generator, EvaluateInstruction(rnd))
    msgs = [
        Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in run.node_pid
    ]
    replies = list(run.grid.send_and_receive(msgs, timeout=run.s.federation.timeout))
    gate = check_replies(replies, run.node_pid, None, EVALUATE_REPLY_KEYS)
    for pid, kind, detail in gate.dropped:
        run.store.event(kind, round=rnd, client=pid, detail=f"evaluation: {detail}")
    answered = {r.metadata.src_node_id for r in replies}
    for node in sorted(set(run.node_pid) - answered, key=run.node_pid.__getitem__):
        run.store.event("client_timeout", round=rnd, client=run.node_pid[node], detail="evaluation")
    data = run.data
    rows: list[dict[str, Any]] = []
    pooled = np.zeros((3, len(data.groups)))
    other_pooled = np.zeros((3, sum(len(o.groups) for o in data.others)))
    for pid, msg in gate.accepted:
        local = read_evaluate_reply(msg).evaluation
        for key, value in (
            ("recall", local.recall),
            ("coverage", local.coverage),
            ("expected_coverage", local.expected_coverage),
        ):
            rows.append(_row(rnd, "client", pid, f"eval.{key}", value, local.n_real))
        hits = np.array([local.recall_hits, local.coverage_hits, local.group_n], dtype=float)
        pooled += hits
        rows += _group_rows(rnd, "client", pid, data.group_col, data.groups, hits)
        other = [local.other_recall_hits, local.other_coverage_hits, local.other_group_n]
        other_hits = np.array(other, dtype=float).reshape(3, -1)
        other_pooled += other_hits
        rows += _other_rows(rnd, "client", pid, data, other_hits)
    # Per-group client recall pooled exactly over every client's points.
    rows += _group_rows(rnd, "clients", -1, data.group_col, data.groups, pooled)
    rows += _other_rows(rnd, "clients", -1, data, other_pooled)
    run.store.add_metrics(rows, flush=False)  # the loop flushes once the round's timings are in


def _group_rows(
    rnd: int, scope: str, client: int, col: str, groups: list[Any], hits: np.ndarray
) -> list[dict[str, Any]]:
    """eval.recall and eval.coverage of each group from hit counts [3, G] (recall hits,
    coverage hits, points); groups without points are left out."""
    out = []
    for g, group in enumerate(groups):
        if hits[2, g] > 0:
            for i, key in enumerate(("recall", "coverage")):
                row = _row(rnd, scope, client, f"eval.{key}", hits[i, g] / hits[2, g], hits[2, g])
                out.append({**row, "group_by": col, "group": group})
    return out


def _other_rows(
    rnd: int, scope: str, client: int, data: FederatedData, hits: np.ndarray
) -> list[dict[str, Any]]:
    """`_group_rows` of every other grouping (`data.others`) from their concatenated counts."""
    out, start = [], 0
    for o in data.others:
        end = start + len(o.groups)
        out += _group_rows(rnd, scope, client, o.name, o.groups, hits[:, start:end])
        start = end
    return out


def _row(rnd: int, scope: str, client: int, metric: str, value: float, n: float) -> dict[str, Any]:
    return {
        "round": rnd,
        "scope": scope,
        "client": client,
        "metric": metric,
        "value": value,
        "n": int(n),
    }
