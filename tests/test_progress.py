"""Progress passed in: every round reaches the caller's hook, from the run folder's progress
file, whichever process writes it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from fedgan.simulator.centralized import run_centralized
from fedgan.simulator.engines.runner import resume_federated, run_federated
from fedgan.simulator.progress import PROGRESS_FILE, Progress, ProgressLog, watching
from fedgan.simulator.scenario import Scenario

from tests.conftest import tiny, tiny_raw


def test_every_round_reaches_the_hook_with_its_evaluation(tmp_path: Path) -> None:
    s = tiny(federation={"rounds": 3, "local_steps": 2}, evaluation={"every": 2})
    seen: list[Progress] = []
    res = run_federated(s, tmp_path, progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    assert [bool(p.summary) for p in seen] == [False, True, True]  # rounds 2 and 3 evaluate
    recall = res.metrics.query("scope == 'global' and metric == 'recall' and group == ''")
    assert [p.summary["recall"] for p in seen[1:]] == recall.sort_values("round")["value"].tolist()
    lines = (res.path / PROGRESS_FILE).read_text().splitlines()
    assert [Progress.from_line(x) for x in lines] == seen


def test_no_module_level_hooks_are_left_behind(tmp_path: Path) -> None:
    import fedgan.server.loop as server_loop

    assert not any(isinstance(v, list) for k, v in vars(server_loop).items() if k.isupper())
    first: list[Progress] = []
    run_federated(tiny(federation={"rounds": 1}), tmp_path / "a", progress=first.append)
    again = run_federated(tiny(federation={"rounds": 1}), tmp_path / "b")  # no hook: fine
    assert len(first) == 1 and (again.path / PROGRESS_FILE).is_file()


def test_a_resumed_run_reports_only_the_rounds_it_plays(tmp_path: Path) -> None:
    from tests.server.test_resume import _start_and_stop, killer

    s = tiny(federation={"rounds": 3, "local_steps": 2}, evaluation={"every": 2})
    # 4 train messages a round: the 9th is round 3's first, after the round-2 checkpoint.
    path = _start_and_stop(s, tmp_path, killer("train", 9))
    before = (path / PROGRESS_FILE).read_text().splitlines()
    assert [Progress.from_line(x).done for x in before] == [1, 2]
    seen: list[Progress] = []
    resume_federated(path, progress=seen.append)
    assert [p.done for p in seen] == [3] and seen[0].summary


def test_watching_follows_another_process(tmp_path: Path) -> None:
    ProgressLog(tmp_path)(Progress(1, 9))  # before the watch: skipped
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fedgan.simulator.progress import Progress, ProgressLog\n"
        "log = ProgressLog(Path(sys.argv[1]))\n"
        "for r in range(2, 6):\n"
        "    log(Progress(r, 9, {'recall': r / 10}))\n"
        "    time.sleep(0.3)\n"
    )
    seen: list[Progress] = []
    with watching(tmp_path, seen.append, poll_s=0.05):
        proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=Path.cwd())
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen, "a line written by the other process arrived while it ran"
        assert proc.wait(timeout=60) == 0
    assert [p.done for p in seen] == [2, 3, 4, 5]
    assert seen[-1].summary == {"recall": 0.5}


def test_a_torn_or_foreign_line_is_skipped(tmp_path: Path) -> None:
    seen: list[Progress] = []
    with watching(tmp_path, seen.append, poll_s=0.05), open(tmp_path / PROGRESS_FILE, "a") as f:
        f.write("not json\n" + Progress(3, 4).line() + "\n" + '{"done": 4')  # torn tail
    assert seen == [Progress(3, 4)]


def test_centralized_runs_report_each_evaluation(tmp_path: Path) -> None:
    raw = tiny_raw(train={"steps": 4}, evaluation={"every": 2, "n_samples": 100})
    raw.pop("federation")
    seen: list[Progress] = []
    res = run_centralized(Scenario.model_validate(raw), tmp_path, progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(2, 4), (4, 4)]
    recall = res.metrics.query("metric == 'recall' and group == ''").sort_values("round")
    assert pd.Series([p.summary["recall"] for p in seen]).tolist() == recall["value"].tolist()
