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
