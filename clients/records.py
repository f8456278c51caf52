"""Conversions between flat `prefix.name → ndarray` dicts and Flower records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord

from simulator.scenario import Scenario

RUN_CONFIG_KEY = "scenario"
"""run_config key holding the scenario as JSON (run_config only holds flat scalars)."""


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    # np.require, not np.ascontiguousarray: the latter turns 0-d arrays (an optimizer's step
    # counter) into shape (1,), so a state would not come back with the shapes it left with.
    return ArrayRecord(
        array_dict={k: Array(np.require(v, requirements="C")) for k, v in arrays.items()}
    )


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def metric_record(values: Mapping[str, Any]) -> MetricRecord:
    """Scalars and lists of them. Every reply carries the same keys (Flower's strategies refuse
    replies whose keys differ), so an undefined value travels as NaN rather than missing."""
    return MetricRecord({k: v for k, v in values.items()})


_CACHE: dict[str, Scenario] = {}


def scenario_from(run_config: Mapping[str, Any]) -> Scenario:
    """The scenario a run carries in its run_config (parsed once per process)."""
    raw = run_config.get(RUN_CONFIG_KEY)
    if not isinstance(raw, str):
        raise KeyError(f"run_config has no {RUN_CONFIG_KEY!r} JSON string")
    s = _CACHE.get(raw)
    if s is None:
        s = Scenario.model_validate(json.loads(raw))
        _CACHE[raw] = s
    return s
