"""Garbage collection around a Flower strategy's aggregation.

Flower's strategies that free their inputs as they read them
(`ArrayRecord.to_numpy_ndarrays(keep_input=False)`: `QFedAvg`, and so `quality_qfedavg`) call
`gc.collect()` once per reply and once for the global arrays. A full collection walks every
tracked object of the process, and a simulator's process holds torch, pandas, fairlearn and
scikit-learn: measured 0.2 s a collection here, 1.2 s a round for 5 clients against ~0.1 s for
the rest of the round (benchmarks/strategy_gc.py). What those calls are there to free is what
the aggregation itself just dropped — young objects — so inside the block `gc.collect()`
collects the young generations only (0 and 1: what was allocated since the last young
collection), for Flower's records and a plug-in strategy alike; the interpreter's own
automatic collections are not calls to it and are untouched.

Why not `gc.freeze()` around the block (the first version): on exit `gc.unfreeze()` puts every
object that existed before the block into the oldest generation — the round's replies
included, alive while they are aggregated. Each reply is read through Flower's
`RecordDict.array_records` / `metric_records`, which build a `_SyncedDict` that refers to
itself (its bound `check_value`) and to the reply's records; once such a cycle sits in the
oldest generation, only a full collection frees it and the arrays it holds, and a process
holding torch and pandas runs one rarely. It pinned the round's replies — every client's
arrays: +1.4 MB a quickstart round, 1.1 GB of RSS at the end of the quickstart, +570 MB for
each further run in the same process, 11 GB in a findings worker
(tests/server/test_heap.py counts the arrays alive over the rounds).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_FULL = gc.collect


def _young(generation: int = 2) -> int:
    """`gc.collect` inside the block: generations 0 and 1 at most."""
    return _FULL(min(generation, 1))


@contextmanager
def young_heap_only() -> Iterator[None]:
    """Run the block with `gc.collect()` collecting only the young generations (what the
    block allocated since the last young collection). Nothing is moved between generations.
    Nested use keeps the outer block's swap."""
    if gc.collect is _young:  # an outer block swapped it already
        yield
        return
    gc.collect = _young
    try:
        yield
    finally:
        gc.collect = _FULL


@contextmanager
def library_heap_frozen() -> Iterator[None]:
    """Run the block (a run's rounds) with the objects that exist before it — the libraries'
    (torch, pandas, fairlearn: ~300,000 tracked objects), the data, the caller's — frozen out
    of the collector's reach (`gc.freeze`), and unfreeze them after.

    Why: the interpreter's full collections walk every tracked object, ~0.15 s each here, so
    it runs them only when the objects promoted since the last one reach a quarter of those
    it keeps; in between, cyclic garbage that reached the oldest generation waits. Flower's
    records make such garbage every round (see the module docstring: a `_SyncedDict` that a
    round held long enough to be promoted pins a reply's arrays), and in a process with a big
    heap it waited for hundreds of rounds. With the old heap frozen, a full collection walks
    only the run's own objects (milliseconds) and so comes often: the pinned replies go
    within a few rounds, and the cross-device engine's gc pauses (2 of 0.16 s in 30 rounds)
    shrink. Only objects from before the block are frozen — never a round's messages — and
    the young generations are collected first. Nested use keeps the outer freeze."""
    if gc.get_freeze_count():  # an outer run (or the caller) froze the heap already
        yield
        return
    _FULL(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
