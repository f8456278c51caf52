"""The server's round loop over a Flower strategy's configure/aggregate methods.

Why not `Strategy.start`: it cannot start at a later round, evaluates every round, offers no
hook to check replies before aggregation, drops per-client replies and waits forever for nodes
that are not there. This loop samples clients itself (seeded, over partition ids), shows the
strategy only the sampled nodes, passes every reply through one gate, sorts replies by
partition id, bounds every wait, evaluates every k rounds and writes the run folder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from server.gate import check_replies
from server.resume import (
    collect_private,
    load_strategy_state,
    rebind_nodes,
    restore_private,
    strategy_state,
)
from server.strategies import build_strategy
from server.strategies.per_network import PerNetwork
from simulator.centralized import eval_rows, make_evaluator
from simulator.checkpoint import ResumeState, load_latest, rng_state, set_rng_state
from simulator.checkpoint import save as save_resume_state
from simulator.evaluate import Evaluation
from simulator.faults import draw as draw_faults
from simulator.federation import (
    FederatedData,
    ServerEMA,
    federated_data,
    initial_state,
    make_gan,
)
from simulator.messages import (
    EVALUATE_REPLY_KEYS,
    GENERATOR,
    TRAIN_REPLY_KEYS,
    EvaluateInstruction,
    Query,
    select,
    split_arrays,
    table_metrics,
    wall_times,
)
from simulator.scenario import Scenario
from simulator.seeding import numpy_rng, torch_generator
from simulator.store import RunStore
from wire.messages import (
    evaluate_content,
    metrics_of,
    query_content,
    read_evaluate_reply,
    read_query_reply,
)
from wire.records import from_record, to_record

RoundHook = Callable[[int, int, "Evaluation | None"], None]
ROUND_HOOKS: list[RoundHook] = []
"""Called after every round with (round, rounds, global evaluation or None): CLI progress."""


class SampledGrid(Grid):
    """A view of a Grid that lists only this round's sampled nodes, so a stock strategy's own
    sampling (`fraction_train=1.0`) selects exactly them; everything else is delegated."""

    def __init__(self, grid: Grid, node_ids: list[int]) -> None:
        self._grid = grid
        self._nodes = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    # Grid's abstract methods, delegated.
    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self._grid.create_message(*args, **kwargs)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


def discover(grid: Grid, n_clients: int, timeout: float) -> dict[int, int]:
    """node id → partition id, asked of every node (node ids are random under Flower)."""
    nodes = list(grid.get_node_ids())
    msgs = [
        Message(query_content(Query()), dst_node_id=n, message_type=MessageType.QUERY)
        for n in nodes
    ]
    out: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        answer = read_query_reply(reply)
        if answer is not None:
            out[reply.metadata.src_node_id] = answer.partition_id
    pids = sorted(out.values())
    if len(set(pids)) != len(pids) or any(p < 0 or p >= n_clients for p in pids):
        raise RuntimeError(
            f"nodes report partition ids {pids}; expected distinct ids in 0..{n_clients - 1}"
        )
    return out


def sample_clients(s: Scenario, round_: int) -> list[int]:
    """The partition ids trained in `round_` (seeded by scenario seed and round)."""
    assert s.federation is not None
    n = s.partition.n_clients
    k = s.federation.clients_per_round or n
    if k >= n:
        return list(range(n))
    return sorted(numpy_rng(s.seed, "sampling", round_).choice(n, size=k, replace=False).tolist())


def run_rounds(grid: Grid, s: Scenario, store: RunStore, resume: bool = False) -> None:
    """Drive `federation.rounds` rounds on `grid` and write everything to `store`.

    Every evaluation round ends with a resume checkpoint; with `resume`, the run continues
    after the folder's latest one (from round 1 when there is none).
    """
    assert s.federation is not None
    f = s.federation
    data = federated_data(s)
    gan = make_gan(s, data)
    state = initial_state(s, gan)
    arrays, _ = split_arrays(state.arrays(), f.federate)
    expected = {k: tuple(v.shape) for k, v in arrays.items()}
    record = to_record(arrays)
    ema = ServerEMA.for_scenario(s, data, _generator(arrays))
    strategy: Any = build_strategy(s.strategy.name, dict(s.strategy.params))
    if s.strategy.critic is not None:
        critic = build_strategy(s.strategy.critic.name, dict(s.strategy.critic.params))
        strategy = PerNetwork(strategy, critic)
    evaluator = make_evaluator(s, data.held)
    store.write_table("partition.csv", _partition_table(data))
    ckpt = load_latest(store.path) if resume else None
    start = ckpt.round + 1 if ckpt is not None else 1
    if resume:
        # Rows of rounds after the checkpoint may have been written before the run stopped.
        store.reopen(start - 1)
        store.event("run_resumed", round=start - 1, engine=s.engine.name, rounds=f.rounds)
    else:
        store.event(
            "run_started",
            engine=s.engine.name,
            strategy=s.strategy.name,
            clients=data.n_clients,
            rounds=f.rounds,
        )

    node_pid = discover(grid, data.n_clients, f.timeout)
    pid_node = {p: n for n, p in node_pid.items()}
    missing = sorted(set(range(data.n_clients)) - set(pid_node))
    if missing:
        store.event("clients_missing", clients=missing)
    # Private state of every client that has any, as of the last checkpoint (partition id →
    # arrays), and the clients sent a train message since (only they can have changed it).
    private: dict[int, dict[str, np.ndarray]] = {}
    touched: set[int] = set()
    if ckpt is not None:
        record = to_record(ckpt.arrays)
        load_strategy_state(strategy, ckpt.strategy)
        rebind_nodes(strategy, node_pid)
        private = dict(ckpt.clients)
        if ema is not None:
            ema.arrays = dict(ckpt.server)
        failed = restore_private(grid, pid_node, private, f.timeout)
        if failed:
            store.event("clients_not_restored", round=ckpt.round, clients=failed)
        set_rng_state(ckpt.rng)

    for rnd in range(start, f.rounds + 1):
        t0 = time.perf_counter()
        sampled = [p for p in sample_clients(s, rnd) if p in pid_node]
        faults = {p: draw_faults(s, rnd, p) for p in sampled}
        # Dropped-out clients are never sent the round: the server learns nothing from them.
        dropped: list[tuple[int, str, str]] = [
            (p, "client_dropped", "simulated dropout") for p in sampled if faults[p].dropout
        ]
        sent = [p for p in sampled if not faults[p].dropout]
        replies: list[Message] = []
        if sent:  # an empty view would make a stock strategy wait for nodes forever
            view = SampledGrid(grid, [pid_node[p] for p in sent])
            msgs = list(strategy.configure_train(rnd, record, ConfigRecord({}), view))
            touched.update(sent)
            replies = list(grid.send_and_receive(msgs, timeout=f.timeout))
        answered = {node_pid.get(r.metadata.src_node_id, -1) for r in replies}
        dropped += [(p, "client_timeout", "") for p in sorted(set(sent) - answered)]
        # Stragglers past the deadline are discarded unread, as a server that stopped waiting
        # would; the virtual clock only advances, nobody sleeps.
        on_time = []
        for r in replies:
            pid = node_pid.get(r.metadata.src_node_id, -1)
            fault = faults.get(pid)
            if fault is not None and fault.late:
                dropped.append(
                    (pid, "client_late", f"virtual delay {fault.delay:.3f} s past the deadline")
                )
            else:
                on_time.append(r)
        gate = check_replies(
            on_time,
            node_pid,
            expected,
            TRAIN_REPLY_KEYS,
            reference=from_record(record) if f.max_update_norm is not None else None,
            max_update_norm=f.max_update_norm,
            max_reply_bytes=f.max_reply_bytes,
        )
        dropped += gate.dropped
        for pid, kind, detail in dropped:
            if kind == "client_timeout":  # kept as before: no detail
                store.event(kind, round=rnd, client=pid)
            else:
                store.event(kind, round=rnd, client=pid, detail=detail)
        rows: list[dict[str, Any]] = []
        client_times: list[dict[str, Any]] = []
        for pid, msg in gate.accepted:
            met = metrics_of(msg)
            assert met is not None  # the gate checked
            # Wall times stay out of the deterministic table.
            for phase, v in wall_times(met).items():
                client_times.append({"round": rnd, "phase": phase, "client": pid, "seconds": v})
            for k, v in table_metrics(met).items():
                rows.append(
                    {"round": rnd, "scope": "client", "client": pid, "metric": k, "value": v}
                )
        rows += [
            {"round": rnd, "scope": "global", "metric": "fed.replies", "value": len(gate.accepted)},
            {"round": rnd, "scope": "global", "metric": "fed.dropped", "value": len(dropped)},
        ]
        # Per-kind counts only for kinds that occurred: a fault-free run's table is unchanged.
        for kind, count in sorted(Counter(kind for _, kind, _ in dropped).items()):
            rows.append(
                {"round": rnd, "scope": "global", "metric": f"fed.dropped.{kind}", "value": count}
            )
        if s.faults is not None:
            # The round lasts as long as its slowest accepted reply, on the virtual clock.
            delays = [faults[pid].delay for pid, _ in gate.accepted if pid in faults]
            rows.append(
                {
                    "round": rnd,
                    "scope": "global",
                    "metric": "fed.virtual_seconds",
                    "value": max(delays, default=0.0),
                }
            )
        if len(gate.accepted) < f.min_replies:
            store.event(
                "round_skipped", round=rnd, replies=len(gate.accepted), min_replies=f.min_replies
            )
        else:
            new_record, _ = strategy.aggregate_train(rnd, gate.messages())
            if new_record is not None:
                record = new_record
                if ema is not None:
                    ema.update(_generator(record))
        t_train = time.perf_counter() - t0
        store.add_metrics(rows, flush=False)  # written with the next evaluation
        ev = None
        evaluated = rnd % s.evaluation.every == 0 or rnd == f.rounds
        if evaluated:
            ev = _evaluate(
                s, grid, store, rnd, record, ema, data, gan, evaluator, node_pid, f.timeout
            )
        store.add_timings(
            client_times
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
        if evaluated:
            store.flush()  # every row of rounds ≤ rnd is on disk before the checkpoint says so
            t1 = time.perf_counter()
            touched = _checkpoint(
                grid, store, rnd, record, ema, strategy, private, touched, pid_node, f.timeout
            )
            # Written with the next flush (a kill before it loses only this wall time).
            store.add_timings(
                [
                    {
                        "round": rnd,
                        "phase": "checkpoint",
                        "client": -1,
                        "seconds": time.perf_counter() - t1,
                    }
                ]
            )
        for hook in ROUND_HOOKS:
            hook(rnd, f.rounds, ev)
    store.flush()  # the last round's timings (its metrics were written by its evaluation)
    store.event("run_finished", rounds=f.rounds)


def _evaluate(
    s: Scenario,
    grid: Grid,
    store: RunStore,
    rnd: int,
    record: ArrayRecord,
    ema: ServerEMA | None,
    data: FederatedData,
    gan: Any,
    evaluator: Any,
    node_pid: dict[int, int],
    timeout: float,
) -> Evaluation | None:
    """Global evaluation on the pooled held-out set, then every client on its own split —
    of the generator that would be sampled: the server's EMA when it keeps one."""
    arrays = from_record(record)
    store.save_checkpoint(rnd, arrays | (ema.as_state_arrays() if ema else {}))
    generator = ema.arrays if ema is not None else _generator(arrays)
    ev = None
    if generator:
        state = initial_state(s, gan).load_arrays(generator)
        fake = gan.sample(
            state, s.evaluation.n_samples, torch_generator(s.seed, "sample", rnd)
        ).numpy()
        store.save_samples(rnd, fake)
        try:
            ev = evaluator(fake)
        except FloatingPointError as exc:
            store.event("global_generator_diverged", round=rnd, detail=str(exc))
        if ev is not None:
            store.add_metrics(eval_rows(ev, rnd, "global"))
            for w in ev.warnings:
                store.event("warning", round=rnd, detail=w)
            store.add_diagnosis(
                {
                    "round": rnd,
                    "scope": "global",
                    "client": -1,
                    "label": ev.diagnosis.label,
                    "reason": ev.diagnosis.reason,
                }
            )
    # Per-client evaluation of the global generator (a private generator when not federated).
    content = evaluate_content(generator, EvaluateInstruction(rnd))
    msgs = [Message(content, dst_node_id=n, message_type=MessageType.EVALUATE) for n in node_pid]
    replies = list(grid.send_and_receive(msgs, timeout=timeout))
    gate = check_replies(replies, node_pid, None, EVALUATE_REPLY_KEYS)
    for pid, kind, detail in gate.dropped:
        store.event(kind, round=rnd, client=pid, detail=f"evaluation: {detail}")
    answered = {r.metadata.src_node_id for r in replies}
    for node in sorted(set(node_pid) - answered, key=node_pid.__getitem__):  # a lost node
        store.event("client_timeout", round=rnd, client=node_pid[node], detail="evaluation")
    rows: list[dict[str, Any]] = []
    G = len(data.groups)
    pooled = np.zeros((3, G))
    for pid, msg in gate.accepted:
        local = read_evaluate_reply(msg).evaluation
        for key, value in (
            ("recall", local.recall),
            ("coverage", local.coverage),
            ("expected_coverage", local.expected_coverage),
        ):
            rows.append(
                {
                    "round": rnd,
                    "scope": "client",
                    "client": pid,
                    "metric": f"eval.{key}",
                    "value": value,
                    "n": local.n_real,
                }
            )
        hits = np.array([local.recall_hits, local.coverage_hits, local.group_n], dtype=float)
        pooled += hits
        for g in range(G):
            if hits[2, g] > 0:
                for i, key in enumerate(("recall", "coverage")):
                    rows.append(
                        {
                            "round": rnd,
                            "scope": "client",
                            "client": pid,
                            "group_by": data.group_col,
                            "group": data.groups[g],
                            "metric": f"eval.{key}",
                            "value": hits[i, g] / hits[2, g],
                            "n": int(hits[2, g]),
                        }
                    )
    for g in range(G):  # per-group client recall pooled exactly over every client's points
        if pooled[2, g] > 0:
            for i, key in enumerate(("recall", "coverage")):
                rows.append(
                    {
                        "round": rnd,
                        "scope": "clients",
                        "client": -1,
                        "group_by": data.group_col,
                        "group": data.groups[g],
                        "metric": f"eval.{key}",
                        "value": pooled[i, g] / pooled[2, g],
                        "n": int(pooled[2, g]),
                    }
                )
    store.add_metrics(rows, flush=False)  # the loop flushes once the round's timings are in
    return ev


