"""The reply gate: every client reply is checked before any strategy sees it.

Checks: no error, the expected metrics, a partition id that matches the node, optionally a
bound on the reply's array bytes, exactly the expected arrays (keys, shapes, finite values) and
optionally a bound on the update's distance from the global model. Bad replies are dropped and
reported as events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fedgan.simulator.messages import ARRAYS, METRICS, PARTITION_ID, TRAIN, TRAIN_REPLY_KEYS
from fedgan.wire.records import values as array_values
from flwr.app import ArrayRecord, Message, MetricRecord


@dataclass
class GateResult:
    """Replies that passed, sorted by partition id, and the reasons others were dropped."""

    accepted: list[tuple[int, Message]] = field(default_factory=list)
    dropped: list[tuple[int, str, str]] = field(default_factory=list)
    """(partition id, kind, detail) — kind: client_error | client_diverged | bad_reply |
    reply_too_large | update_too_far."""

    def messages(self) -> list[Message]:
        return [m for _, m in self.accepted]


def check_replies(
    replies: list[Message],
    partition_of: dict[int, int],
    expected: dict[str, tuple[int, ...]] | None,
    required_metrics: tuple[str, ...] = TRAIN_REPLY_KEYS,
    *,
    reference: dict[str, np.ndarray] | None = None,
    max_update_norm: float | None = None,
    max_reply_bytes: int | None = None,
) -> GateResult:
    """Check replies. `partition_of`: node id → partition id; `expected`: array key → shape
    (None when no arrays are expected, e.g. evaluation replies); `reference`: the global
    arrays the update is measured from (needed for `max_update_norm`; only the arrays it names
    count towards the norm)."""
    if max_update_norm is not None and reference is None:
        raise ValueError("max_update_norm needs the reference (global) arrays")
    bounds = _Bounds(reference, max_update_norm, max_reply_bytes)
    out = GateResult()
    for msg in replies:
        pid = partition_of.get(msg.metadata.src_node_id, -1)
        kind, detail = _problem(msg, pid, expected, required_metrics, bounds)
        if kind:
            out.dropped.append((pid, kind, detail))
        else:
            out.accepted.append((pid, msg))
    out.accepted.sort(key=lambda t: t[0])
    return out


def all_finite(values: np.ndarray) -> bool:
    """`np.isfinite(values).all()`, without its boolean temporary where it can: a sum is
    finite when every value is (NaN and ±inf propagate); only a non-finite sum (a NaN, an
    infinity, or finite values whose sum overflows) is checked value by value."""
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the expected case
        return bool(np.isfinite(values.sum()) or np.isfinite(values).all())


@dataclass(frozen=True)
class _Bounds:
    reference: dict[str, np.ndarray] | None = None
    max_update_norm: float | None = None
    max_reply_bytes: int | None = None


def _problem(
    msg: Message,
    pid: int,
    expected: dict[str, tuple[int, ...]] | None,
    required: tuple[str, ...],
    bounds: _Bounds,
) -> tuple[str, str]:
    if msg.has_error():
        return "client_error", f"code {msg.error.code}: {msg.error.reason}"
    content = msg.content
    metrics = content.get(METRICS)
    if not isinstance(metrics, MetricRecord):
        return "bad_reply", f"no MetricRecord {METRICS!r}"
    missing = [k for k in required if k not in metrics]
    if missing:
        return "bad_reply", f"metrics lack {missing}"
    if PARTITION_ID in metrics and int(metrics[PARTITION_ID]) != pid:  # type: ignore[arg-type]
        return "bad_reply", f"echoed partition id {metrics[PARTITION_ID]} != {pid}"
    if expected is None:
        return "", ""
    arrays = content.get(ARRAYS)
    if not isinstance(arrays, ArrayRecord):
        return "bad_reply", f"no ArrayRecord {ARRAYS!r}"
    if bounds.max_reply_bytes is not None:
        # Counted on the serialized buffers, before anything is decoded into memory.
        size = sum(len(arrays[k].data) for k in arrays)
        if size > bounds.max_reply_bytes:
            return (
                "reply_too_large",
                f"{size} array bytes > max_reply_bytes {bounds.max_reply_bytes}",
            )
    keys = set(arrays.keys())
    if keys != set(expected):
        extra, lack = sorted(keys - set(expected)), sorted(set(expected) - keys)
        return "bad_reply", f"unexpected arrays {extra}, missing {lack}"
    sq = 0.0
    for k, shape in expected.items():
        a = arrays[k]
        if tuple(a.shape) != tuple(shape):
            return "bad_reply", f"{k} has shape {tuple(a.shape)}, expected {tuple(shape)}"
        values = array_values(a)  # read only: no copy
        if not all_finite(values):
            return "client_diverged", f"{k} holds non-finite values"
        # Only the arrays the reference names count (a server-held generator bounds the
        # answer, not a critic that travels beside it on a swap).
        if bounds.max_update_norm is not None and bounds.reference is not None:
            if k not in bounds.reference:
                continue
            diff = values.astype(np.float64) - bounds.reference[k].astype(np.float64)
            sq += float(np.sum(diff * diff))
    # After the finite check: a NaN update is divergence, not a far-away update.
    if bounds.max_update_norm is not None and np.sqrt(sq) > bounds.max_update_norm:
        measured = [k for k in expected if k in bounds.reference]  # type: ignore[operator]
        return "update_too_far", (
            f"‖reply − reference‖₂ over {len(measured)} array(s) ({measured[0]}, ...) = "
            f"{np.sqrt(sq):.4g} > max_update_norm {bounds.max_update_norm}"
        )
    for k, v in metrics.items():
        if k.startswith(TRAIN) and not np.all(np.isfinite(v)):
            return "client_diverged", f"training statistic {k} = {v}"
    return "", ""
