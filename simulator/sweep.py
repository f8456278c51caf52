"""Parameter sweeps: every grid combination × seed as its own run, resumable, in parallel.

Layout of a sweep folder (`<out>/<scenario-name>-sweep-<stamp>/` unless named):

    sweep.json                                      manifest: grid, seeds, base, every combination
    summary.csv                                     one row per run: grid values, seed, headline
    federation.federate=generator,seed=3/           one folder per combination × seed
        done.json                                   written after the run returned: "finished"
        tiny/<stamp>-<id>/                          the run folder itself (RunStore layout)

A combination is *finished* when its `done.json` names a run folder that exists and whose
resolved scenario matches the combination; resuming skips those and reruns the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
from fedgan.simulator.scenario import Scenario, ScenarioError, validate
from fedgan.simulator.scenario import load as load_scenario
from fedgan.simulator.store import atomic_write_text, run_is_finished
from fedgan.simulator.summary import HEADLINE, headline

MANIFEST = "sweep.json"
SUMMARY = "summary.csv"
DONE = "done.json"
CLIENT_KEYS = ("worst_client", "worst_client_served")
SUMMARY_KEYS = [k for k, _ in HEADLINE] + ["modes_total", *CLIENT_KEYS]


class SweepError(ValueError):
    """A sweep that cannot start; `errors` lists every problem (nothing has run yet)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s):\n" + "\n".join(f"  - {e}" for e in errors))

    def __reduce__(self) -> tuple[type[SweepError], tuple[list[str]]]:
        return (SweepError, (self.errors,))


# ---- parsing (shared with the command line) ----------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """'0-4' → [0..4]; '0,2,5' → [0, 2, 5]; ranges and lists mix ('0-2,7'). Order kept, no dups."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise ValueError(f"seed range {part!r} runs backwards")
            seeds = list(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            seeds = [int(part)]
        else:
            raise ValueError(f"bad seeds {text!r}: expected e.g. 0-4 or 0,2,5")
        out += [s for s in seeds if s not in out]
    return out


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['key=v1,v2', ...] → {'key': [v1, v2]}, each value parsed as a YAML scalar."""
    from fedgan.simulator.yamlsafe import YAMLError, load_yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ValueError(f"bad --grid {item!r}: expected key=v1,v2")
        try:
            values = [load_yaml(v.strip(), f"--grid {key}") for v in raw.split(",")]
        except YAMLError as exc:
            raise ValueError(str(exc)) from None
        if key in grid:
            raise ValueError(f"--grid {key} is given twice")
        grid[key] = values
    return grid


# ---- combinations ------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A value as it appears in folder names: strings bare, the rest as JSON (true, 0.1)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _flat(key: str, value: Any) -> list[tuple[str, Any]]:
    """A mapping value as dotted (key, leaf) pairs, so folder names stay readable:
    strategy={name: agnostic, params: {step_size: 0.5}} → strategy.name=agnostic+
    strategy.params.step_size=0.5."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _flat(f"{key}.{k}", v)]
    return [(key, value)]


def _sanitize(name: str) -> str:
    # Keep the folder greppable and portable: only characters that need no shell quoting.
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)[:200]


@dataclass
class Combination:
    """One grid point with one seed."""

    values: dict[str, Any]
    seed: int
    folder: str = ""

    def __post_init__(self) -> None:
        if not self.folder:
            parts = [
                "+".join(f"{k}={_text(v)}" for k, v in _flat(key, value))
                for key, value in self.values.items()
            ]
            self.folder = _sanitize(",".join([*parts, f"seed={self.seed}"]))

    @property
    def overrides(self) -> list[str]:
        """The same settings as `fedgan run` overrides (JSON is valid YAML)."""
        return [f"{k}={json.dumps(v)}" for k, v in self.values.items()] + [f"seed={self.seed}"]


