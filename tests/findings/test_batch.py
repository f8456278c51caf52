"""The findings' run cache: an outcome kept as it finishes is read back, never rerun, and only
for the same resolved scenario."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fedgan.simulator.findings import batch, privacy_cost
from fedgan.simulator.findings.batch import Job, job_digest, run_jobs

TINY = (*privacy_cost.QUICK["user"], "privacy=null")


def test_cached_outcome_is_read_back_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    job = Job("privacy-user.yaml", (*TINY, "seed=0"), ("twin", 0), centralized=True)
    first = run_jobs([job], 1, tmp_path)[0]
    assert first.groups, "the tiny run evaluated per mode"
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert not list(tmp_path.glob("*.tmp")), "no half-written file is left"

    def rerun(_job: Job) -> batch.Outcome:
        raise AssertionError("a cached job was run again")

    monkeypatch.setattr(batch, "_one", rerun)
    again = run_jobs([Job(job.scenario, job.overrides, ("other key",), True)], 1, tmp_path)[0]
    assert again.key == ("other key",), "the caller's key, not the stored one"
    np.testing.assert_equal(again.summary, first.summary)
    np.testing.assert_equal(again.groups, first.groups)
    assert again.cpu_seconds == first.cpu_seconds


def test_digest_follows_the_resolved_scenario():
    base = Job("privacy-user.yaml", (*TINY, "seed=0"), (), centralized=True)
    assert job_digest(base) == job_digest(Job(base.scenario, base.overrides, ("k",), True))
    assert job_digest(base) != job_digest(Job(base.scenario, (*TINY, "seed=1"), (), True))
    assert job_digest(base) != job_digest(Job(base.scenario, base.overrides, (), False))
    # The same value written differently resolves to the same scenario: the same run.
    same = Job(base.scenario, (*TINY, "seed=0", "federation.rounds=4"), (), True)
    assert job_digest(same) == job_digest(base)


def test_a_pool_runs_only_what_the_cache_lacks_in_job_order(tmp_path: Path) -> None:
    """With processes, a cached outcome is read in the parent (a value no run can give comes
    back as stored) and the rest run in fresh workers; outcomes stay in job order."""
    import dataclasses
    import json

    cached = Job("privacy-user.yaml", (*TINY, "seed=0"), ("a",), centralized=True)
    fresh = Job("privacy-user.yaml", (*TINY, "seed=1"), ("b",), centralized=True)
    stored = batch.Outcome(("stored",), summary={"precision": -1.0})
    (tmp_path / f"{job_digest(cached)}.json").write_text(json.dumps(dataclasses.asdict(stored)))
    a, b = run_jobs([cached, fresh], 2, tmp_path)
    assert a.key == ("a",) and a.summary == {"precision": -1.0}
    assert b.key == ("b",) and b.groups and 0.0 <= b.summary["precision"] <= 1.0
    assert (tmp_path / f"{job_digest(fresh)}.json").is_file(), "the new run is kept too"
