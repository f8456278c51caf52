"""Flat `prefix.name → ndarray` dicts ↔ Flower records; the scenario in the run config; the
private state a node keeps in its context."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Context, MetricRecord
from flwr.common.constant import SType

from simulator.scenario import Scenario

RUN_CONFIG_KEY = "scenario"
"""run_config key holding the scenario as JSON (run_config only holds flat scalars)."""

PRIVATE_STATE = "private"
"""`context.state` key of a node's private arrays (what is not federated, optimizer moments).
An engine that keeps them elsewhere syncs them in around the ClientApp's handlers."""


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    # np.require, not np.ascontiguousarray: the latter turns 0-d arrays (an optimizer's step
    # counter) into shape (1,), so a state would not come back with the shapes it left with.
    return ArrayRecord(
        array_dict={k: Array(np.require(v, requirements="C")) for k, v in arrays.items()}
    )


class DecodedArray(Array):
    """A Flower `Array` (the same bytes as `Array(ndarray)`) that keeps the ndarray it was made
    from: a reader in the same process gets a copy of it from `numpy()` instead of parsing the
    bytes with `np.load`. The vectorized engine's replies are made of these, so the server's
    aggregation (any strategy) skips a thousand decodings per round and gets identical arrays.
    """

    _decoded: np.ndarray

    def __init__(self, ndarray: np.ndarray) -> None:
        a = np.array(ndarray, order="C", copy=True)  # the caller may reuse its buffer
        # What `Array.__init__` ends with on its (dtype, shape, stype, data) path — four fields
        # and a fresh object's dirty flag — without its argument parsing and per-field hooks,
        # which cost more than the copy (tested: the same bytes and object id as Flower's own
        # Array(ndarray), decoded the same).
        self.__dict__.update(
            dtype=str(a.dtype),
            shape=tuple(int(n) for n in a.shape),
            stype=SType.NUMPY,
            data=_npy_bytes(a),
            _is_dirty=True,
            _decoded=a,
        )

    def numpy(self) -> np.ndarray:
        return self._decoded.copy()

    def deflate(self) -> bytes:
        # Serialized (and so identified) as the plain Array it equals: Flower's object header
        # names the class, and whoever inflates it elsewhere knows only `Array`.
        return Array(self.dtype, self.shape, self.stype, self.data).deflate()


@functools.lru_cache(maxsize=4096)
def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _npy_bytes(a: np.ndarray) -> bytes:
    """What `np.save` writes for C-ordered `a`; the header is cached per dtype and shape."""
    descr = np.lib.format.dtype_to_descr(a.dtype)
    if isinstance(descr, str):
        return _header(descr, tuple(a.shape)) + a.tobytes()
    buf = io.BytesIO()  # a structured dtype: leave it to numpy
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def to_decoded_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """`to_record` made of `DecodedArray`s: for replies that stay in this process."""
    record = ArrayRecord()
    for k, v in arrays.items():  # item by item: ArrayRecord(array_dict=...) re-makes each Array
        record[k] = DecodedArray(v)
    return record


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


def load_private(context: Context) -> dict[str, np.ndarray] | None:
    """The node's private arrays (None before its first round)."""
    stored = context.state.get(PRIVATE_STATE)
    return from_record(stored) if isinstance(stored, ArrayRecord) else None


def store_private(context: Context, arrays: Mapping[str, np.ndarray]) -> None:
    """Keep `arrays` as the node's private state (a copy: nothing aliases the caller's)."""
    context.state[PRIVATE_STATE] = to_record(arrays) if arrays else ArrayRecord()
