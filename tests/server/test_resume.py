"""Checkpoint and resume: a run stopped at any moment, resumed, equals the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fedgan.clients.app import app as real_client_app
from fedgan.server.app import RUN_DIR_KEY
from fedgan.server.app import app as server_app
from fedgan.server.nodes import collect_private, restore_private
from fedgan.server.strategies.critic_swap import CriticSwapFedAvg
from fedgan.server.strategies.fair import AgnosticFedAvg
from fedgan.server.strategies.per_network import PerNetwork
from fedgan.server.strategies.strategy_state import (
    load_strategy_state,
    rebind_nodes,
    strategy_state,
)
from fedgan.simulator import statecodec
from fedgan.simulator.checkpoint import load_latest
from fedgan.simulator.engines.inprocess import InProcessGrid, node_id_of, run_serverapp
from fedgan.simulator.engines.runner import resume_federated, run_federated
from fedgan.simulator.scenario import Scenario, ScenarioError, resolved_yaml
from fedgan.simulator.store import RunStore, load_run, run_is_finished
from fedgan.wire.flwr_internals import task_identity
from fedgan.wire.records import RUN_CONFIG_KEY
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from tests.conftest import tiny, tiny_raw

ROOT = Path(__file__).resolve().parents[2]


def scenario(**extra: Any) -> Scenario:
    """Private critics (generator-only federation), a stateful server optimizer, 2 of 4
    clients per round: the generator, the critics, the optimizer moments on both sides and
    the sampling all matter to the metrics."""
    return tiny(
        federation={"rounds": 6, "local_steps": 3, "federate": "generator", "clients_per_round": 2},
        evaluation={"every": 2, "n_samples": 200, "min_group_size": 5},
        strategy={"name": "fedadam", "params": {"eta": 0.01}},
        **extra,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The uninterrupted run's metrics table."""
    return run_federated(scenario(), tmp_path_factory.mktemp("ref")).metrics


# ---- strategy state ----------------------------------------------------------------------------


def _reply(pid: int, arrays: dict[str, np.ndarray]) -> Message:
    """A train reply from the in-process node holding `pid`."""
    with task_identity(1, 1, 1):
        ins = Message(
            RecordDict({"config": ConfigRecord({})}),
            dst_node_id=node_id_of(pid),
            message_type=MessageType.TRAIN,
        )
    metrics = {
        "num-examples": 10.0 + pid,
        "partition-id": float(pid),
        "local.quality_loss": 0.1 * (pid + 1),
    }
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),
        }
    )
    return Message(content, reply_to=ins)


KEYS = ("generator.w", "critic.w")


def _round(strategy: Any, rnd: int, record: ArrayRecord, grid: InProcessGrid) -> tuple[Any, ...]:
    """One round with fixed fabricated replies of clients 0..2: (sent arrays, new record)."""
    with task_identity(1, 1, 1):  # Messages need a run id outside a Flower runtime
        msgs = list(strategy.configure_train(rnd, record, ConfigRecord({}), grid))
    sent = {
        m.metadata.dst_node_id: {k: v.numpy() for k, v in m.content["arrays"].items()} for m in msgs
    }
    rng = np.random.default_rng(rnd)
    replies = [
        _reply(p, {k: rng.normal(size=(2, 3)).astype(np.float32) for k in KEYS}) for p in range(3)
    ]
    new, _ = strategy.aggregate_train(rnd, replies)
    return sent, new


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    (sent_a, rec_a), (sent_b, rec_b) = a, b
    if sent_a.keys() != sent_b.keys() or set(rec_a) != set(rec_b):
        return False
    return all(
        np.array_equal(sent_a[n][k], sent_b[n][k]) for n in sent_a for k in sent_a[n]
    ) and all(np.array_equal(rec_a[k].numpy(), rec_b[k].numpy()) for k in rec_a)


