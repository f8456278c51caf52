"""Run many scenario variants in worker processes; keep the last evaluation of each run."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent.parent / "scenarios" / "findings"
TOTALS = ("fed.bytes_down", "fed.bytes_up")
"""Per-round rows an outcome keeps as run totals (where a protocol writes them)."""


@dataclass(frozen=True)
class Job:
    """One run: a scenario file (under scenarios/findings/ unless absolute) with overrides."""

    scenario: str
    overrides: tuple[str, ...]
    key: tuple[object, ...]
    """What the caller groups by (e.g. (method, dataset, seed))."""
    centralized: bool = False
    """Run the scenario's matched centralized twin (`fedgan run --centralized`)."""


@dataclass
class Outcome:
    """The last evaluation of a run: whole-population metrics and per-mode metrics.

    `groups[metric][mode]`, e.g. groups["recall"]["0"]; empty when the generator diverged
    (then `diverged` is True and `summary` lacks the evaluation metrics).
    """

    key: tuple[object, ...]
    summary: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    diverged: bool = False
    seconds: float = math.nan
    cpu_seconds: float = math.nan
    """CPU time of the worker process (one torch thread): the run's cost whatever the load."""
    error: str = ""
    totals: dict[str, float] = field(default_factory=dict)
    """Per-round global rows summed over the run, for the metrics in `TOTALS` that it wrote."""

    def get(self, metric: str) -> float:
        return self.summary.get(metric, math.nan)

    @property
    def bytes(self) -> float:
        """Bytes that travelled (down + up) over the run; NaN where the run wrote no
        `fed.bytes_*` rows."""
        if not any(k in self.totals for k in TOTALS):
            return math.nan
        return sum(self.totals.get(k, 0.0) for k in TOTALS)

    def group(self, metric: str, mode: str) -> float:
        return self.groups.get(metric, {}).get(mode, math.nan)


def _one(job: Job) -> Outcome:
    import time

    import torch
    from fedgan.simulator.api import run
    from fedgan.simulator.summary import headline, main_scope

    torch.set_num_threads(1)  # tiny models: threads only contend on the shared cores
    path = Path(job.scenario)
    path = path if path.is_absolute() else SCENARIOS / path
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="fedgan-findings-") as tmp:
        try:
            res = run(path, list(job.overrides), out_dir=tmp, centralized=job.centralized)
        except (FloatingPointError, RuntimeError) as exc:
            # A run whose networks went non-finite (e.g. f-GAN KL's exp(v) overflowing) can
            # fail before the evaluation notices; for a finding that is an outcome, not a crash.
            return Outcome(
                job.key,
                diverged=True,
                seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0,
                error=f"{type(exc).__name__}: {exc}",
            )
        m = res.metrics
    out = Outcome(job.key, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
    per_round = m[(m["scope"] == "global") & m["metric"].isin(TOTALS)]
    out.totals = {str(k): float(v) for k, v in per_round.groupby("metric")["value"].sum().items()}
    out.diverged = bool((m["metric"] == "diverged").any())
    out.summary = headline(m)
    scope = main_scope(m)
    rows = m[(m["scope"] == scope) & (m["group_by"] == "mode") & (m["group"] != "")]
    if len(rows):
        rows = rows[rows["round"] == rows["round"].max()]
        for r in rows.itertuples():
            out.groups.setdefault(str(r.metric), {}).setdefault(str(r.group), float(r.value))
    return out


def job_digest(job: Job) -> str:
    """What a cached outcome is valid for: the resolved scenario (file, `base:` chain and
    overrides, as `fedgan validate` reads them) and whether it runs the twin. The code that runs
    it is not part of the digest: clear the cache when the code changes what a run measures."""
    import hashlib
    import json

    from fedgan.simulator.scenario import load

    path = Path(job.scenario)
    path = path if path.is_absolute() else SCENARIOS / path
    scenario = load(path, list(job.overrides))
    text = json.dumps([scenario.to_json(), job.centralized])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_cached(job: Job, cache: Path) -> Outcome | None:
    """The outcome an earlier run of `job` left in `cache`, or None (nothing runs)."""
    return _read(job, cache / f"{job_digest(job)}.json")


def _read(job: Job, file: Path) -> Outcome | None:
    import json

    if not file.exists():
        return None
    stored = json.loads(file.read_text())
    stored.pop("key", None)
    return Outcome(job.key, **stored)


def _cached(job: Job, cache: Path | None) -> Outcome:
    """`_one`, reading the outcome from `cache` where an earlier run of the same resolved
    scenario left it, and leaving it there when it runs (written whole, then renamed: an
    interrupted write leaves no half file)."""
    import dataclasses
    import json
    import os

    if cache is None:
        return _one(job)
    file = cache / f"{job_digest(job)}.json"
    hit = _read(job, file)
    if hit is not None:
        return hit
    out = _one(job)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(out), default=str))
    tmp.replace(file)
    return out


def run_jobs(jobs: Sequence[Job], n_jobs: int = 2, cache: Path | None = None) -> list[Outcome]:
    """Run every job (n_jobs processes, one torch thread each); outcomes in job order.

    With `cache` (a folder), each outcome is kept there as it finishes and read back instead
    of rerun: a sweep longer than a sitting resumes where it stopped (`python -m
    fedgan.simulator.findings.item11 --cache DIR`).
    """
    from functools import partial

    one = partial(_cached, cache=cache)
    if n_jobs <= 1:
        return [one(j) for j in jobs]
    # What the cache holds is read here, not in a worker: a resumed sweep starts no process
    # for a finished run.
    kept = [read_cached(j, cache) if cache is not None else None for j in jobs]
    todo = [j for j, o in zip(jobs, kept, strict=True) if o is None]
    # A fresh process per run: a run's memory is surely returned when its process ends. A
    # worker reused for dozens of runs grew to 9–11 GB of RSS in item 12's sweep (24 GB
    # machine, thrashing) — the round's replies pinned in the oldest gc generation, fixed in
    # server/heap.py — and whatever a plug-in keeps is kept no longer than its run. Starting
    # one costs a few seconds against runs of minutes.
    with ProcessPoolExecutor(n_jobs, max_tasks_per_child=1) as pool:
        ran = iter(pool.map(one, todo))
        return [o if o is not None else next(ran) for o in kept]
