"""The server's round loop: small steps that every protocol composes.

A round is `sample` (clients, faults; dropouts are never sent anything) → for each of the
protocol's exchanges, `exchange` (the protocol's instructions → `send` → `gate` → the
protocol's `combine`) → `record` (client statistics, drops, counts) → every k rounds
`evaluate` and `checkpoint` → progress. The protocol (`server.protocols`) says what travels
and how replies combine; these steps are the same for all.

Why not Flower's `Strategy.start`: it cannot start at a later round, evaluates every round,
offers no hook to check replies before aggregation, drops per-client replies and waits forever
for nodes that are not there. Here clients are sampled with the scenario seed over partition
ids, every reply passes one gate, replies are sorted by partition id and every wait is bounded.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fedgan.server.evaluation import evaluate
from fedgan.server.gate import check_replies
from fedgan.server.nodes import discover
from fedgan.server.privacy import Account
from fedgan.server.protocols import Reply, Round, Setup, build_protocol
from fedgan.server.protocols.base import SampledGrid
from fedgan.server.rejoin import rejoin
from fedgan.server.resume import Run, checkpoint, restore
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.cohorts import sample_clients
from fedgan.simulator.evaluate import make_evaluator, record_feature_space
from fedgan.simulator.faults import FaultDraw
from fedgan.simulator.faults import draw as draw_faults
from fedgan.simulator.messages import NUM_EXAMPLES, table_metrics, wall_times, withheld
from fedgan.simulator.prepare import FederatedData, federated_data, initial_state, make_gan
from fedgan.simulator.progress import Progress, ProgressHook
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.schedule import evaluation_due
from fedgan.simulator.store import RunStore
from fedgan.wire.codec import array_bytes, metrics_of
from flwr.app import Message
from flwr.serverapp import Grid

Dropped = tuple[int, str, str]
"""(partition id, event kind, detail) of a reply the round did without."""


def run_rounds(
    grid: Grid,
    s: Scenario,
    store: RunStore,
    resume: bool = False,
    progress: ProgressHook | None = None,
) -> None:
    """Drive `federation.rounds` rounds of the scenario's protocol on `grid`, writing `store`;
    `progress` hears of every finished round.

    Every evaluation round ends with a resume checkpoint; with `resume`, the run continues
    after the folder's latest one (from round 1 when there is none).
    """
    assert s.federation is not None
    run: Run | None = None
    rnd = 0
    try:
        run, first = start(grid, s, store, resume)
        for rnd in range(first, s.federation.rounds + 1):
            ev_summary = play_round(run, rnd)
            if progress is not None:
                progress(Progress(rnd, s.federation.rounds, ev_summary))
    except Exception as exc:
        # A plug-in's bug, a strategy's KeyError: say where in the run folder, then let it
        # propagate (the caller prints a short traceback and exits 1).
        store.record_failure(exc, rnd, run.phase if run is not None else "start")
        raise
    store.flush()  # the last round's timings (its metrics were written by its evaluation)
    store.event("run_finished", rounds=s.federation.rounds)


def start(grid: Grid, s: Scenario, store: RunStore, resume: bool) -> tuple[Run, int]:
    """Data, nodes and protocol of a run (taken up from its latest checkpoint with `resume`);
    the first round to play."""
    assert s.federation is not None
    f = s.federation
    data = federated_data(s)
    gan = make_gan(s, data)
    evaluator = make_evaluator(s, data.held, data.train)
    record_feature_space(store, evaluator.space)
    store.write_table("partition.csv", _partition_table(data))
    enc_bytes = int(data.train.info.get("encoding_bytes", 0) or 0)
    if enc_bytes and not resume:
        # A table's federated encoding fit (Fed-TGAN): the statistics the clients sent once,
        # before round 1 — traffic as real as the rounds'.
        row = {"round": 0, "scope": "global", "metric": "fed.bytes_encoding", "value": enc_bytes}
        store.add_metrics([row])
    ckpt = load_latest(store.path) if resume else None
    first = ckpt.round + 1 if ckpt is not None else 1
    if resume:
        # Rows of rounds after the checkpoint may have been written before the run stopped.
        redone = store.reopen(first - 1)
        store.event(
            "run_resumed",
            round=first - 1,
            engine=s.engine.name,
            rounds=f.rounds,
            events_redone=redone,  # events of rounds after the checkpoint, played again
        )
    else:
        store.event(
            "run_started",
            engine=s.engine.name,
            protocol=f.protocol,
            strategy=s.strategy.name,
            clients=data.n_clients,
            rounds=f.rounds,
        )
    node_pid = discover(grid, data.n_clients, f.timeout)
    missing = sorted(set(range(data.n_clients)) - set(node_pid.values()))
    if missing:
        store.event("clients_missing", clients=missing)
    setup = Setup(s, data, gan, initial_state(s, gan).arrays(), node_pid)
    run = Run(s, store, grid, data, gan, evaluator, node_pid, build_protocol(setup))
    run.account = Account.for_run(s)
    if run.account is not None and not resume:
        run.account.start(store)
    if ckpt is not None:
        restore(run, ckpt)
    return run, first


def play_round(run: Run, rnd: int) -> dict[str, float]:
    """One round: sample, the protocol's exchanges, record; evaluate and checkpoint when due.
    Returns the evaluation's headline numbers (empty when the round did not evaluate)."""
    s, store = run.s, run.store
    assert s.federation is not None
    t0 = time.perf_counter()
    run.phase = "rejoin"
    rejoin(run, rnd)
    run.phase = "sample"
    r, faults, dropped = sample(run, rnd)
    _events(run, rnd, dropped)
    outcome = RoundOutcome(dropped)
    for step in range(run.protocol.exchanges):
        exchange(run, r, step, faults, outcome)
    t_train = time.perf_counter() - t0
    run.phase = "record"
    record(run, rnd, faults, outcome)
    due = evaluation_due(s, rnd)
    run.phase = "evaluate"
    ev = evaluate(run, rnd) if due else None
    store.add_timings(
        outcome.times
        + [
            {"round": rnd, "phase": "train", "client": -1, "seconds": t_train},
            {
                "round": rnd,
                "phase": "evaluate",
                "client": -1,
                "seconds": time.perf_counter() - t0 - t_train,
            },
        ]
    )
    if due:
        store.flush()  # every row of rounds ≤ rnd is on disk before the checkpoint says so
        t1 = time.perf_counter()
        run.phase = "checkpoint"
        checkpoint(run, rnd)
        # Written with the next flush (a kill before it loses only this wall time).
        seconds = time.perf_counter() - t1
        store.add_timings([{"round": rnd, "phase": "checkpoint", "client": -1, "seconds": seconds}])
    return ev.summary if ev is not None else {}