STRATEGIES: dict[str, tuple[Callable[[], Any], bool]] = {
    # name: (factory, whether the strategy keeps state that changes its next round)
    "fedavg": (FedAvg, False),
    "fedadam": (lambda: FedAdam(eta=0.1), True),
    "fedavgm": (lambda: FedAvgM(server_momentum=0.9), True),
    "agnostic": (lambda: AgnosticFedAvg(step_size=2.0), True),
    "critic_swap": (lambda: CriticSwapFedAvg(seed=1), True),
    "per_network": (lambda: PerNetwork(FedAdam(eta=0.1), FedAvgM(server_momentum=0.9)), True),
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_state_round_trips(name: str) -> None:
    """Two rounds on A; a fresh B given A's saved state plays round 3 exactly as A does, and a
    fresh C without it plays it differently (for the strategies that have state)."""
    make, stateful = STRATEGIES[name]
    grid = InProcessGrid(ClientApp(), 3, {"x": 1})
    record = ArrayRecord({k: Array(np.zeros((2, 3), np.float32)) for k in KEYS})
    a = make()
    for rnd in (1, 2):
        _, record = _round(a, rnd, record, grid)
    state, skipped = strategy_state(a)
    assert skipped == []
    b, c = make(), make()
    tree, arrays = statecodec.encode(state)  # as the checkpoint stores it: JSON + arrays
    load_strategy_state(b, statecodec.decode(json.loads(json.dumps(tree)), arrays))
    after_a, after_b, after_c = (_round(x, 3, record, grid) for x in (a, b, c))
    assert _same(after_a, after_b)
    assert _same(after_a, after_c) is not stateful


def test_unpicklable_strategy_attribute_is_reported_not_saved() -> None:
    s = FedAvg()
    with open(os.devnull) as handle:  # a file: not data
        s.handle = handle  # type: ignore[attr-defined]
        state, skipped = strategy_state(s)
    assert skipped == ["handle"]
    assert "handle" not in state and state["weighted_by_key"] == "num-examples"
    assert "train_metrics_aggr_fn" not in state  # callables are rebuilt from the scenario


# ---- stopped at a chosen moment, in process ------------------------------------------------------


class Killed(BaseException):
    """Not an Exception: the in-process grid does not turn it into an error reply, so it stops
    the whole run where it is raised, as a SIGKILL would (every file is written atomically)."""


def killer(message_type: str, n: int, ask: str | None = None) -> ClientApp:
    """The real ClientApp, except that the n-th message of `message_type` (with `ask`, for
    queries) stops the run before the client does anything."""
    seen = {"count": 0}

    def handler(msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get("config")
        if msg.metadata.message_type == message_type and (
            ask is None or (config is not None and config.get("ask") == ask)
        ):
            seen["count"] += 1
            if seen["count"] == n:
                raise Killed
        return real_client_app(msg, context)

    app = ClientApp()
    app.train()(handler)
    app.evaluate()(handler)
    app.query()(handler)
    return app


def _start_and_stop(s: Scenario, out: Path, app: ClientApp) -> Path:
    store = RunStore.create(out, s.name, resolved_yaml(s), {})
    grid = InProcessGrid(app, 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)})
    with pytest.raises(Killed):
        run_serverapp(server_app, grid)
    return store.path


@pytest.mark.parametrize(
    ("where", "message_type", "n", "ask", "checkpoint", "rows_after"),
    [
        # 2 train messages per round: the 5th is round 3's first, after the round-2 checkpoint
        ("mid-round 3", MessageType.TRAIN, 5, None, 2, False),
        # 4 evaluate messages per evaluation: the 5th is round 4's, after its global rows
        ("round 4's evaluation", MessageType.EVALUATE, 5, None, 2, True),
        ("round 1, before any checkpoint", MessageType.TRAIN, 2, None, None, False),
        # the 2nd checkpoint's first private-state query: round 4's rows are all written
        # rounds 1-2 sample clients {0, 1, 2}: the 4th private-state query is round 4's first
        ("round 4's checkpoint", MessageType.QUERY, 4, "private", 2, True),
    ],
)
def test_stopped_run_resumes_to_the_same_metrics(
    tmp_path: Path,
    reference: pd.DataFrame,
    where: str,
    message_type: str,
    n: int,
    ask: str | None,
    checkpoint: int | None,
    rows_after: bool,
) -> None:
    s = scenario()
    path = _start_and_stop(s, tmp_path, killer(message_type, n, ask))
    ckpt = load_latest(path)
    assert (ckpt.round if ckpt else None) == checkpoint, where
    before = load_run(path).metrics
    # Rows of a round after the checkpoint, written before the stop, are truncated on resume.
    assert bool(before["round"].max() > (checkpoint or 0)) is rows_after
    result = resume_federated(path)
    pd.testing.assert_frame_equal(result.metrics, reference)
    pd.testing.assert_frame_equal(load_run(path).metrics, reference)
    events = load_run(path).events
    resumed = [e for e in events if e["kind"] == "run_resumed"]
    assert [e["round"] for e in resumed] == [checkpoint or 0]
    assert events[-1]["kind"] == "run_finished"
    timings = pd.read_csv(path / "timings.csv")
    per_round = timings[timings["phase"] == "train"].groupby("round").size()
    assert per_round.to_dict() == {r: 1 for r in range(1, 7)}  # no round counted twice
    diagnosis = pd.read_csv(path / "diagnosis.csv")
    assert diagnosis["round"].tolist() == [2, 4, 6]


