"""The `fedgan` command line, through typer's test runner (same process, real runs)."""

from __future__ import annotations

from pathlib import Path

import yaml
from fedgan.simulator.cli import app
from typer.testing import CliRunner

from tests.conftest import tiny_raw

runner = CliRunner()


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_run_federated_prints_tables_and_the_run_folder(tmp_path: Path) -> None:
    p = _write(tmp_path, tiny_raw())
    res = runner.invoke(
        app, ["run", str(p), "federation.rounds=1", "--out", str(tmp_path / "runs")]
    )
    assert res.exit_code == 0, res.output
    assert "per-group (mode)" in res.output and "worst-group coverage" in res.output
    assert "worst-group recall" not in res.output and "recall gap" not in res.output
    folder = res.output.split("run folder:")[1].split()[0]
    assert (Path(folder) / "metrics.parquet").is_file()
    inspect = runner.invoke(app, ["inspect", folder, "--by", "group"])
    assert inspect.exit_code == 0, inspect.output
    # Per group: coverage (and its gap), never recall (it can read high for a forgotten group).
    assert "coverage" in inspect.output and "recall" not in inspect.output
    clients = runner.invoke(app, ["inspect", folder, "--by", "client"])
    assert clients.exit_code == 0, clients.output
    assert "eval.coverage" in clients.output and "served" in clients.output
    assert "eval.recall" not in clients.output and "local.recall" not in clients.output


def test_the_run_header_names_the_protocol_not_a_strategy_it_ignores(tmp_path: Path) -> None:
    # A server-held protocol has no strategy and no `federate` (the preflight refuses them):
    # its header names the protocol and its weighting, FedAvg's its strategy.
    fed = {"protocol": "uagan", "protocol_params": {"weighting": {"name": "agnostic"}}}
    held = _write(tmp_path, tiny_raw(federation={**fed, "rounds": 1}))
    res = runner.invoke(app, ["run", str(held), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    header = " ".join(res.output.split()).split("; dataset")[0]  # rich wraps at 80 columns
    assert header.endswith("protocol uagan, weighting agnostic"), header
    assert "strategy" not in header and "federating" not in header
    avg = runner.invoke(
        app,
        ["run", str(_write(tmp_path, tiny_raw())), "federation.rounds=1", "--out", str(tmp_path)],
    )
    assert avg.exit_code == 0, avg.output
    assert (
        " ".join(avg.output.split())
        .split("; dataset")[0]
        .endswith("federating both, strategy fedavg")
    )


def test_run_centralized_twin(tmp_path: Path) -> None:
    p = _write(tmp_path, tiny_raw())
    res = runner.invoke(app, ["run", str(p), "--centralized", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "centralized, 6 generator steps" in res.output  # 2 rounds × 3 local steps
    assert "tiny-centralized" in res.output


def test_broken_yaml_stops_before_training_with_every_error(tmp_path: Path) -> None:
    raw = tiny_raw(federation={"rouns": 3}, gan={"objective": "nope"})
    p = _write(tmp_path, raw)
    res = runner.invoke(app, ["run", str(p), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "federation.rouns: unknown key" in res.output
    assert "gan.objective: unknown objective 'nope'" in res.output
    assert not (tmp_path / "runs").exists(), "nothing was trained or written"


def test_bad_strategy_parameter_is_reported_before_training(tmp_path: Path) -> None:
    p = _write(tmp_path, tiny_raw(strategy={"name": "fedadam", "params": {"etta": 1}}))
    res = runner.invoke(app, ["run", str(p), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "strategy.params.etta" in res.output and "eta" in res.output
    assert not (tmp_path / "runs").exists()


def test_validate_and_scenarios(tmp_path: Path) -> None:
    good = _write(tmp_path, tiny_raw())
    bad = tmp_path / "bad.yaml"
    bad.write_text("gan: {batch_size: 0}\n")
    res = runner.invoke(app, ["validate", str(good), str(bad)])
    assert res.exit_code == 2
    assert "ok" in res.output and "gan.batch_size" in res.output
    listing = runner.invoke(app, ["scenarios"])
    assert listing.exit_code == 0 and "quickstart.yaml" in listing.output


def test_report_command_writes_html(tmp_path: Path) -> None:
    p = _write(tmp_path, tiny_raw(federation={"rounds": 1}))
    res = runner.invoke(app, ["run", str(p), "--out", str(tmp_path / "runs")])
    folder = Path(res.output.split("run folder:")[1].split()[0])
    rep = runner.invoke(app, ["report", str(folder)])
    assert rep.exit_code == 0, rep.output
    html = (folder / "report.html").read_text()
    assert 'id="fig-group-metrics"' in html and "data:image/png;base64," in html
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a run folder" in bad.output
