"""The command line on the first day: `--version`, a quick `--help`, run folders found from a
scenario's folder of runs, whole paths, integer counts, one permission for every file of a
run folder, own data run and resumed from anywhere, overrides that rename a component."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from fedgan.simulator.cli import BUNDLED, app
from typer.testing import CliRunner

from tests.conftest import tiny_raw, write_table

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _write(folder: Path, raw: dict, name: str = "s.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scenario's folder of runs holding one finished one-round run, under a 022 umask."""
    out = tmp_path_factory.mktemp("cli") / "runs"
    p = _write(out.parent, tiny_raw(federation={"rounds": 1}))
    old = os.umask(0o022)
    try:
        res = runner.invoke(app, ["run", str(p), "--out", str(out)])
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    return out / "tiny"


def test_version_names_the_installed_package() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.split() == ["fedgan", metadata.version("fedgan")]


def test_help_and_version_import_nothing_heavy() -> None:
    """`fedgan --help` and `--version` answer at once: torch (1 s), flwr, pandas, fairlearn
    and scikit-learn are imported by the commands that use them, not by the CLI module."""
    code = "import sys, simulator.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split())
    assert not loaded & {"torch", "flwr", "pandas", "fairlearn", "sklearn", "scipy"}


def test_inspect_and_report_take_a_folder_of_runs_and_name_the_latest(runs: Path) -> None:
    (only,) = [p for p in runs.iterdir() if p.is_dir()]
    older = runs / "20000101-000000-aaaaaa"  # a run folder named as if started in 2000
    shutil.copytree(only, older)
    res = runner.invoke(app, ["inspect", str(runs), "--by", "metric"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"{runs}: its latest run of 2, {only}" in text
    report = runner.invoke(app, ["report", str(runs)])
    assert report.exit_code == 0, report.output
    assert (only / "report.html").is_file() and not (older / "report.html").exists()
    shutil.rmtree(older)
    nothing = runner.invoke(app, ["inspect", str(runs.parent)])
    assert nothing.exit_code == 2 and "not a run folder" in nothing.output


@pytest.mark.parametrize("columns", ["50", "80", "160"])
def test_scenarios_prints_whole_paths(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    """Every bundled scenario's path, whole (as `run` takes it), at any terminal width."""
    monkeypatch.chdir(ROOT)
    res = runner.invoke(app, ["scenarios"], env={"COLUMNS": columns})
    assert res.exit_code == 0, res.output
    for p in BUNDLED.rglob("*.yaml"):
        assert str(p.relative_to(ROOT)) in res.output, p


def test_compare_prints_counts_as_integers_and_no_spread_for_one_seed(runs: Path) -> None:
    res = runner.invoke(app, ["compare", str(runs), "--metrics", "recall,modes_captured"])
    assert res.exit_code == 0, res.output
    assert "one run each" in res.output and "over seeds" not in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("tiny"))
    recall, modes = row.split()[2:4]
    assert "." in recall and modes.isdigit(), row  # 0.123 and 3, not 3.000
    assert "±" not in row


def test_every_file_of_a_run_folder_has_the_umasks_permissions(runs: Path) -> None:
    """metrics.csv, partition.csv, scenario.yaml and report.html were 0600 (mkstemp's) while
    the rest were 0644: every file now gets what the umask gives."""
    (folder,) = [p for p in runs.iterdir() if p.is_dir()]
    old = os.umask(0o022)  # as in the fixture's run
    try:
        assert runner.invoke(app, ["report", str(folder)]).exit_code == 0
    finally:
        os.umask(old)
    files = [f for f in folder.rglob("*") if f.is_file()]
    modes = {str(f.relative_to(folder)): f.stat().st_mode & 0o777 for f in files}
    assert {"metrics.csv", "partition.csv", "scenario.yaml", "report.html"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes  # 0o666 under a 022 umask


def test_a_failed_run_leaves_no_progress_line_after_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_rule.py").write_text(
        "from flwr.serverapp.strategy import FedAvg\n\n\n"
        "class Broken(FedAvg):\n"
        "    def aggregate_train(self, server_round, replies):\n"
        "        raise KeyError('boom')\n"
    )
    monkeypatch.chdir(tmp_path)
    p = _write(tmp_path, tiny_raw(strategy={"name": "broken_rule.py:Broken"}))
    res = runner.invoke(app, ["run", str(p), "--out", "runs"])
    assert res.exit_code == 1
    after = res.output.split("the run failed")[1]
    assert "starting" not in after and "0/2" not in after, res.output


def test_validate_takes_a_renamed_partitioner_with_its_own_params(tmp_path: Path) -> None:
    """On main, `partition.name=dirichlet` kept explicit's `assign`, which dirichlet refused."""
    raw = tiny_raw(partition={"name": "explicit", "params": {"assign": {0: [0]}, "rest": "iid"}})
    p = _write(tmp_path, raw)
    for overrides in (
        ["partition.name=dirichlet", "partition.params.alpha=0.3"],
        ["partition.params.alpha=0.3", "partition.name=dirichlet"],
    ):
        res = runner.invoke(app, ["validate", str(p), *overrides])
        assert res.exit_code == 0, res.output


def test_own_data_runs_and_resumes_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 500-row CSV beside its scenario, named relatively and without n_samples: run from
    another folder, then extended with --resume from a third."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    write_table(project / "data" / "t.csv")
    raw = tiny_raw(
        name="own",
        data={"dataset": "table", "params": {"path": "data/t.csv", "groups": ["sex", "region"]}},
        gan={"lr_schedule": "constant"},  # so the run can be extended
        partition={"name": "iid", "params": {}, "n_clients": 2},
        federation={"rounds": 1},
    )
    del raw["data"]["n_samples"]
    scenario = _write(project, raw)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    res = runner.invoke(app, ["run", str(scenario), "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "runs" / "own").iterdir()
    stored = yaml.safe_load((folder / "scenario.yaml").read_text())
    assert stored["data"]["params"]["path"] == str(project / "data" / "t.csv")
    assert stored["data"]["n_samples"] is None
    monkeypatch.chdir(tmp_path / "b")
    more = runner.invoke(app, ["run", "--resume", str(folder), "federation.rounds=2"])
    assert more.exit_code == 0, more.output
    progress = [json.loads(x) for x in (folder / "progress.jsonl").read_text().splitlines()]
    assert max(p["done"] for p in progress) == 2


def test_validate_imports_neither_torch_nor_the_metrics() -> None:
    """`fedgan validate` makes every check `run` makes — the data at full size, the partition,
    the strategy built, a server-held protocol's checks — without torch (a second to import)
    or fairlearn: the quickstart answers in under a second. Scikit-learn only where the data
    are its digits."""
    code = (
        "import sys\n"
        "from fedgan.simulator.cli import app\n"
        "try:\n"
        "    app(['validate', *sys.argv[1:]])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "heavy = ('torch', 'fairlearn', 'sklearn', 'scipy')\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )

    def heavy_after(files: list[Path]) -> set[str]:
        args = [str(f.relative_to(ROOT)) for f in files]
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("ok ") == len(files), done.stdout
        return set(done.stdout.splitlines()[-1].split())

    bundled = sorted(BUNDLED.rglob("*.yaml"))
    digits = [f for f in bundled if "digits" in f.read_text()]
    # σ calibrated to a target ε before training: the accountant (dp-accounting) uses scipy.
    calibrated = [f for f in bundled if "target_epsilon" in f.read_text() and f not in digits]
    assert heavy_after([BUNDLED / "quickstart.yaml"]) == set()
    assert heavy_after([f for f in bundled if f not in digits + calibrated]) == set()
    assert heavy_after(digits) <= {"sklearn", "scipy"}
    assert calibrated and heavy_after(calibrated) <= {"scipy"}


def test_compare_and_sweep_cells() -> None:
    from fedgan.simulator.cli import _mean_std

    nan = float("nan")
    assert _mean_std("modes_captured", 6.0, nan) == "6"  # one run: a count, no spread
    assert _mean_std("groups_kept", 6.0, 0.0) == "6 ± 0.0"
    assert _mean_std("modes_captured", 6.5, 0.7071) == "6.5 ± 0.7"  # seeds disagree
    assert _mean_std("recall", 0.5, nan) == "0.500"
    assert _mean_std("recall", 0.5, 0.25) == "0.500 ± 0.250"
    assert _mean_std("recall", nan, nan) == "n/a"


def test_a_bad_out_folder_or_option_is_bad_input(tmp_path: Path) -> None:
    """Exit 2 and a sentence — not a failed run's traceback — for a `--out` that cannot hold
    run folders and an option out of range."""
    p = _write(tmp_path, tiny_raw(federation={"rounds": 1}))
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "runs"
    for args in (
        ["run", str(p), "--out", str(out)],
        ["sweep", str(p), "--seeds", "0", "--out", str(out)],
        ["run", str(p), "--threads", "-1"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert "--out" in runner.invoke(app, ["run", str(p), "--out", str(out)]).output