def test_resume_restores_private_state_and_strategy(tmp_path: Path) -> None:
    """The checkpoint holds what the clients and FedAdam held at the round-4 checkpoint."""
    s = scenario()
    store = RunStore.create(tmp_path, s.name, resolved_yaml(s), {})
    grid = InProcessGrid(
        killer(MessageType.TRAIN, 9), 4, {RUN_CONFIG_KEY: s.to_json(), RUN_DIR_KEY: str(store.path)}
    )
    with pytest.raises(Killed):  # round 5's first train message: the round-4 checkpoint is in
        run_serverapp(server_app, grid)
    ckpt = load_latest(store.path)
    assert ckpt is not None and ckpt.round == 4
    for pid, state in grid.states().items():
        private = state.get("private")
        if not isinstance(private, ArrayRecord):
            assert pid not in ckpt.clients  # never sampled: nothing to save
            continue
        assert set(ckpt.clients[pid]) == set(private)
        assert any(k.startswith("critic.") for k in private)
        for k, v in private.items():
            np.testing.assert_array_equal(ckpt.clients[pid][k], v.numpy())
    assert ckpt.strategy["m_t"] is not None and ckpt.strategy["v_t"] is not None
    np.testing.assert_array_equal(
        ckpt.arrays["generator.net.0.weight"],
        np.load(store.path / "checkpoints" / "round-000004.npz")["generator.net.0.weight"],
    )


def test_finished_run_is_left_alone(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 2, "local_steps": 2})
    res = run_federated(s, tmp_path)
    stamp = (res.path / "metrics.parquet").stat().st_mtime_ns
    again = resume_federated(res.path)
    pd.testing.assert_frame_equal(again.metrics, res.metrics)
    assert (res.path / "metrics.parquet").stat().st_mtime_ns == stamp
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    cli = CliRunner().invoke(app, ["run", "--resume", str(res.path)])
    assert cli.exit_code == 0 and "nothing to resume" in cli.output
    assert (res.path / "metrics.parquet").stat().st_mtime_ns == stamp
    assert not [e for e in load_run(res.path).events if e["kind"] == "run_resumed"]
    assert sorted(p.name for p in (res.path / "checkpoints").glob("resume-*")) == [
        "resume-000002.npz"  # only the latest is kept
    ]


