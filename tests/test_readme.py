"""The documentation's promises: the README opens with the two commands CI and the tests read,
and the plug-ins guide's walk-throughs (docs/guide/plugins.md, once the README's "Plug-ins"
section) work when copied into a new file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from fedgan.clients.training import client_train
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.messages import split_arrays
from fedgan.simulator.prepare import initial_state, make_gan
from fedgan.simulator.store import load_run

from tests.conftest import tiny

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLUGINS = ROOT / "docs" / "guide" / "plugins.md"


def test_readme_opens_with_the_two_commands_and_stays_a_front_page() -> None:
    """Its first lines are the install-and-run and the test commands, exactly; the second is
    the one CI runs (.ci/run's last line, quiet); the rest of the documentation is the site."""
    lines = README.read_text().split("\n")
    assert lines[2] == "```bash" and lines[5] == "```"
    assert lines[3] == (
        "python3 -m venv .venv && .venv/bin/pip install -e . && "
        ".venv/bin/fedgan run scenarios/quickstart.yaml"
    )
    ci = (ROOT / ".ci" / "run").read_text().strip().split("\n")[-1]
    assert ci.replace("pip install -q ", "pip install ") == lines[4]
    assert lines[4].endswith(".venv/bin/python -m pytest")
    assert len(lines) <= 250


def test_custom_strategy_walkthrough_runs_and_weights_as_documented(tmp_path: Path) -> None:
    code = re.search(r"```python\n(# my_rule\.py\n.*?)```", PLUGINS.read_text(), re.S)
    assert code, "the plug-ins guide has the my_rule.py block"
    plugin = tmp_path / "my_rule.py"
    plugin.write_text(code.group(1))
    s = tiny(
        strategy={"name": f"{plugin}:LeastCoveredFirst", "params": {"power": 2.0}},
        federation={"rounds": 1},
    )
    res = run_federated(s, tmp_path / "runs")
    kinds = {e["kind"] for e in load_run(res.path).events}
    assert kinds == {"run_started", "run_finished"}
    # Oracle: the documented weights n_k · (1.05 − coverage_k)², from the clients' own updates.
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ups = [client_train(s, c, 1, init, None) for c in range(4)]
    cov = np.nan_to_num([u.metrics["local.coverage"] for u in ups], nan=0.0)
    w = np.array([u.metrics["num-examples"] for u in ups]) * (1.05 - cov) ** 2
    w = w / w.sum()
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    for key in init:
        expected = sum(wi * u.arrays[key] for wi, u in zip(w, ups, strict=True))
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)
    # ... and the weights it declares (its `weights` hook) are the round's fed.weight rows.
    m = res.metrics
    rows = m[m["metric"] == "fed.weight"].sort_values("client")
    assert list(rows["client"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(rows["value"].to_numpy(), w, rtol=1e-6)


def test_trimmed_mean_walkthrough_aggregates_as_documented_and_writes_no_weights(
    tmp_path: Path,
) -> None:
    """The guide's rule that is not a weighted mean: its arrays are the coordinate-wise mean
    without each coordinate's lowest and highest client value, and its `weights` hook's None
    leaves the round without `fed.weight` rows (FedAvg's, which it never used, would be false)."""
    code = re.search(r"```python\n(# my_trimmed\.py\n.*?)```", PLUGINS.read_text(), re.S)
    assert code, "the plug-ins guide has the my_trimmed.py block"
    plugin = tmp_path / "my_trimmed.py"
    plugin.write_text(code.group(1))
    s = tiny(strategy={"name": f"{plugin}:TrimmedMean", "params": {"trim": 1}},
             federation={"rounds": 1})
    res = run_federated(s, tmp_path / "runs")
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ups = [client_train(s, c, 1, init, None) for c in range(4)]
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    for key in init:
        values = np.stack([u.arrays[key] for u in ups])  # 4 clients: drop 1 low and 1 high
        lo, hi = values.min(axis=0), values.max(axis=0)
        expected = (values.sum(axis=0) - lo - hi) / 2
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)
    assert "fed.weight" not in set(res.metrics["metric"])


def _section(title: str) -> str:
    """The guide page that holds the section (the plug-ins page is the README's old section)."""
    text = PLUGINS.read_text()
    assert text.startswith(f"# {title}\n"), title
    return text


def test_plugin_section_lists_every_reply_key_and_what_aggregate_train_returns() -> None:
    """Every metric key a train or an evaluate reply carries — with two groupings, so the
    other groupings' counts too — is named in the plug-in section, and so is each return
    value of `aggregate_train`."""
    from fedgan.simulator.messages import ClientCoverage, EvaluateReply, LocalEvaluation, TrainReply

    ev = LocalEvaluation(0.5, 0.4, 0.8, 10, [3, 2], [2, 2], [6, 4], [1], [1], [10])
    train = TrainReply(0, 40, {"g_loss": 1.0, "lipschitz.real": 0.5}, ev, 1.0, 2.0, 0.1)
    cov = ClientCoverage(0.4, 10, [2, 2], [6, 4], [1], [10])
    keys = {*train.metrics(), *EvaluateReply(0, cov).metrics()}
    section = _section("Plug-ins")
    for key in sorted(keys):
        shown = "train.*" if key.startswith("train.") else key
        assert f"`{shown}`" in section, key
    assert "`train.lipschitz.*`" in section
    for phrase in (
        "**`aggregate_train(server_round, replies)`**",
        "first: an `ArrayRecord`",
        "first: `None`",
        "second: a `MetricRecord` or `None`",
        "`weights(server_round, replies)`",
    ):
        assert phrase in section, phrase


def _protocol_plugin(tmp_path: Path) -> Path:
    code = re.search(r"```python\n(# my_protocol\.py\n.*?)```", PLUGINS.read_text(), re.S)
    assert code, "the plug-ins guide has the my_protocol.py block"
    plugin = tmp_path / "my_protocol.py"
    plugin.write_text(code.group(1))
    return plugin


def test_protocol_walkthrough_runs_and_weights_as_documented(tmp_path: Path) -> None:
    plugin = _protocol_plugin(tmp_path)
    power = 0.5
    s = tiny(
        federation={
            "rounds": 1,
            "protocol": f"{plugin}:PowerMean",
            "protocol_params": {"power": power},
        }
    )
    res = run_federated(s, tmp_path / "runs")
    kinds = {e["kind"] for e in load_run(res.path).events}
    assert kinds == {"run_started", "run_finished"}
    # Oracle: weights n_k^power over the clients' own updates (all 4 clients train round 1).
    init, _ = split_arrays(initial_state(s, make_gan(s)).arrays(), "both")
    ups = [client_train(s, c, 1, init, None) for c in range(4)]
    w = np.array([u.reply.num_examples for u in ups], dtype=float) ** power
    w = w / w.sum()
    assert not np.allclose(w, w[0]), "clients of different sizes: the weights differ"
    ckpt = np.load(res.path / "checkpoints" / "round-000001.npz")
    assert set(ckpt.files) == set(init)
    for key in init:
        expected = sum(wi * u.arrays[key] for wi, u in zip(w, ups, strict=True))
        np.testing.assert_allclose(ckpt[key], expected, rtol=1e-5, atol=1e-6)
    # The same run's client rows are the replies' statistics, as under fedavg.
    rows = res.metrics.query("scope == 'client' and round == 1 and metric == 'num-examples'")
    assert sorted(rows["value"]) == sorted(u.reply.num_examples for u in ups)


def test_protocol_walkthrough_resumes_to_the_uninterrupted_table(tmp_path: Path) -> None:
    from fedgan.simulator.engines.runner import resume_federated

    from tests.server.test_resume import _start_and_stop, killer

    plugin = _protocol_plugin(tmp_path)
    s = tiny(
        federation={"rounds": 4, "protocol": f"{plugin}:PowerMean", "clients_per_round": 2},
        evaluation={"every": 2, "n_samples": 100, "min_group_size": 5},
    )
    reference = run_federated(s, tmp_path / "ref").metrics
    # 2 train messages a round: the 5th is round 3's first, after the round-2 checkpoint.
    path = _start_and_stop(s, tmp_path / "stopped", killer("train", 5))
    import pandas as pd
    from fedgan.simulator.checkpoint import load_latest

    assert load_latest(path).round == 2  # type: ignore[union-attr]

    pd.testing.assert_frame_equal(resume_federated(path).metrics, reference)