def _checkpoint(
    grid: Grid,
    store: RunStore,
    rnd: int,
    record: ArrayRecord,
    ema: ServerEMA | None,
    strategy: Any,
    private: dict[int, dict[str, np.ndarray]],
    touched: set[int],
    pid_node: dict[int, int],
    timeout: float,
) -> set[int]:
    """Write the resume checkpoint of round `rnd` (updates `private` in place); returns the
    clients whose private state could not be collected, to ask again next time."""
    got, failed = collect_private(grid, pid_node, sorted(touched), timeout)
    private.update(got)
    state, skipped = strategy_state(strategy)
    notes = []
    if failed:
        notes.append(f"private state of clients {failed} is from an earlier checkpoint")
    if skipped:
        notes.append(f"strategy attributes not saved (cannot be pickled as data): {skipped}")
    if notes:
        store.event("checkpoint_incomplete", round=rnd, detail="; ".join(notes))
    save_resume_state(
        store.path,
        ResumeState(
            rnd,
            from_record(record),
            private,
            state,
            rng_state(),
            notes,
            server=dict(ema.arrays) if ema is not None else {},
        ),
    )
    return set(failed)


def _generator(arrays: dict[str, np.ndarray] | ArrayRecord) -> dict[str, np.ndarray]:
    """The `generator.*` arrays of a flat dict or a record (decoding only those)."""
    if isinstance(arrays, ArrayRecord):
        return {k: a.numpy() for k, a in select(arrays, GENERATOR).items()}
    return select(arrays, GENERATOR)


def _partition_table(data: FederatedData) -> Any:
    t = data.partition.tidy()
    t.insert(1, "group_by", data.group_col)
    return t
