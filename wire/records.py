"""Flat `prefix.name → ndarray` dicts ↔ Flower records; the scenario in the run config; the
private state a node keeps in its context."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from fedgan.simulator import statecodec
from fedgan.simulator.scenario import Scenario
from fedgan.wire.flwr_internals import NUMPY_STYPE, fill_numpy_array
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord

RUN_CONFIG_KEY = "scenario"
"""run_config key holding the scenario as JSON (run_config only holds flat scalars)."""

PRIVATE_STATE = "private"
"""`context.state` key of a node's private arrays (what is not federated, optimizer moments).
An engine that keeps them elsewhere syncs them in around the ClientApp's handlers."""


# Flower's records as plain data in checkpoints (a strategy's `current_arrays`, a metrics
# record): arrays by key in record order, scalars and lists — never the class by module path.
statecodec.register(
    "flwr.ArrayRecord", ArrayRecord, lambda r: from_record(r), lambda d: to_record(d)
)
statecodec.register("flwr.Array", Array, lambda a: a.numpy(), lambda a: Array(np.asarray(a)))
statecodec.register("flwr.MetricRecord", MetricRecord, dict, MetricRecord)
statecodec.register("flwr.ConfigRecord", ConfigRecord, dict, ConfigRecord)


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
        a = np.asarray(ndarray)
        # What `Array.__init__` ends with on its (dtype, shape, stype, data) path — four fields
        # and a fresh object's dirty flag — without its argument parsing and per-field hooks,
        # which cost more than the copy (tested: the same bytes and object id as Flower's own
        # Array(ndarray), decoded the same).
        data = _npy_bytes(a)  # a copy: the caller may reuse its buffer
        shape = tuple(int(n) for n in a.shape)
        name, descr = _dtype_names(a.dtype)
        fill_numpy_array(self, name, shape, data)
        if isinstance(descr, str):
            # The values are the tail of the .npy bytes: a read-only view, no second copy.
            start = len(data) - a.nbytes
            self._decoded = np.frombuffer(data, a.dtype, offset=start).reshape(shape)
        else:  # a structured dtype: numpy wrote it
            self._decoded = np.array(a, order="C", copy=True)
            self._decoded.flags.writeable = False  # `values` hands it out to read

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


@functools.lru_cache(maxsize=256)
def _dtype_names(dtype: np.dtype) -> tuple[str, Any]:
    """(`str(dtype)`, as `Array` names it; its `.npy` descr) — cached: numpy builds both
    anew each call, a third of a small array's encoding."""
    return str(dtype), np.lib.format.dtype_to_descr(dtype)


def _npy_bytes(a: np.ndarray) -> bytes:
    """What `np.save` writes for C-ordered `a`; the header is cached per dtype and shape."""
    descr = _dtype_names(a.dtype)[1]
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
    """Writable copies of a record's arrays, by key."""
    return {k: np.array(values(v)) for k, v in record.items()}


def values(a: Array) -> np.ndarray:
    """An `Array`'s values to read, without a copy where possible: a `DecodedArray`'s own
    ndarray, or a read-only view into the `.npy` bytes of a NumPy-serialized one (what Flower's
    strategies return: `Array(ndarray)`), else `a.numpy()`. Do not write into the result.

    Why not `Array.numpy()`: it parses the bytes with `np.load` through a file object, ~25 µs
    an array, and the server reads every reply's arrays (the gate) and every round's
    aggregate (the next instruction) — thousands of small arrays a run."""
    if isinstance(a, DecodedArray):
        return a._decoded
    data = a.data
    if a.stype == NUMPY_STYPE and data[:6] == b"\x93NUMPY" and len(data) > 10:
        if data[6] == 1:
            start = 10 + int.from_bytes(data[8:10], "little")
        else:
            start = 12 + int.from_bytes(data[8:12], "little")
        parsed = _npy_header(bytes(data[:start]))
        if parsed is not None:
            dtype, shape = parsed
            return np.frombuffer(data, dtype=dtype, offset=start).reshape(shape)
    return a.numpy()


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """(dtype, shape) of a C-ordered numeric `.npy` header (numpy's own reader), or None for
    what `np.load` had better read (Fortran order, structured or object dtypes, version 3)."""
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            return None
    except ValueError:
        return None
    if fortran or dtype.hasobject or dtype.fields is not None:
        return None
    return dtype, tuple(shape)


