"""Sweeps: one folder per combination × seed, overrides applied, resumable, validated first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fedgan.simulator.api as simulator_api
import pandas as pd
import pytest
import yaml
from fedgan.simulator.cli import app
from fedgan.simulator.sweep import SweepError, parse_grid, parse_seeds, sweep
from typer.testing import CliRunner

from tests.conftest import tiny_raw

runner = CliRunner()
GRID = {"federation.federate": ["both", "generator"]}


def _base(tmp_path: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(tiny_raw(federation={"rounds": 1})))
    return p


def _scenario(run_dir: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((run_dir / "scenario.yaml").read_text()))


def test_parse_seeds_and_grid() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("3, 0-1,1") == [3, 0, 1]
    for bad in ("4-2", "a", "1,,2", "-1"):
        with pytest.raises(ValueError):
            parse_seeds(bad)
    grid = parse_grid(["gan.g_opt.lr=0.1,1e-3", "x.flag=true,off", "strategy.name=fedavg"])
    assert grid == {
        "gan.g_opt.lr": [0.1, "1e-3"],  # YAML 1.1: a float needs a dot, as in the scenario files
        "x.flag": [True, False],
        "strategy.name": ["fedavg"],
    }
    with pytest.raises(ValueError):
        parse_grid(["novalue="])


def test_one_folder_per_combination_with_overrides_and_resume(tmp_path: Path) -> None:
    res = sweep(_base(tmp_path), GRID, [0, 1], out_dir=tmp_path / "runs", name="sw")
    folders = [
        "federation.federate=both,seed=0",
        "federation.federate=both,seed=1",
        "federation.federate=generator,seed=0",
        "federation.federate=generator,seed=1",
    ]
    assert res.path == tmp_path / "runs" / "sw"
    assert res.ran == folders and res.failed == []
    for folder, run_dir in zip(folders, res.run_dirs(), strict=True):
        assert run_dir.parent.parent == res.path / folder
        s = _scenario(run_dir)
        assert s["federation"]["federate"] == folder.split(",")[0].split("=")[1]
        assert s["seed"] == int(folder[-1])
        assert s["federation"]["rounds"] == 1  # the base is kept where the grid says nothing
    manifest = json.loads((res.path / "sweep.json").read_text())
    assert manifest["grid"] == GRID and manifest["seeds"] == [0, 1]
    assert [e["folder"] for e in manifest["combinations"]] == folders
    summary = pd.read_csv(res.path / "summary.csv")
    assert list(summary["seed"]) == [0, 1, 0, 1]
    assert list(summary["federation.federate"]) == ["both", "both", "generator", "generator"]
    assert {"recall", "coverage", "coverage.group_min", "worst_client_served"} <= set(summary)

    stamps = {p: p.stat().st_mtime_ns for p in res.run_dirs()}
    # An interrupted run: no marker, and its events never say run_finished.
    victim = res.path / folders[2]
    (victim / "done.json").unlink()
    events = next(victim.glob("*/*/events.jsonl"))
    events.write_text(
        "".join(x + "\n" for x in events.read_text().splitlines() if "run_finished" not in x)
    )
    # A finished run whose marker was lost (killed right after the run): adopted, not rerun.
    (res.path / folders[0] / "done.json").unlink()

    again = sweep(_base(tmp_path), GRID, [0, 1], sweep_dir=res.path)
    assert again.ran == [folders[2]]
    assert (res.path / folders[0] / "done.json").is_file()
    after = again.run_dirs()
    for before in stamps:
        if folders[2] in str(before):
            assert not before.exists(), "the unfinished attempt is replaced, not kept beside"
        else:
            assert before in after and before.stat().st_mtime_ns == stamps[before]
    assert len(list(victim.glob("*/*/scenario.yaml"))) == 1


def test_failed_run_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = simulator_api.run

    def flaky(s: Any, *args: Any, **kwargs: Any) -> Any:
        if s.seed == 1:
            raise RuntimeError("boom")
        return real(s, *args, **kwargs)

    monkeypatch.setattr(simulator_api, "run", flaky)
    res = sweep(_base(tmp_path), {"federation.federate": ["both"]}, [0, 1], out_dir=tmp_path)
    assert res.failed == ["federation.federate=both,seed=1"]
    entry = json.loads((res.path / "sweep.json").read_text())["combinations"][1]
    assert entry["status"] == "failed" and "boom" in entry["error"]
    assert "RuntimeError" in (res.path / entry["folder"] / "error.txt").read_text()
    assert list(res.summary["status"]) == ["done", "failed"]

    monkeypatch.setattr(simulator_api, "run", real)
    again = sweep(_base(tmp_path), {"federation.federate": ["both"]}, [0, 1], sweep_dir=res.path)
    assert again.ran == ["federation.federate=both,seed=1"] and again.failed == []


def test_parallel_jobs(tmp_path: Path) -> None:
    res = sweep(_base(tmp_path), {"federation.federate": ["generator"]}, [0, 1], tmp_path, jobs=2)
    assert res.failed == [] and len(res.run_dirs()) == 2
    assert [_scenario(d)["seed"] for d in res.run_dirs()] == [0, 1]


def test_changed_base_is_not_mistaken_for_finished(tmp_path: Path) -> None:
    res = sweep(_base(tmp_path), {"federation.federate": ["both"]}, [0], tmp_path)
    other = sweep(_base(tmp_path), {"federation.federate": ["both"]}, [0], tmp_path)
    assert other.path != res.path and other.ran, "a new sweep, even in the same second"
    p = tmp_path / "s2.yaml"
    p.write_text(yaml.safe_dump(tiny_raw(federation={"rounds": 1, "local_steps": 2})))
    again = sweep(p, {"federation.federate": ["both"]}, [0], sweep_dir=res.path)
    assert again.ran == ["federation.federate=both,seed=0"], "another scenario: rerun"


def test_bad_combination_exits_2_before_anything_runs(tmp_path: Path) -> None:
    base = _base(tmp_path)
    out = tmp_path / "runs"
    res = runner.invoke(
        app,
        ["sweep", str(base), "--grid", "federation.rouns=1,2", "--seeds", "0-1", "--out", str(out)],
    )
    assert res.exit_code == 2, res.output
    assert "federation.rouns=1,seed=0" in res.output and "unknown key" in res.output
    assert not out.exists()
    with pytest.raises(SweepError, match="seed"):
        sweep(base, {"seed": [1, 2]}, [0], out)
    bad_seeds = runner.invoke(app, ["sweep", str(base), "--seeds", "x", "--out", str(out)])
    assert bad_seeds.exit_code == 2 and not out.exists()


def test_cli_sweep_then_resume(tmp_path: Path) -> None:
    base = _base(tmp_path)
    out = tmp_path / "runs"
    args = ["sweep", str(base), "--grid", "federation.federate=both", "--seeds", "0,2"]
    res = runner.invoke(app, [*args, "--out", str(out), "--name", "cli"])
    assert res.exit_code == 0, res.output
    assert "2 run(s) this time, 0 already finished" in res.output
    assert "sweep summary" in res.output
    again = runner.invoke(app, [*args, "--resume", str(out / "cli")])
    assert again.exit_code == 0, again.output
    assert "0 run(s) this time, 2 already finished" in again.output
    missing = runner.invoke(app, [*args, "--resume", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_resume_without_grid_takes_grid_and_seeds_from_sweep_json(tmp_path: Path) -> None:
    base = _base(tmp_path)
    out = tmp_path / "runs"
    grid = ["--grid", "strategy.name=fedavg,fedmedian"]
    first = runner.invoke(app, ["sweep", str(base), *grid, "--seeds", "1,2", "--out", str(out),
                                "--name", "sw"])
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "sw" / "sweep.json").read_text())
    before = {e["folder"]: e for e in manifest["combinations"]}
    again = runner.invoke(app, ["sweep", "--resume", str(out / "sw")])  # no scenario, no grid
    assert again.exit_code == 0, again.output
    assert "0 run(s) this time, 4 already finished" in again.output
    after = json.loads((out / "sw" / "sweep.json").read_text())
    assert after["grid"] == {"strategy.name": ["fedavg", "fedmedian"]}
    assert after["seeds"] == [1, 2]
    for e in after["combinations"]:  # finished combinations' records are untouched
        assert {k: e[k] for k in ("run", "status", "seconds")} == {
            k: before[e["folder"]][k] for k in ("run", "status", "seconds")
        }
    assert not any(e["seed"] == 0 for e in after["combinations"]), "no stray seed=0 run"
    summary = pd.read_csv(out / "sw" / "summary.csv")
    assert "strategy.name" in summary.columns and len(summary) == 4
    conflict = runner.invoke(app, ["sweep", "--resume", str(out / "sw"), "--grid",
                                   "strategy.name=fedavg"])
    assert conflict.exit_code == 2 and "differs from this sweep's grid" in conflict.output
    assert json.loads((out / "sw" / "sweep.json").read_text()) == after, "nothing rewritten"
