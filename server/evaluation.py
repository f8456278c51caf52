"""The evaluation step: the protocol's generator on the pooled held-out set (server side), then
on every client's own held-out split (an evaluate message to each node), read against the
global evaluation: which groups each client holds, how well they are covered, and the share
of its points in groups not forgotten."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fedgan.server.gate import check_replies
from fedgan.server.run import Run
from fedgan.simulator.client_view import client_coverage
from fedgan.simulator.evaluate import (
    Evaluation,
    evaluate_generator,
    generated,
    make_evaluator,
    record_evaluation,
)
from fedgan.simulator.messages import EVALUATE_REPLY_KEYS, ClientCoverage, EvaluateInstruction
from fedgan.simulator.metrics.registry import RULES
from fedgan.simulator.prepare import (
    FederatedData,
    initial_state,
    mixture_holdout,
    pooled_reference,
)
from fedgan.wire.codec import evaluate_content, read_evaluate_reply
from flwr.app import Message, MessageType


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
    evaluate_clients(run, rnd, generator, ev)
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
            {"round": rnd, **_row(scope, -1, "target_mass", m, held.n)}
            | {"group_by": data.group_col, "group": g}
            for g, m in zip(data.groups, mass, strict=True)
        ]
        run.store.add_metrics(rows, flush=False)


def evaluate_clients(
    run: Run, rnd: int, generator: dict[str, np.ndarray], ev: Evaluation | None = None
) -> None:
    """Every client scores `generator` (empty: its private one) on its held-out split: which
    of its points the evaluation's samples cover, radii from the pooled held-out set
    (`ClientCoverage`). Rows per client (`client_rows`): its coverage of each group it holds
    and, against the global evaluation `ev`, the share of its points in groups not forgotten;
    per grouping, the worst-served client (scope `clients`)."""
    assert run.s.federation is not None
    if run.s.privacy is not None:
        scores = simulated_scores(run, rnd, generator)
        rows = client_rows(run.data, scores, ev, run.s.evaluation.min_group_size)
        run.store.add_metrics([{"round": rnd, **r} for r in rows], flush=False)
        return
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
    scores = {pid: read_evaluate_reply(msg).evaluation for pid, msg in gate.accepted}
    rows = client_rows(run.data, scores, ev, run.s.evaluation.min_group_size)
    run.store.add_metrics([{"round": rnd, **r} for r in rows], flush=False)  # the loop flushes


def simulated_scores(
    run: Run, rnd: int, generator: dict[str, np.ndarray]
) -> dict[int, ClientCoverage]:
    """Under privacy no client releases a statistic of its held-out data, so the per-client
    view is the simulator's instrumentation: the global evaluation's samples against each
    client's held-out split, computed here from the simulation's data (what a client would
    have answered; README, 'Differential privacy'). Empty without a global generator."""
    if not generator:
        return {}
    state = initial_state(run.s, run.gan).load_arrays(generator)
    fake = generated(run.s, run.gan, state, rnd)
    if not np.isfinite(fake).all():
        return {}
    embedded = pooled_reference(run.s).embed(fake)
    return {
        pid: client_coverage(run.s, run.data, pid, embedded) for pid in sorted(run.pid_node)
    }


def client_rows(
    data: FederatedData,
    scores: Mapping[int, ClientCoverage],
    ev: Evaluation | None,
    min_group_size: int,
) -> list[dict[str, Any]]:
    """The per-client view of one evaluation, as metric rows (without their round).

    Per client (scope `client`): `eval.coverage` of all its held-out points (group_by ""),
    and per grouping, of each group it holds (training or held-out points) — from its own
    points when it has ≥ `min_group_size` of the group there (n = those points), else the
    global evaluation's coverage of the group on the pooled held-out set (n = the pooled
    points); `eval.served_share` (group ""): the share of its held-out points in groups the
    global evaluation did not forget (the registry's `served` rule). Per grouping (scope
    `clients`): `worst_client`, the value the client id (the registry's `worst_client` rule).
    Without a global evaluation (private generators) only own-split coverage is written.
    """
    served_rule = RULES.get("served")
    worst_rule = RULES.get("worst_client")
    rows: list[dict[str, Any]] = []
    pooled = _pooled_coverage(ev)
    served: dict[str, dict[int, float]] = {}
    for pid, score in sorted(scores.items()):
        rows.append(_row("client", pid, "eval.coverage", score.coverage, score.n_real))
        hits_all = [*score.coverage_hits, *score.other_coverage_hits]
        n_all = [*score.group_n, *score.other_group_n]
        train_first, train_rest = data.counts(data.client_train[pid])
        train_all = [*train_first, *train_rest]
        start = 0
        for name, groups in _groupings(data):
            end = start + len(groups)
            own_n = dict(zip(groups, n_all[start:end], strict=True))
            for i, g in enumerate(groups):
                n_own, n_train = n_all[start + i], train_all[start + i]
                if n_own >= min_group_size:
                    value, n = hits_all[start + i] / n_own, n_own
                elif (n_own > 0 or n_train > 0) and (name, str(g)) in pooled:
                    value, n = pooled[(name, str(g))]
                else:
                    continue
                rows.append(
                    {**_row("client", pid, "eval.coverage", value, n), "group_by": name, "group": g}
                )
            if ev is not None and name in ev.forgotten:
                share = served_rule(own_n, ev.forgotten[name])
                served.setdefault(name, {})[pid] = share
                row = _row("client", pid, "eval.served_share", share, score.n_real)
                rows.append({**row, "group_by": name})
            start = end
    for name, shares in served.items():
        worst = worst_rule(shares)
        if worst is not None:
            rows.append(
                {**_row("clients", -1, "worst_client", float(worst), len(shares)), "group_by": name}
            )
    return rows


def _groupings(data: FederatedData) -> list[tuple[str, list[Any]]]:
    """(name, groups) of the partition column, then of every other grouping, in the order
    of the clients' concatenated count lists."""
    return [(data.group_col, data.groups), *((o.name, o.groups) for o in data.others)]


def _pooled_coverage(ev: Evaluation | None) -> dict[tuple[str, str], tuple[float, int]]:
    """{(grouping, group): (coverage, held-out points)} of the global evaluation."""
    if ev is None:
        return {}
    return {
        (str(r["group_by"]), str(r["group"])): (float(r["value"]), int(r["n"]))
        for r in ev.rows
        if r["metric"] == "coverage" and r.get("group", "") != "" and r.get("group_by")
    }


def _row(scope: str, client: int, metric: str, value: float, n: float) -> dict[str, Any]:
    return {"scope": scope, "client": client, "metric": metric, "value": value, "n": int(n)}
