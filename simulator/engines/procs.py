"""Processes by parent links in /proc: what an engine started, found and stopped by PID.

Ray and Flower start helper processes in sessions of their own, so a process group does not
hold them; they are found through their parents (Linux /proc; elsewhere nothing is found).
A process is named by (pid, start time), since a pid alone may be reused by an unrelated one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

ProcKey = tuple[int, str]
"""(pid, start time): a pid alone may be reused by an unrelated process."""


def stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent pid, start time) of `pid` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    return fields[0], int(fields[1]), fields[19]


def alive(proc: ProcKey) -> bool:
    """Whether `proc` still runs (the same start time, and not a zombie)."""
    st = stat(proc[0])
    return st is not None and st[2] == proc[1] and st[0] != "Z"  # a zombie has freed it all


def descendants(root: int, keep: Callable[[int], bool] | None = None) -> set[ProcKey]:
    """Live descendants of `root` (those `keep(pid)` accepts, if given)."""
    if not sys.platform.startswith("linux"):
        return set()
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := stat(int(entry.name))) is not None:
            info[int(entry.name)] = st
            children.setdefault(st[1], []).append(int(entry.name))
    out: set[ProcKey] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if info[pid][0] != "Z" and (keep is None or keep(pid)):
            out.add((pid, info[pid][2]))
    return out


def wait_gone(procs: set[ProcKey], timeout: float) -> set[ProcKey]:
    """Wait up to `timeout` s for `procs` to exit; those still alive."""
    deadline = time.monotonic() + timeout
    left = {p for p in procs if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left
