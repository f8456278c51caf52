"""Checks before anything runs: `validate` makes every check `run` makes, all errors at once,
each with its YAML path; `run` makes them before it creates a run folder; a run that dies is
recorded in its folder and exits 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedgan.simulator.api import run as api_run
from fedgan.simulator.cli import app
from fedgan.simulator.engines.runner import check_scenario
from fedgan.simulator.scenario import ScenarioError, load
from typer.testing import CliRunner

from tests.conftest import tiny_raw

runner = CliRunner()


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def _errors(path: Path, overrides: list[str] | None = None) -> list[str]:
    """Every problem `validate` reports: the schema's, then the preflight's."""
    try:
        s = load(path, overrides or [])
    except ScenarioError as exc:
        return exc.errors
    return check_scenario(s)


def test_every_wave_of_errors_comes_at_once(tmp_path: Path) -> None:
    raw = tiny_raw(
        data={"dataset": "grid", "params": {"n_per_side": "five", "minority_modes": [30]}},
        federation={"clients_per_round": 10},
    )
    errors = _errors(_write(tmp_path, raw))
    assert any(e.startswith("data.params.n_per_side:") and "integer" in e for e in errors)
    assert any(e.startswith("data.params.minority_modes:") and "0..24" in e for e in errors)
    assert "federation.clients_per_round: 10 exceeds partition.n_clients (4)" in errors


def test_partitioner_parameters_are_checked_with_their_path(tmp_path: Path) -> None:
    raw = tiny_raw(partition={"params": {"alpa": 0.3}}, evaluation={"group_by": ["region"]})
    errors = _errors(_write(tmp_path, raw))
    assert any(e.startswith("partition.params.alpa: ") and "allowed: alpha" in e for e in errors)
    assert any(
        e.startswith("evaluation.group_by.0: no column 'region'") and "mode" in e for e in errors
    )


def test_strategy_values_and_plugins_are_checked_at_validation(tmp_path: Path) -> None:
    raw = tiny_raw(strategy={"name": "group_aware", "params": {"metric": "fid"}})
    (err,) = _errors(_write(tmp_path, raw))
    assert err.startswith("strategy.params.metric: group_aware: metric must be")
    raw = tiny_raw(gan={"objective": "no_such_module:Loss"})
    (err,) = _errors(_write(tmp_path, raw))
    assert err.startswith("gan.objective:") and "failed to import" in err


DIGITS_TOO_MANY = {  # 3,000 images with half of them zeros: only 178 zeros exist
    "dataset": "digits",
    "n_samples": 3000,
    "params": {"weights": [10, 1, 1, 1, 1, 1, 1, 1, 1, 1]},
}


def test_infeasible_dataset_fails_before_a_run_folder_exists(tmp_path: Path) -> None:
    raw = tiny_raw(
        data=DIGITS_TOO_MANY,
        gan={"generator": {"kind": "conv"}, "critic": {"kind": "conv"}},
    )
    p = _write(tmp_path, raw)
    (err,) = _errors(p)
    assert err.startswith("data: ") and "needs more images than exist" in err
    out = tmp_path / "runs"
    for args in (["validate", str(p)], ["run", str(p), "--out", str(out)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "needs more images than exist" in " ".join(res.output.split())
    with pytest.raises(ScenarioError, match="needs more images"):
        api_run(p, out_dir=out)
    assert not out.exists(), "no run folder for a run that cannot start"


def test_validate_takes_overrides_and_prints_messages_verbatim(tmp_path: Path) -> None:
    p = _write(tmp_path, tiny_raw(), name="bad[age].yaml")
    ok = runner.invoke(app, ["validate", str(p), "federation.rounds=3"])
    assert ok.exit_code == 0 and "bad[age].yaml" in ok.output
    bad = runner.invoke(app, ["validate", str(p), "evaluation.group_by=[age]"])
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "bad[age].yaml" in text, "the file name's brackets are not eaten as markup"
    assert "evaluation.group_by.0: no column 'age'" in text


BROKEN_RULE = """
from flwr.serverapp.strategy import FedAvg


class Broken(FedAvg):
    def aggregate_train(self, server_round, replies):
        raise KeyError("local.coverage_typo")
