"""The run folder: resolved scenario, environment, tidy metrics, events, samples, checkpoints.

Every file is written atomically (temporary file + rename), table by table after each
evaluation, so an interrupted run keeps every completed evaluation readable and a crash never
leaves a half-written table behind.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["round", "scope", "client", "group_by", "group", "metric", "value", "n"]
ERROR_FILE = "error.txt"
"""The traceback of a run that failed (beside a `run_failed` event); a sweep reads it too."""
"""Tidy metrics table: one row per (round, scope, client, grouping, group, metric).

scope: 'global' | 'client' | 'centralized'; client: partition id or -1; group_by/group: the
group column and value ('' for whole-population rows); n: the number of points behind it."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600 (private, whatever the umask): give it the permissions
        # every other file of the run folder gets, as open() would have made it.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask: read from /proc (Linux), else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("torch", "numpy", "pandas", "fairlearn", "scikit-learn", "flwr", "fedgan"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


class _Appended:
    """A table that only grows (rows appended in order), written whole at every flush without
    formatting again the rows written before: their CSV text and frame are kept, and a flush
    formats only the rows added since. A 400-round run's metrics (30,000 rows) are written 9
    times; rebuilding the frame and its CSV each time was ~0.5 s of the quickstart's 22 s.
    The text and frame are those of the whole table made at once (tests/test_store.py)."""

    def __init__(self, columns: list[str] | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.columns = columns
        self._frames: list[pd.DataFrame] = []
        self._text: list[str] = []
        self._done = 0

    def _catch_up(self) -> None:
        if self._done == len(self.rows):
            return
        new = pd.DataFrame(self.rows[self._done :], columns=self.columns)
        if self._frames and (
            list(new.columns) != list(self._frames[0].columns)
            or not new.dtypes.equals(self._frames[0].dtypes)
        ):
            # Columns or types the earlier rows did not have: made whole again, as pandas
            # would make it at once.
            new = pd.DataFrame(self.rows, columns=self.columns)
            self._frames, self._text = [], []
        self._text.append(new.to_csv(index=False, header=not self._frames))
        self._frames.append(new)
        self._done = len(self.rows)

    def frame(self) -> pd.DataFrame:
        """The whole table (a new frame: the caller may change it)."""
        self._catch_up()
        if not self._frames:
            return pd.DataFrame(self.rows, columns=self.columns)
        return pd.concat(self._frames, ignore_index=True)

    def csv(self) -> str:
        """`frame().to_csv(index=False)`, formatting only the rows added since the last call."""
        self._catch_up()
        if not self._frames:
            return pd.DataFrame(self.rows, columns=self.columns).to_csv(index=False)
        return "".join(self._text)


class RunStore:
    """Writer of one run folder `<out>/<scenario-name>/<YYYYmmdd-HHMMSS>-<id>/`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._metrics = _Appended(METRIC_COLUMNS)
        self._timings = _Appended()
        self._diagnoses: list[dict[str, Any]] = []

    @classmethod
    def create(
        cls, out_dir: str | Path, name: str, scenario_yaml: str, env: dict[str, Any]
    ) -> RunStore:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = Path(out_dir) / name / f"{stamp}-{secrets.token_hex(3)}"
        path.mkdir(parents=True, exist_ok=False)
        store = cls(path)
        atomic_write_text(path / "scenario.yaml", scenario_yaml)
        atomic_write_text(
            path / "env.json", json.dumps({**env, "versions": _versions()}, indent=2, default=str)
        )
        return store

    def reopen(self, last_round: int) -> int:
        """Take up the tables already in the folder, keeping only rounds ≤ `last_round`, and
        rewrite them (resume: rows of later rounds may have been written before a kill); the
        events of those later rounds go too, since they are played again. Returns how many
        events were dropped."""
        dropped = self._drop_events_after(last_round)
        metrics = self.path / "metrics.parquet"
        if metrics.is_file():
            df = pd.read_parquet(metrics)
            self.add_metrics(df[df["round"] <= last_round].to_dict("records"), flush=False)
        for name, rows in (
            ("timings.csv", self._timings.rows),
            ("diagnosis.csv", self._diagnoses),
        ):
            p = self.path / name
            if p.is_file() and p.stat().st_size:
                df = pd.read_csv(p, keep_default_na=False)
                rows.extend(df[df["round"] <= last_round].to_dict("records"))
        self.flush()
        if self._diagnoses:
            atomic_write_text(
                self.path / "diagnosis.csv", pd.DataFrame(self._diagnoses).to_csv(index=False)
            )
        # A table whose every row was of a later round: as if never written.
        for name, rows in (("timings.csv", self._timings.rows), ("diagnosis.csv", self._diagnoses)):
            if not rows:
                (self.path / name).unlink(missing_ok=True)
        return dropped

    def _drop_events_after(self, last_round: int) -> int:
        """Rewrite events.jsonl without the events of rounds > `last_round` (atomically)."""
        p = self.path / "events.jsonl"
        if not p.is_file():
            return 0
        lines = p.read_text(encoding="utf-8").splitlines()
        keep = [ln for ln in lines if not _after(ln, last_round)]
        if len(keep) != len(lines):
            atomic_write_text(p, "".join(ln + "\n" for ln in keep))
        return len(lines) - len(keep)

    # ---- tables ------------------------------------------------------------------------------
    def add_metrics(self, rows: Iterable[dict[str, Any]], flush: bool = True) -> None:
        """Append tidy rows (missing columns get defaults); with `flush`, rewrite the tables.

        Rewriting is O(table size): per-round rows of a long federated run are added with
        flush=False and written at the next evaluation (or `flush()` at the end).
        """
        for r in rows:
            self._metrics.rows.append(
                {
                    "round": int(r["round"]),
                    "scope": r.get("scope", "global"),
                    "client": int(r.get("client", -1)),
                    "group_by": r.get("group_by", ""),
                    "group": str(r.get("group", "")),
                    "metric": r["metric"],
                    "value": float(r["value"]),
                    "n": int(r.get("n", 0)),
                }
            )
        if flush:
            self.flush()

    def flush(self) -> None:
        """Rewrite metrics (CSV + Parquet) and timings atomically from what was added."""
        atomic_write_text(self.path / "metrics.csv", self._metrics.csv())
        tmp = self.path / ".metrics.parquet.tmp"
        self._metrics.frame().to_parquet(tmp, index=False)
        os.replace(tmp, self.path / "metrics.parquet")
        if self._timings.rows:
            atomic_write_text(self.path / "timings.csv", self._timings.csv())

    def metrics(self) -> pd.DataFrame:
        return self._metrics.frame()

    def add_timings(self, rows: Iterable[dict[str, Any]]) -> None:
        """Wall times live here, never in the (deterministic) metrics table; written with the
        metrics at the next `flush()`."""
        self._timings.rows.extend(rows)

    def add_diagnosis(self, row: dict[str, Any]) -> None:
        self._diagnoses.append(row)
        atomic_write_text(
            self.path / "diagnosis.csv", pd.DataFrame(self._diagnoses).to_csv(index=False)
        )

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        atomic_write_text(self.path / name, df.to_csv(index=False))

    def event(self, kind: str, **fields: Any) -> None:
        """Append one JSON line to events.jsonl (failures, warnings, notes)."""
        line = json.dumps({"time": time.time(), "kind": kind, **fields}, default=str)
        with open(self.path / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record_failure(self, exc: BaseException, round_: int, phase: str) -> None:
        """The run died of `exc` in `phase` of round (or step) `round_`: the whole traceback
        (no locals: they can be huge and hold data) goes to error.txt, and a `run_failed`
        event says where. Everything written before stays as it was."""
        text = "".join(traceback.format_exception(exc))
        atomic_write_text(self.path / ERROR_FILE, text)
        self.event("run_failed", round=round_, phase=phase, error=f"{type(exc).__name__}: {exc}")

    # ---- arrays ------------------------------------------------------------------------------
    def save_samples(self, round_: int, x: np.ndarray) -> Path:
        p = self.path / "samples" / f"round-{round_:06d}.npy"
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_suffix(".tmp.npy")
        np.save(tmp, x)
        os.replace(tmp, p)
        return p

    def save_checkpoint(self, round_: int, arrays: dict[str, np.ndarray]) -> Path:
        p = self.path / "checkpoints" / f"round-{round_:06d}.npz"
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)
        return p


@dataclass
class Run:
    """A finished (or interrupted) run folder, loaded for inspection."""

    path: Path
    scenario: dict[str, Any]
    metrics: pd.DataFrame
    events: list[dict[str, Any]]

    def latest(self, scope: str | None = None) -> pd.DataFrame:
        """Rows of the last evaluated round (optionally one scope)."""
        df = self.metrics if scope is None else self.metrics[self.metrics["scope"] == scope]
        return df[df["round"] == df["round"].max()] if len(df) else df


def round_files(folder: Path, suffix: str) -> dict[int, Path]:
    """{round: file} of a run folder's `round-<r><suffix>` files (`samples/`, `.npy`;
    `checkpoints/`, `.npz`), stray temporary files of an interrupted write left out."""
    out: dict[int, Path] = {}
    for p in sorted(folder.glob(f"round-*{suffix}")):
        try:
            out[int(p.name[len("round-") : -len(suffix)])] = p
        except ValueError:
            continue  # "round-000004.tmp.npz": a write that never finished
    return out


def load_run(path: str | Path) -> Run:
    """Load a run folder written by RunStore."""
    from fedgan.simulator.yamlsafe import load_yaml

    p = Path(path)
    if not (p / "scenario.yaml").is_file():
        raise FileNotFoundError(f"{p} is not a run folder (no scenario.yaml)")
    scenario = load_yaml((p / "scenario.yaml").read_text(), str(p / "scenario.yaml"))
    if (p / "metrics.parquet").is_file():
        metrics = pd.read_parquet(p / "metrics.parquet")
    else:
        metrics = pd.DataFrame(columns=METRIC_COLUMNS)
    events = []
    if (p / "events.jsonl").is_file():
        for line in (p / "events.jsonl").read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return Run(path=p, scenario=scenario, metrics=metrics, events=events)


def _after(line: str, last_round: int) -> bool:
    """Whether an events.jsonl line is an event of a round after `last_round`."""
    try:
        r = json.loads(line).get("round")
    except ValueError:
        return False  # a torn last line: keep it, it is a log
    return isinstance(r, int) and r > last_round


def run_is_finished(run_dir: Path) -> bool:
    """A run folder whose run completed: `run_finished` in its events (federated), or a last
    centralized evaluation at `train.steps` (or a recorded divergence, which ends the run)."""
    try:
        run = load_run(run_dir)
    except (FileNotFoundError, ValueError):
        return False
    federation = run.scenario.get("federation")
    if federation is not None:
        # The last run_finished counts, and only for the rounds the scenario now has: a run
        # extended with `--resume ... federation.rounds=N` is unfinished until it gets there.
        ends = [e for e in run.events if e.get("kind") == "run_finished"]
        return bool(ends) and ends[-1].get("rounds") == federation.get("rounds")
    if len(run.metrics):
        if any(e.get("kind") == "generator_diverged" for e in run.events):
            return True
        steps = int(run.scenario.get("train", {}).get("steps", -1))
        return int(run.metrics["round"].max()) >= steps
    return False