def combinations(grid: dict[str, list[Any]], seeds: list[int]) -> list[Combination]:
    """Every grid point × seed, in grid order with the seed varying fastest."""
    keys = list(grid)
    combos = [
        Combination(dict(zip(keys, vals, strict=True)), seed)
        for vals in product(*(grid[k] for k in keys))
        for seed in seeds
    ]
    seen: dict[str, int] = {}
    for c in combos:  # sanitizing may merge names ('a/b' and 'a_b'): keep folders distinct
        seen[c.folder] = seen.get(c.folder, 0) + 1
    for c in combos:
        if seen[c.folder] > 1:
            digest = hashlib.sha1(json.dumps(c.values, sort_keys=True).encode()).hexdigest()
            c.folder = f"{c.folder}-{digest[:6]}"
    return combos


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in a nested mapping, as `apply_overrides` does, without a YAML trip
    (a float like 1e-05 would come back from YAML 1.1 as a string)."""
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def scenario_digest(s: Scenario) -> str:
    """A fingerprint of a resolved scenario: a finished run is reused only if it matches."""
    return hashlib.sha256(s.to_json().encode()).hexdigest()[:16]


def _resolve(base: Scenario, combos: list[Combination], source: str) -> list[Scenario]:
    """Validate every combination before anything runs; raise SweepError listing the bad ones."""
    from fedgan.simulator.engines.runner import check_scenario  # imports Flower lazily

    raw = base.model_dump(mode="json")
    out: list[Scenario] = []
    errors: list[str] = []
    checked: dict[str, list[str]] = {}
    for c in combos:
        r = json.loads(json.dumps(raw))
        for k, v in c.values.items():
            _set(r, k, v)
        r["seed"] = c.seed
        try:
            s = validate(r, f"{source} [{c.folder}]")
            dumped = s.model_dump(mode="json")
            key = json.dumps([dumped["strategy"], dumped["federation"]], sort_keys=True)
            if key not in checked:  # the strategy check builds Flower objects: once per strategy
                checked[key] = check_scenario(s)
            if checked[key]:
                raise ScenarioError(f"{source} [{c.folder}]", checked[key])
        except ScenarioError as exc:
            errors += [f"{c.folder}: {e}" for e in exc.errors]
            continue
        out.append(s)
    if errors:
        raise SweepError(errors)
    return out


# ---- finished runs -----------------------------------------------------------------------------


def _finished_run(combo_dir: Path, digest: str) -> Path | None:
    """The combination's finished run folder, or None if it must (re)run."""
    marker = combo_dir / DONE
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            run = combo_dir / info["run"]
            if info.get("scenario") == digest and (run / "scenario.yaml").is_file():
                return run
        except (ValueError, KeyError, TypeError):
            pass
        return None
    # No marker: the process may have died between the end of the run and the marker.
    for scen in sorted(combo_dir.glob("*/*/scenario.yaml")):
        if run_is_finished(scen.parent) and _digest_of(scen.parent) == digest:
            _write_marker(combo_dir, scen.parent, digest)
            return scen.parent
    return None


def _digest_of(run_dir: Path) -> str | None:
    from fedgan.simulator.yamlsafe import load_yaml

    try:
        return scenario_digest(validate(load_yaml((run_dir / "scenario.yaml").read_text())))
    except (ScenarioError, ValueError, OSError):
        return None


def _write_marker(combo_dir: Path, run_dir: Path, digest: str) -> None:
    info = {
        "run": str(run_dir.relative_to(combo_dir)),
        "scenario": digest,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(combo_dir / DONE, json.dumps(info, indent=2) + "\n")


# ---- running -----------------------------------------------------------------------------------


def _worker_init() -> None:
    # One torch thread per process: N processes × several threads on few cores only spin.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _run_one(scenario: dict[str, Any], combo_dir: str) -> dict[str, Any]:
    """Run one combination into `combo_dir`; never raises (a failure is a result)."""
    from fedgan.simulator.api import run

    t0 = time.time()
    try:
        s = validate(scenario)
        result = run(s, out_dir=combo_dir)
        _write_marker(Path(combo_dir), result.path, scenario_digest(s))
        return {
            "status": "done",
            "run": str(result.path.relative_to(combo_dir)),
            "seconds": round(time.time() - t0, 2),
        }
    except Exception as exc:  # noqa: BLE001 - one bad run must not end the sweep
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),  # whole, no locals (as a run's error.txt)
            "seconds": round(time.time() - t0, 2),
        }