def sample(run: Run, rnd: int) -> tuple[Round, dict[int, FaultDraw], list[Dropped]]:
    """The round's clients (those with a node), their faults and the dropouts among them:
    a dropped-out client is never sent the round, so the server learns nothing from it."""
    sampled = [p for p in sample_clients(run.s, rnd) if p in run.pid_node]
    faults = {p: draw_faults(run.s, rnd, p) for p in sampled}
    dropped = [(p, "client_dropped", "simulated dropout") for p in sampled if faults[p].dropout]
    sent = [p for p in sampled if not faults[p].dropout]
    node_of = {p: run.pid_node[p] for p in sent}
    grid = SampledGrid(run.grid, [node_of[p] for p in sent])
    return Round(rnd, sent, node_of, grid), faults, dropped


@dataclass
class RoundOutcome:
    """What a round's exchanges left: drops in order, accepted replies per exchange, wall
    times of the clients."""

    dropped: list[Dropped]
    accepted: list[list[Reply]] = field(default_factory=list)
    times: list[dict[str, Any]] = field(default_factory=list)
    bytes_down: int = 0
    """Array bytes of the round's instructions (every client's copy counted)."""
    bytes_up: int = 0
    """Array bytes of the replies that reached the server in time."""
    shares: dict[int, float] = field(default_factory=dict)
    """Each client's weight in the round's combinations, summed over them."""
    combined: int = 0


def exchange(
    run: Run, r: Round, step: int, faults: dict[int, FaultDraw], outcome: RoundOutcome
) -> None:
    """One exchange of the protocol: its instructions → send → gate → combine (or a skip)."""
    f = run.s.federation
    assert f is not None
    replies: list[Message] = []
    run.phase = "exchange"
    if r.clients:  # an empty view would make a stock strategy wait for nodes forever
        msgs = run.protocol.instructions(r, step)
        run.touched.update(r.clients)
        outcome.bytes_down += sum(array_bytes(m) for m in msgs)
        replies = send(run, r, msgs)
    on_time, dropped = _stragglers(run, r, replies, faults)
    outcome.bytes_up += sum(array_bytes(m) for m in on_time)
    expect = run.protocol.expect(r, step)
    # Under privacy a reply carries only its release (`simulator.messages.released`).
    keys = expect.metrics if run.s.privacy is None else withheld(expect.metrics)
    gate = check_replies(
        on_time,
        run.node_pid,
        expect.arrays,
        keys,
        reference=expect.reference,
        max_update_norm=f.max_update_norm,
        max_reply_bytes=f.max_reply_bytes,
    )
    dropped += gate.dropped
    _events(run, r.number, dropped)
    outcome.dropped += dropped
    accepted = [Reply(pid, msg) for pid, msg in gate.accepted]
    outcome.accepted.append(accepted)
    if len(accepted) < f.min_replies:
        where = {"step": step} if run.protocol.exchanges > 1 else {}
        run.store.event(
            "round_skipped",
            round=r.number,
            **where,
            replies=len(accepted),
            min_replies=f.min_replies,
        )
    else:
        run.phase = "combine"
        run.protocol.combine(r, step, accepted)
        outcome.combined += 1
        for pid, share in run.protocol.shares(r, step, accepted).items():
            outcome.shares[pid] = outcome.shares.get(pid, 0.0) + share