def metric_record(values: Mapping[str, Any]) -> MetricRecord:
    """Scalars and lists of them. Every reply carries the same keys (Flower's strategies refuse
    replies whose keys differ), so an undefined value travels as NaN rather than missing."""
    return MetricRecord({k: v for k, v in values.items()})


_CACHE: dict[str, Scenario] = {}


SCENARIO_FILE_KEY = "scenario-file"
"""run_config key (`flwr run .`): the absolute path of the scenario YAML."""
OVERRIDES_KEY = "overrides"
"""run_config key (`flwr run .`): `key=value` overrides, separated by spaces (shell quoting)."""
OUT_KEY = "out"
"""run_config key (`flwr run .`): the absolute folder the run folder is made in."""


RUN_DIR_KEY = "run-dir"
"""run_config key with the absolute path of the run folder the server writes (and, under
privacy, where clients keep their withheld statistics: `clients.instrumentation`)."""


def scenario_from(run_config: Mapping[str, Any]) -> Scenario:
    """The scenario a run carries in its run_config (parsed once per process): the JSON the
    engines pass (`scenario`), or — started with `flwr run .` — the YAML file named by
    `scenario-file` with `overrides` (the same file for the ServerApp and every ClientApp)."""
    raw = run_config.get(RUN_CONFIG_KEY)
    if isinstance(raw, str) and raw:
        key = raw
    elif run_config.get(SCENARIO_FILE_KEY):
        key = json.dumps(
            [str(run_config[SCENARIO_FILE_KEY]), str(run_config.get(OVERRIDES_KEY, ""))]
        )
    else:
        raise KeyError(
            f"run_config has neither a {RUN_CONFIG_KEY!r} JSON string nor a "
            f"{SCENARIO_FILE_KEY!r} (flwr run . --run-config 'scenario-file=\"/abs/s.yaml\"')"
        )
    s = _CACHE.get(key)
    if s is None:
        s = Scenario.model_validate(json.loads(raw)) if key is raw else _from_file(run_config)
        _CACHE[key] = s
    return s


def _from_file(run_config: Mapping[str, Any]) -> Scenario:
    """`flwr run .`'s scenario. The apps run from the installed FAB, not from the user's
    folder, so every path must be absolute: the file (its `base:` files are then relative to
    it, as always) and any `file.py:Class` plug-in; a relative one is refused, named."""
    import shlex

    from fedgan.simulator.scenario import ScenarioError, load

    path = Path(str(run_config[SCENARIO_FILE_KEY]))
    if not path.is_absolute():
        raise ScenarioError(
            str(path),
            [
                f"{SCENARIO_FILE_KEY}: give an absolute path (the apps run from the installed "
                f"Flower App, not from the folder `flwr run` was called in), got {str(path)!r}"
            ],
        )
    s = load(path, shlex.split(str(run_config.get(OVERRIDES_KEY, ""))))
    relative = _relative_plugins(s.model_dump(mode="json"))
    if relative:
        raise ScenarioError(
            str(path),
            [
                f"{k}: a file.py plug-in under `flwr run .` needs an absolute path, got {v!r}"
                for k, v in relative
            ],
        )
    return s


def _relative_plugins(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(yaml path, spec) of every `file.py:attr` plug-in spec in the scenario that is relative."""
    if isinstance(node, dict):
        return [x for k, v in node.items() for x in _relative_plugins(v, f"{path}{k}.")]
    if isinstance(node, str) and ".py:" in node and not Path(node.split(":", 1)[0]).is_absolute():
        return [(path.rstrip("."), node)]
    return []


def load_private(context: Context) -> dict[str, np.ndarray] | None:
    """The node's private arrays (None before its first round)."""
    stored = context.state.get(PRIVATE_STATE)
    return from_record(stored) if isinstance(stored, ArrayRecord) else None


def store_private(context: Context, arrays: Mapping[str, np.ndarray]) -> None:
    """Keep `arrays` as the node's private state (a copy: nothing aliases the caller's)."""
    context.state[PRIVATE_STATE] = to_record(arrays) if arrays else ArrayRecord()