@dataclass
class SweepResult:
    """A sweep folder, its manifest entries (one per combination × seed) and summary table."""

    path: Path
    entries: list[dict[str, Any]]
    summary: pd.DataFrame
    ran: list[str] = field(default_factory=list)
    """Folders of the combinations run by this call (the others were already finished)."""

    @property
    def failed(self) -> list[str]:
        return [e["folder"] for e in self.entries if e["status"] == "failed"]

    def run_dirs(self) -> list[Path]:
        """Run folders of the finished combinations, in manifest order."""
        return [self.path / e["folder"] / e["run"] for e in self.entries if e["status"] == "done"]


def _write_manifest(
    path: Path, base: str, grid: dict[str, list[Any]], seeds: list[int], entries: list[dict]
) -> None:
    data = {
        "base": base,
        "grid": grid,
        "seeds": seeds,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "combinations": entries,
    }
    atomic_write_text(path / MANIFEST, json.dumps(data, indent=2, default=str) + "\n")


def read_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    """The parsed `sweep.json` of a sweep folder."""
    p = Path(sweep_dir) / MANIFEST
    if not p.is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder (no {MANIFEST})")
    data: dict[str, Any] = json.loads(p.read_text())
    return data


def summary_table(sweep_dir: Path, entries: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per combination × seed: grid values, seed, status and headline metrics."""
    from fedgan.simulator.store import load_run

    rows = []
    for e in entries:
        row: dict[str, Any] = {**e["values"], "seed": e["seed"], "status": e["status"]}
        if e["status"] == "done":
            h = headline(load_run(sweep_dir / e["folder"] / e["run"]).metrics)
            row.update({k: h[k] for k in SUMMARY_KEYS if k in h})
        row["run"] = str(Path(e["folder"]) / e["run"]) if e.get("run") else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _sweep_folder(
    scenario: Scenario, out_dir: str | Path, sweep_dir: str | Path | None, name: str | None
) -> Path:
    """The sweep's folder: `sweep_dir`, else out_dir/`name` (a chosen name: running the same
    command again resumes), else a fresh out_dir/<scenario>-sweep-<stamp>."""
    if sweep_dir is not None:
        return Path(sweep_dir)
    if name is not None:
        return Path(out_dir) / name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(out_dir) / f"{scenario.name}-sweep-{stamp}"
    n = 2
    while path.exists():  # two sweeps in one second: never resume the other
        path = Path(out_dir) / f"{scenario.name}-sweep-{stamp}-{n}"
        n += 1
    return path


def _resumed_grid(
    path: Path, manifest: dict[str, Any], grid: dict[str, list[Any]], seeds: list[int] | None
) -> tuple[dict[str, list[Any]], list[int]]:
    """The grid and seeds of a sweep being resumed: sweep.json's, unless given again — then
    they must be the same (a different grid is a different sweep: refused, nothing changes)."""
    old_grid: dict[str, list[Any]] = manifest.get("grid", {})
    old_seeds: list[int] = list(manifest.get("seeds", []))
    problems = []
    if grid and json.dumps(grid, sort_keys=True, default=str) != json.dumps(
        old_grid, sort_keys=True, default=str
    ):
        problems.append(
            f"--grid {_grid_text(grid)} differs from this sweep's grid {_grid_text(old_grid)} "
            f"({path / MANIFEST}); resume without --grid, or start a new sweep (--name)"
        )
    if seeds is not None and list(seeds) != old_seeds:
        problems.append(
            f"--seeds {list(seeds)} differ from this sweep's seeds {old_seeds}; resume without "
            "--seeds, or start a new sweep (--name)"
        )
    if problems:
        raise SweepError(problems)
    return (grid or old_grid), (list(seeds) if seeds is not None else old_seeds)


def _grid_text(grid: dict[str, list[Any]]) -> str:
    return " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items()) or "(none)"


def sweep(
    base: str | Path | Scenario,
    grid: dict[str, list[Any]],
    seeds: list[int] | None = None,
    out_dir: str | Path = "runs",
    jobs: int = 1,
    sweep_dir: str | Path | None = None,
    name: str | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run `base` for every grid combination × seed, each in its own folder under one sweep
    folder; combinations already finished there are skipped (resume by passing `sweep_dir`).

    Every combination is validated first: any bad one raises SweepError and nothing runs.
    A run that fails is recorded as failed in the manifest and the sweep goes on.
    """
    if isinstance(base, Scenario):
        scenario, source = base, base.name
    else:
        scenario, source = load_scenario(base), str(base)
    path = _sweep_folder(scenario, out_dir, sweep_dir, name)
    old: dict[str, dict[str, Any]] = {}
    if (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        old = {e["folder"]: e for e in manifest["combinations"]}
        grid, seeds = _resumed_grid(path, manifest, grid, seeds)
    elif path.is_dir() and any(path.iterdir()):
        raise SweepError([f"{path} exists and is not a sweep folder (no {MANIFEST})"])
    problems = [f"{k}: no values" for k, v in grid.items() if not v]
    if "seed" in grid:
        problems.append("seed: give seeds with `seeds` (--seeds), not in the grid")
    seeds = list(seeds) if seeds else [scenario.seed]
    if jobs < 1:
        problems.append(f"jobs must be ≥ 1, got {jobs}")
    if problems:
        raise SweepError(problems)
    combos = combinations(grid, seeds)
    resolved = _resolve(scenario, combos, source)
    path.mkdir(parents=True, exist_ok=True)

    entries: list[dict[str, Any]] = []
    todo: list[tuple[dict[str, Any], Scenario]] = []
    for c, s in zip(combos, resolved, strict=True):
        entry: dict[str, Any] = {
            "folder": c.folder,
            "values": c.values,
            "seed": c.seed,
            "overrides": c.overrides,
            "scenario": scenario_digest(s),
        }
        run = _finished_run(path / c.folder, entry["scenario"])
        if run is not None:
            # What a finished combination recorded (its time, say) is kept as it was.
            entry = {**old.get(c.folder, {}), **entry}
            entry.update(status="done", run=str(run.relative_to(path / c.folder)))
        else:
            entry.update(status="pending", run="")
            todo.append((entry, s))
        entries.append(entry)
    # Combinations of an earlier call on this folder that the current grid lacks stay listed,
    # so a narrower resume never hides finished runs from `compare` or the summary.
    current = {e["folder"] for e in entries}
    entries += [e for f, e in old.items() if f not in current]
    base_text = str(Path(base).resolve()) if not isinstance(base, Scenario) else source
    _write_manifest(path, base_text, grid, seeds, entries)

    def finish(entry: dict[str, Any], outcome: dict[str, Any]) -> None:
        entry.update(status=outcome["status"], run=outcome.get("run", ""))
        entry["seconds"] = outcome.get("seconds")
        entry.pop("error", None)
        if outcome["status"] == "failed":
            entry["error"] = outcome.get("error", "")
            atomic_write_text(path / entry["folder"] / "error.txt", outcome.get("traceback", ""))
        _write_manifest(path, base_text, grid, seeds, entries)  # progress survives a kill
        if on_done is not None:
            on_done(entry)

    for entry, _ in todo:
        # The folder holds only an unfinished attempt (or nothing): start it clean, so each
        # combination folder ends with exactly one run.
        shutil.rmtree(path / entry["folder"], ignore_errors=True)
        (path / entry["folder"]).mkdir(parents=True)
    if jobs == 1 or len(todo) <= 1:
        for entry, s in todo:
            finish(entry, _run_one(s.model_dump(mode="json"), str(path / entry["folder"])))
    else:
        ctx = get_context("spawn")  # fork after torch/Flower started threads can deadlock
        # One process per run: its memory is surely returned when it ends (a findings worker
        # reused for dozens of runs grew to 11 GB before server/heap.py's fix; what a plug-in
        # keeps could grow the same way).
        with ProcessPoolExecutor(
            min(jobs, len(todo)), ctx, initializer=_worker_init, max_tasks_per_child=1
        ) as pool:
            futures: dict[Future[dict[str, Any]], dict[str, Any]] = {
                pool.submit(_run_one, s.model_dump(mode="json"), str(path / e["folder"])): e
                for e, s in todo
            }
            for fut in as_completed(futures):  # record each run as soon as it ends
                entry = futures[fut]
                try:
                    outcome = fut.result()
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                    outcome = {"status": "failed", "error": f"worker process died: {exc}"}
                finish(entry, outcome)

    summary = summary_table(path, entries)
    atomic_write_text(path / SUMMARY, summary.to_csv(index=False))
    return SweepResult(path, entries, summary, ran=[e["folder"] for e, _ in todo])
