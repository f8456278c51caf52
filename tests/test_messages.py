"""The message format: every key written once, typed messages that survive the trip."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from fedgan.simulator import messages as M
from fedgan.simulator.gan.train import ARRAY_GROUPS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "clients", "server", "wire", "benchmarks")
CODE = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
HOME = ROOT / "simulator" / "messages.py"

# Keys that only messages carry: as quoted literals (or the start of one, f-strings included)
# they may appear in the message module only.
MESSAGE_KEYS = [
    "partition-id",
    "num-partitions",
    "num-examples",
    "server-round",
    "proximal-mu",
    "has-private",
    "train_loss",
    "bytes.received",
    "bytes.sent",
    "fault.padding",
    "ask",
]
MESSAGE_PREFIXES = ["local.", "time."]
# The GAN state names its own arrays (simulator/gan/); everywhere else the prefixes come from
# the message module.
ARRAY_PREFIXES = ["generator.", "critic.", "critic_buffer.", "generator_ema."]
# Record names and the train-statistics prefix are ordinary words elsewhere (a table's
# "config" column, a checkpoint's "arrays"): checked where messages are read and written.
SPEAKERS = [p for p in CODE if p.parts[len(ROOT.parts)] in ("clients", "server", "wire")] + [
    ROOT / "simulator" / "engines" / "vectorized.py",
    ROOT / "simulator" / "engines" / "inprocess.py",
]
RECORD_KEYS = ["arrays", "metrics", "config"]


def _literal(key: str, prefix: bool = False) -> re.Pattern[str]:
    tail = "" if prefix else "[\"']"
    return re.compile(rf"(?<![\w.])f?[\"']{re.escape(key)}{tail}")


def _holders(pattern: re.Pattern[str], files: list[Path]) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in files if pattern.search(p.read_text())}


@pytest.mark.parametrize("key", MESSAGE_KEYS)
def test_message_keys_are_literals_in_the_message_module_only(key: str) -> None:
    assert _holders(_literal(key), CODE) == {"simulator/messages.py"}


@pytest.mark.parametrize("prefix", MESSAGE_PREFIXES)
def test_reply_prefixes_are_written_once(prefix: str) -> None:
    assert _holders(_literal(prefix, prefix=True), CODE) == {"simulator/messages.py"}


@pytest.mark.parametrize("prefix", ARRAY_PREFIXES)
def test_array_prefixes_are_written_once_outside_the_gan_state(prefix: str) -> None:
    outside = [p for p in CODE if "gan" not in p.relative_to(ROOT).parts[:2]]
    assert _holders(_literal(prefix, prefix=True), outside) == {"simulator/messages.py"}


@pytest.mark.parametrize("key", [*RECORD_KEYS, "train."])
def test_record_names_are_not_literals_where_messages_are_handled(key: str) -> None:
    assert _holders(_literal(key, prefix=key.endswith(".")), SPEAKERS) == set()


def test_the_literal_search_finds_what_it_looks_for() -> None:
    # The check above must be able to fail: the message module itself is found.
    assert _holders(_literal("partition-id"), [HOME]) == {"simulator/messages.py"}
    assert _holders(_literal("local.", prefix=True), [HOME]) == {"simulator/messages.py"}


def test_array_prefixes_are_the_gan_states_groups() -> None:
    groups = {p + "." for p in ARRAY_GROUPS}
    assert {M.GENERATOR, M.CRITIC, M.CRITIC_BUFFER, M.GENERATOR_EMA} <= groups
    critic = {p for p in groups if p.startswith("critic") and "opt" not in p}
    assert set(M.CRITIC_PREFIXES) == critic
    travelling = {p for prefixes in M.FEDERATED.values() for p in prefixes}
    assert travelling <= groups


def test_split_arrays_keeps_what_travels_and_the_rest() -> None:
    arrays = {"generator.w": 1, "critic.w": 2, "critic_buffer.u": 3, "critic_opt.m": 4}
    assert M.split_arrays(arrays, "generator") == (
        {"generator.w": 1},
        {"critic.w": 2, "critic_buffer.u": 3, "critic_opt.m": 4},
    )
    assert M.split_arrays(arrays, "critic")[0] == {"critic.w": 2, "critic_buffer.u": 3}
    assert M.as_ema({"generator.net.0.w": 5}) == {"generator_ema.net.0.w": 5}


def _local(coverage: float = 0.25) -> M.LocalEvaluation:
    return M.LocalEvaluation(0.5, coverage, 0.75, 7, [1, 2], [0, 1], [3, 4])


def test_train_reply_round_trips_and_derives_the_quality_losses() -> None:
    r = M.TrainReply(3, 40, {"d_loss": 0.1, "lipschitz.real": 1.5}, _local(), 10.0, 20.0, 0.2)
    m = r.metrics()
    assert m["partition-id"] == 3.0 and m["num-examples"] == 40.0
    assert m["train.d_loss"] == 0.1 and m["train.lipschitz.real"] == 1.5
    assert m["train_loss"] == pytest.approx(1 - 0.25 + 1e-3)
    assert m["local.quality_loss"] == pytest.approx(0.75 - 0.25)
    assert M.TrainReply.from_metrics(m) == r
    # Scalars reach the table (not the partition id, not wall times, not lists).
    table = M.table_metrics(m)
    assert "partition-id" not in table and "time.client_train" not in table
    assert "local.group_n" not in table and table["local.coverage"] == 0.25
    assert M.wall_times(m) == {"client_train": 0.2}
    unmeasured = M.TrainReply(0, 1, {}, _local(coverage=math.nan), 0.0, 0.0)
    assert unmeasured.train_loss == pytest.approx(1.001)
    assert "time.client_train" not in unmeasured.metrics()


def _coverage() -> M.ClientCoverage:
    return M.ClientCoverage(0.25, 7, [0, 1], [3, 4])


def test_per_group_counts_have_one_name_in_train_and_evaluate_replies() -> None:
    """Coverage hits and points per group travel under the same keys in both replies (an
    evaluate reply carries no recall: a client's recall from its own few points is the trap
    the one-story views avoid)."""
    counts = {M.COVERAGE_HITS, M.GROUP_N}
    train = M.TrainReply(0, 1, {}, _local(), 0.0, 0.0).metrics()
    evaluate = M.EvaluateReply(0, _coverage()).metrics()
    assert counts <= set(train) and counts <= set(evaluate)
    assert M.RECALL_HITS not in evaluate and M.LOCAL_RECALL not in evaluate
    back = M.EvaluateReply.from_metrics(evaluate)
    assert back == M.EvaluateReply(0, _coverage())


def test_other_groupings_counts_travel_only_when_there_are_any() -> None:
    """Counts of the other groupings (a second column, an intersection) round-trip in both
    replies; a one-grouping evaluation sends exactly the keys it always did."""
    other = M.LocalEvaluation(
        0.5, 0.25, 0.75, 7, [1, 2], [0, 1], [3, 4], [1, 0, 2], [0, 0, 1], [2, 2, 3]
    )
    train = M.TrainReply(0, 1, {}, other, 0.0, 0.0)
    m = train.metrics()
    assert m[M.OTHER_GROUP_N] == [2, 2, 3] and m[M.OTHER_RECALL_HITS] == [1, 0, 2]
    assert M.TrainReply.from_metrics(m) == train
    cov = M.EvaluateReply(0, M.ClientCoverage(0.25, 7, [0, 1], [3, 4], [0, 0, 1], [2, 2, 3]))
    m = cov.metrics()
    assert m[M.OTHER_GROUP_N] == [2, 2, 3] and m[M.OTHER_COVERAGE_HITS] == [0, 0, 1]
    assert M.EvaluateReply.from_metrics(m) == cov
    plain = M.EvaluateReply(0, _coverage()).metrics()
    assert not {M.OTHER_RECALL_HITS, M.OTHER_COVERAGE_HITS, M.OTHER_GROUP_N} & set(plain)
    assert M.EvaluateReply.from_metrics(plain).evaluation.other_group_n == []


def test_instructions_and_queries() -> None:
    ins = M.TrainInstruction(4, proximal_mu=0.1)
    assert ins.config() == {"server-round": 4, "proximal-mu": 0.1}
    assert M.TrainInstruction.from_config(ins.config()) == ins
    # A stock strategy's config: the round as Flower writes it, no μ.
    assert M.TrainInstruction.from_config({"server-round": 2}) == M.TrainInstruction(2)
    assert M.Query.from_config(None).ask == "partition-id"
    assert M.Query.from_config({"ask": "restore"}).ask == "restore"
    with pytest.raises(ValueError, match="'everything'; allowed: partition-id, private, restore"):
        M.Query("everything")
    reply = M.QueryReply(2, has_private=True)
    assert reply.metrics() == {"partition-id": 2, "has-private": 1}
    assert M.QueryReply.from_metrics(reply.metrics()) == reply
    assert M.QueryReply.from_metrics({"partition-id": 5}) == M.QueryReply(5)
