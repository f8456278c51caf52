"""Progress of a run, one JSON line per round (or evaluation) in the run folder's progress file.

The run writes the lines (`ProgressLog`), whoever watches reads them (`watching`): the same
file works when the ServerApp runs in this process, in a Ray worker or on a SuperLink, so the
command line shows the same progress on every engine. Lines are advisory: written and
flushed, not fsync'd (the metrics table is the record).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROGRESS_FILE = "progress.jsonl"


@dataclass(frozen=True)
class Progress:
    """One finished round (federated) or evaluation (centralized: `done` generator steps) of
    `total`, with the headline numbers of its evaluation (empty when it evaluated nothing)."""

    done: int
    total: int
    summary: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        return json.dumps({"done": self.done, "total": self.total, "summary": self.summary})

    @classmethod
    def from_line(cls, line: str) -> Progress:
        raw = json.loads(line)
        summary = {str(k): float(v) for k, v in raw.get("summary", {}).items()}
        return cls(int(raw["done"]), int(raw["total"]), summary)


ProgressHook = Callable[[Progress], None]
"""What a watcher does with each line (e.g. move a progress bar)."""


class ProgressLog:
    """Appends progress lines to `run_dir`'s progress file; passes each to `hook` too (an
    in-process watcher that needs no file)."""

    def __init__(self, run_dir: Path, hook: ProgressHook | None = None) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self.hook = hook

    def __call__(self, p: Progress) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(p.line() + "\n")
        if self.hook is not None:
            self.hook(p)


def _read_new(path: Path, offset: int, hook: ProgressHook) -> int:
    """Call `hook` on every complete line after byte `offset`; the offset after them."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
    for raw in data[:end].splitlines():
        try:
            p = Progress.from_line(raw.decode("utf-8"))
        except (ValueError, KeyError, TypeError):
            continue  # not a progress line (or blank): progress is advisory, never fatal
        hook(p)
    return offset + end


@contextlib.contextmanager
def watching(run_dir: Path, hook: ProgressHook | None, poll_s: float = 0.2) -> Iterator[None]:
    """While the block runs, call `hook` with every progress line the run appends to
    `run_dir` (from any process); the lines of the block's last moments are read on exit.
    Lines already in the file (a resumed run's earlier rounds) are skipped."""
    if hook is None:
        yield
        return
    path = Path(run_dir) / PROGRESS_FILE
    start = path.stat().st_size if path.is_file() else 0
    stop = threading.Event()
    state = {"offset": start}

    def follow() -> None:
        while not stop.wait(poll_s):
            state["offset"] = _read_new(path, state["offset"], hook)

    thread = threading.Thread(target=follow, name="fedgan-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _read_new(path, state["offset"], hook)