"""


def test_a_crashing_strategy_is_recorded_and_exits_1(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "broken_rule.py").write_text(BROKEN_RULE)
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, tiny_raw(strategy={"name": "broken_rule.py:Broken"}))
    res = runner.invoke(app, ["run", str(p), "--out", "runs"])
    assert res.exit_code == 1, res.output
    assert "the run failed: KeyError: 'local.coverage_typo'" in " ".join(res.output.split())
    assert len(res.output.splitlines()) < 150, "a short traceback, no locals"
    (folder,) = (tmp_path / "runs" / "tiny").iterdir()
    text = (folder / "error.txt").read_text()
    assert "aggregate_train" in text and "KeyError" in text
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["kind"] == "run_failed"]
    assert len(failed) == 1 and failed[0]["round"] == 1 and failed[0]["phase"] == "combine"
    assert (folder / "scenario.yaml").is_file(), "what was written before stays"


def test_an_unknown_strategy_is_one_problem_not_a_traceback() -> None:
    """The fedavg protocol's check looked the strategy up again after `check_strategy` had
    refused the name, and raised: the likeliest typo crashed `validate` and `run`."""
    from tests.conftest import tiny

    (problem,) = check_scenario(tiny(strategy={"name": "fedmeadian"}))
    typo = "strategy.name: unknown strategy 'fedmeadian'; did you mean 'fedmedian'?"
    assert problem.startswith(typo)
    (critic,) = check_scenario(tiny(strategy={"critic": {"name": "fedmeadian"}}))
    assert critic.startswith("strategy.critic.name: unknown strategy 'fedmeadian'")


RAISING_PROTOCOL = """
from fedgan.server.protocols.fedavg import FedAvgProtocol


class Picky(FedAvgProtocol):
    @classmethod
    def check(cls, s):
        return {}["a key its author forgot"]
"""


def test_a_check_that_raises_is_reported_at_its_path(tmp_path: Path) -> None:
    """Whatever a plug-in's own check raises becomes one problem at its YAML path."""
    (tmp_path / "picky.py").write_text(RAISING_PROTOCOL)
    raw = tiny_raw(federation={"protocol": f"{tmp_path / 'picky.py'}:Picky"})
    (problem,) = _errors(_write(tmp_path, raw))
    assert problem.startswith("federation.protocol: protocol ")
    assert "failed to check the scenario: KeyError" in problem
    res = runner.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_the_python_api_checks_mappings_and_never_raises(tmp_path: Path) -> None:
    """`simulator.api.check` takes a path, a mapping or a Scenario and returns problems."""
    from fedgan.simulator.api import check

    assert check(tiny_raw()) == []
    (problem,) = check(tiny_raw(strategy={"name": "fedmeadian"}))
    assert problem.startswith("strategy.name: unknown strategy 'fedmeadian'")
    assert check(tmp_path / "missing.yaml")[0].startswith("cannot read the file")
    assert check(42)[0].startswith("(top): expected a YAML file path")  # type: ignore[arg-type]


def test_an_image_network_on_data_it_cannot_take_is_named_by_path(tmp_path: Path) -> None:
    # dcgan is built for 28×28 / 32×32; the bundled digits are 8×8 (and a ring is no image).
    raw = tiny_raw(
        data={"dataset": "digits", "n_samples": 300, "params": {}},
        gan={"generator": {"kind": "dcgan"}, "critic": {"kind": "dcgan"}},
    )
    errors = _errors(_write(tmp_path, raw))
    assert any(e.startswith("gan.generator.kind:") and "28×28 or 32×32" in e for e in errors)
    assert any(e.startswith("gan.critic.kind:") and "got 8×8" in e for e in errors)
    ring = tiny_raw(gan={"critic": {"kind": "dcgan"}})
    assert any(
        e.startswith("gan.critic.kind:") and "needs image data" in e
        for e in _errors(_write(tmp_path, ring, "ring.yaml"))
    )
    upsampled = dict(raw, data={"dataset": "digits", "n_samples": 300, "params": {"size": 28}})
    assert not [e for e in _errors(_write(tmp_path, upsampled, "d28.yaml")) if "gan." in e]