def send(run: Run, r: Round, messages: list[Message]) -> list[Message]:
    """Send the instructions and wait (at most `federation.timeout`) for the replies."""
    assert run.s.federation is not None
    return list(run.grid.send_and_receive(messages, timeout=run.s.federation.timeout))


def _stragglers(
    run: Run, r: Round, replies: list[Message], faults: dict[int, FaultDraw]
) -> tuple[list[Message], list[Dropped]]:
    """(replies in time, drops): clients that never answered time out; stragglers past the
    deadline are discarded unread, as a server that stopped waiting would (the virtual clock
    only advances, nobody sleeps)."""
    answered = {run.node_pid.get(m.metadata.src_node_id, -1) for m in replies}
    dropped: list[Dropped] = [(p, "client_timeout", "") for p in sorted(set(r.clients) - answered)]
    on_time = []
    for m in replies:
        pid = run.node_pid.get(m.metadata.src_node_id, -1)
        fault = faults.get(pid)
        if fault is not None and fault.late:
            late = f"virtual delay {fault.delay:.3f} s past the deadline"
            dropped.append((pid, "client_late", late))
        else:
            on_time.append(m)
    return on_time, dropped


def _events(run: Run, rnd: int, dropped: list[Dropped]) -> None:
    for pid, kind, detail in dropped:
        if kind == "client_timeout":  # kept as before: no detail
            run.store.event(kind, round=rnd, client=pid)
        else:
            run.store.event(kind, round=rnd, client=pid, detail=detail)


def record(run: Run, rnd: int, faults: dict[int, FaultDraw], outcome: RoundOutcome) -> None:
    """The round's rows: each accepted client's statistics (averaged over the exchanges it
    answered), the reply and drop counts, the virtual duration; wall times to the timings."""
    values: dict[tuple[int, str], list[float]] = {}
    for pid, rep in sorted(
        ((rep.partition_id, rep) for acc in outcome.accepted for rep in acc), key=lambda t: t[0]
    ):
        met = metrics_of(rep.message)
        assert met is not None  # the gate checked
        # Wall times stay out of the deterministic table.
        for phase, v in wall_times(met).items():
            outcome.times.append({"round": rnd, "phase": phase, "client": pid, "seconds": v})
        for k, v in table_metrics(met).items():
            if k == NUM_EXAMPLES and run.s.privacy is not None:
                continue  # 1 for every client under privacy (`released`), not its size
            values.setdefault((pid, k), []).append(v)
    rows: list[dict[str, Any]] = [
        {"round": rnd, "scope": "client", "client": pid, "metric": k, "value": sum(v) / len(v)}
        for (pid, k), v in values.items()
    ]
    # The client's weight in the round's combinations (a client absent from one counts 0 there).
    rows += [
        {"round": rnd, "scope": "client", "client": pid, "metric": "fed.weight", "value": w}
        for pid, w in sorted((p, v / outcome.combined) for p, v in outcome.shares.items())
    ]
    n_accepted = [len(acc) for acc in outcome.accepted] or [0]
    rows += [
        {"round": rnd, "scope": "global", "metric": "fed.replies", "value": _mean(n_accepted)},
        {"round": rnd, "scope": "global", "metric": "fed.dropped", "value": len(outcome.dropped)},
        {"round": rnd, "scope": "global", "metric": "fed.bytes_down", "value": outcome.bytes_down},
        {"round": rnd, "scope": "global", "metric": "fed.bytes_up", "value": outcome.bytes_up},
    ]
    rows += [
        {"round": rnd, "scope": "global", "metric": k, "value": v}
        for k, v in run.protocol.round_metrics().items()
    ]
    if run.account is not None:
        rows += run.account.rows(rnd)
    # Per-kind counts only for kinds that occurred: a fault-free run's table is unchanged.
    for kind, count in sorted(Counter(kind for _, kind, _ in outcome.dropped).items()):
        rows.append(
            {"round": rnd, "scope": "global", "metric": f"fed.dropped.{kind}", "value": count}
        )
    if run.s.faults is not None:
        # The round lasts as long as its slowest accepted reply, on the virtual clock.
        delays = [faults[p].delay for acc in outcome.accepted for p in _pids(acc) if p in faults]
        rows.append(
            {
                "round": rnd,
                "scope": "global",
                "metric": "fed.virtual_seconds",
                "value": max(delays, default=0.0),
            }
        )
    run.store.add_metrics(rows, flush=False)  # written with the next evaluation


def _pids(replies: list[Reply]) -> list[int]:
    return [rep.partition_id for rep in replies]


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def _partition_table(data: FederatedData) -> Any:
    t = data.partition.tidy()
    t.insert(1, "group_by", data.group_col)
    return t