def test_stopped_after_the_last_checkpoint_only_finishes(tmp_path: Path) -> None:
    """Killed between the last checkpoint and the `run_finished` event."""
    s = tiny(federation={"rounds": 2, "local_steps": 2})
    res = run_federated(s, tmp_path)
    events = (res.path / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["kind"] == "run_finished"
    (res.path / "events.jsonl").write_text("\n".join(events[:-1]) + "\n")
    again = resume_federated(res.path)
    pd.testing.assert_frame_equal(again.metrics, res.metrics)
    kinds = [e["kind"] for e in load_run(res.path).events]
    assert kinds[-2:] == ["run_resumed", "run_finished"]


def test_centralized_run_cannot_be_resumed(tmp_path: Path) -> None:
    raw = tiny_raw(train={"steps": 4}, evaluation={"every": 2, "n_samples": 100})
    raw.pop("federation")
    from fedgan.simulator.api import run

    res = run(Scenario.model_validate(raw), out_dir=tmp_path)
    with pytest.raises(ValueError, match="only federated runs"):
        resume_federated(res.path)
    with pytest.raises(ValueError, match="not a run folder"):
        resume_federated(tmp_path)


# ---- SIGKILL mid-round, through the command line ----------------------------------------------

HOLD_PLUGIN = '''
import os, pathlib, time
from flwr.serverapp.strategy import FedAdam


class HoldingFedAdam(FedAdam):
    """FedAdam that, when HOLD_ROUND is set, announces round HOLD_ROUND's aggregation in the
    file HOLD_MARKER and waits there (the clients have trained, nothing is aggregated yet)."""

    def aggregate_train(self, server_round, replies):
        if os.environ.get("HOLD_ROUND") == str(server_round):
            pathlib.Path(os.environ["HOLD_MARKER"]).write_text(str(server_round))
            time.sleep(120)
        return super().aggregate_train(server_round, replies)

    def weights(self, server_round, replies):
        # Its own aggregate_train: it says how it weighs clients — as FedAdam, by num-examples
        # (the fed.weight rows of the reference run).
        metrics = [r.content["metrics"] for r in replies]
        return {int(m["partition-id"]): m["num-examples"] for m in metrics}
'''


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fedgan.simulator.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkilled_run_resumes_from_the_command_line(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    plugin = tmp_path / "holding.py"
    plugin.write_text(HOLD_PLUGIN)
    raw = scenario().model_dump(mode="json")
    raw["strategy"] = {"name": f"{plugin}:HoldingFedAdam", "params": {"eta": 0.01}}
    path = tmp_path / "s.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    marker = tmp_path / "holding"
    proc = _cli(
        "run",
        str(path),
        "--out",
        str(tmp_path / "runs"),
        env={"HOLD_ROUND": "5", "HOLD_MARKER": str(marker)},
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=10)[0] if proc.poll() is not None else ""
        os.kill(proc.pid, signal.SIGKILL)  # mid-round 5: clients trained, nothing aggregated
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = (tmp_path / "runs").glob("*/*")
    assert load_latest(run_dir).round == 4  # type: ignore[union-attr]
    resumed = _cli("run", "--resume", str(run_dir))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    # Without HOLD_ROUND the plug-in is FedAdam: `reference` is the uninterrupted run — plus,
    # a plug-in strategy being one that may read the clients' local scores, their local
    # evaluation in every round (`simulator.schedule.scores_due`), not only the diagnostics ones.
    got = load_run(run_dir).metrics
    scores = got["metric"].isin(["local.recall", "local.coverage", "local.expected_coverage",
                                 "train_loss", "local.quality_loss"])
    assert set(got.loc[scores, "round"]) == set(range(1, int(got["round"].max()) + 1))
    keys = ["round", "scope", "client", "group_by", "group", "metric"]
    extra = got.merge(reference[keys], on=keys, how="left", indicator=True)["_merge"] == "left_only"
    assert (scores.to_numpy() | ~extra.to_numpy()).all()  # the only rows beyond the reference
    pd.testing.assert_frame_equal(got[~extra.to_numpy()].reset_index(drop=True), reference)


# ---- the QUERY protocol with the real ClientApp ----------------------------------------------


def test_private_state_queries_round_trip() -> None:
    s = tiny(federation={"federate": "generator"})
    grid = InProcessGrid(real_client_app, 3, {RUN_CONFIG_KEY: s.to_json()})
    pid_node = {p: node_id_of(p) for p in range(3)}
    rng = np.random.default_rng(0)
    put = {1: {"critic.w": rng.normal(size=(2, 3)).astype(np.float32), "critic_opt.m": np.ones(2)}}
    with task_identity(grid.run.run_id, 1, 1):
        assert collect_private(grid, pid_node, [0, 1, 2], 10.0) == ({}, [])  # nothing yet
        assert restore_private(grid, pid_node, put, 10.0) == []
        got, failed = collect_private(grid, pid_node, [0, 1, 2, 3], 10.0)
    assert failed == [3]  # no such client: reported, not invented
    assert list(got) == [1] and got[1].keys() == put[1].keys()
    for k, v in put[1].items():
        np.testing.assert_array_equal(got[1][k], v)
    state = grid.context_of(1).state["private"]
    assert isinstance(state, ArrayRecord)
    np.testing.assert_array_equal(state["critic.w"].numpy(), put[1]["critic.w"])
    with task_identity(grid.run.run_id, 1, 1):
        msg = Message(
            RecordDict({"config": ConfigRecord({"ask": "everything"})}),
            dst_node_id=node_id_of(0),
            message_type=MessageType.QUERY,
        )
        (reply,) = grid.send_and_receive([msg])
    assert reply.has_error()
    assert "'everything'" in reply.error.reason and "partition-id, private, restore" in (
        reply.error.reason
    )


def test_cli_resume_refuses_what_it_cannot_resume(tmp_path: Path) -> None:
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    res = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "not a run folder (no scenario.yaml)" in res.output
    res = runner.invoke(app, ["run", "scenarios/quickstart.yaml", "--resume", str(tmp_path)])
    assert res.exit_code == 2 and "--resume takes no scenario" in res.output
    res = runner.invoke(app, ["run"])
    assert res.exit_code == 2 and "give a scenario file" in res.output


def test_critic_holders_are_rebound_to_new_node_ids() -> None:
    """Ray draws new node ids when a run restarts; critic_swap's node → partition map follows."""
    s = CriticSwapFedAvg(seed=0)
    s.partition_of = {555: 0, 777: 2}  # the killed run's node ids
    rebind_nodes(PerNetwork(s, FedAvg()), {11: 0, 12: 1, 13: 2})
    assert s.partition_of == {11: 0, 13: 2}  # partition 1 never sent a critic


# ---- resume that extends -----------------------------------------------------------------------


def test_extended_run_equals_a_run_made_with_the_rounds_from_the_start(tmp_path: Path) -> None:
    """Constant lr: 2 rounds, then `--resume RUN federation.rounds=4`, gives the table of a
    4-round run (every round evaluated, so the old final round's evaluation is on schedule)."""
    extra = {"gan": {"lr_schedule": "constant"}, "evaluation": {"every": 1}}
    short = tiny(federation={"rounds": 2, "local_steps": 2}, **extra)
    full = tiny(federation={"rounds": 4, "local_steps": 2}, **extra)
    reference = run_federated(full, tmp_path / "full").metrics
    res = run_federated(short, tmp_path / "short")
    from fedgan.simulator.cli import app
    from typer.testing import CliRunner

    cli = CliRunner().invoke(app, ["run", "--resume", str(res.path), "federation.rounds=4"])
    assert cli.exit_code == 0, cli.output
    pd.testing.assert_frame_equal(load_run(res.path).metrics, reference)
    run = load_run(res.path)
    assert run.scenario["federation"]["rounds"] == 4
    kinds = [e["kind"] for e in run.events]
    assert kinds.count("run_finished") == 2 and kinds[-1] == "run_finished"
    (ext,) = [e for e in run.events if e["kind"] == "run_extended"]
    assert ext["rounds_from"] == 2 and ext["rounds_to"] == 4
    assert (tmp_path / "short").exists() and run_is_finished(res.path)


def test_extending_refuses_what_would_change_the_past(tmp_path: Path) -> None:
    res = run_federated(tiny(federation={"rounds": 2, "local_steps": 2}), tmp_path)
    stamp = (res.path / "metrics.parquet").stat().st_mtime_ns
    with pytest.raises(ScenarioError, match=r"seed: cannot change on resume"):
        resume_federated(res.path, None, ["seed=4", "federation.rounds=3"])
    with pytest.raises(ScenarioError, match=r"gan.lr_schedule: linear decays"):
        resume_federated(res.path, None, ["federation.rounds=3"])  # the default: linear
    with pytest.raises(ScenarioError, match=r"federation.rounds: 1 is before round 2"):
        resume_federated(res.path, None, ["federation.rounds=1"])
    assert (res.path / "metrics.parquet").stat().st_mtime_ns == stamp, "nothing was touched"
    assert load_run(res.path).scenario["federation"]["rounds"] == 2


def test_rounds_played_again_after_a_resume_leave_one_copy_of_their_events(
    tmp_path: Path,
) -> None:
    """Killed in round 4's evaluation, after rounds 3 and 4 logged their dropouts: the resumed
    run plays them again from the round-2 checkpoint, and events.jsonl holds each event once."""
    s = scenario(faults={"dropout": 0.4})
    path = _start_and_stop(s, tmp_path, killer(MessageType.EVALUATE, 5))
    before = [e for e in load_run(path).events if e.get("round", 0) > 2]
    assert before, "the scenario's seed drops clients in rounds 3-4"
    resume_federated(path)
    events = load_run(path).events
    keys = [(e["kind"], e.get("round"), e.get("client")) for e in events if "round" in e]
    assert len(keys) == len(set(keys)), "no event of a round twice"
    (resumed,) = [e for e in events if e["kind"] == "run_resumed"]
    assert resumed["events_redone"] == len(before)
