"""Garbage collection during a run's rounds: the heap from before the run frozen.

A full collection walks every tracked object of the process, and a simulator's process holds
torch, pandas, fairlearn and scikit-learn (~300,000 objects: ~0.15 s a collection here). Two
things went wrong with that heap in reach:

- Flower's strategies that free their inputs as they read them
  (`ArrayRecord.to_numpy_ndarrays(keep_input=False)`: `QFedAvg`, and so `quality_qfedavg`)
  call `gc.collect()` once per reply: 1.2 s a round for 5 clients against ~0.1 s for the rest
  (benchmarks/strategy_gc.py).
- The interpreter runs full collections only when the objects promoted since the last one
  reach a quarter of those it keeps, so cyclic garbage that reached the oldest generation
  waits for hundreds of rounds. Flower's records make such garbage every round: each read of
  `RecordDict.array_records` / `metric_records` builds a `_SyncedDict` that refers to itself
  (its bound `check_value`) and to the reply's records; one held long enough to be promoted
  pins a reply's arrays. +1.4 MB a quickstart round, 1.1 GB of RSS at its end, +570 MB for
  each further run in one process, 11 GB in a findings worker.

With the heap from before the run frozen (`gc.freeze`), every collection — Flower's, the
interpreter's — walks only the run's own objects (milliseconds), so they are cheap and come
often. Only objects from before the block are frozen, never a round's messages (an earlier
version froze the heap around each aggregation, and `gc.unfreeze()` then moved the live
replies into the oldest generation: the leak above).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def library_heap_frozen() -> Iterator[None]:
    """Run the block (a run's rounds) with the objects that exist before it — the libraries',
    the data, the caller's — frozen out of the collector's reach, and unfreeze them after.
    The young generations are collected first (their garbage is freed, not frozen). Nested
    use keeps the outer freeze."""
    if gc.get_freeze_count():  # an outer run (or the caller) froze the heap already
        yield
        return
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
