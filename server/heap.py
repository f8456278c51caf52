"""Garbage collection around a Flower strategy's aggregation.

Flower's strategies that free their inputs as they read them
(`ArrayRecord.to_numpy_ndarrays(keep_input=False)`: `QFedAvg`, and so `quality_qfedavg`) call
`gc.collect()` once per reply and once for the global arrays. A full collection walks every
tracked object of the process, and a simulator's process holds torch, pandas, fairlearn and
scikit-learn: measured 0.2 s a collection here, 1.2 s a round for 5 clients against ~0.1 s for
the rest of the round (benchmarks/strategy_gc.py). No library offers a scoped collection, so
this module freezes the heap that exists before the aggregation (`gc.freeze`, O(1)): a
collection inside then walks only what the aggregation allocated, which is what Flower's call
is there to free.

Before freezing, the young generations are collected (`gc.collect(1)`: they hold only what was
allocated since the last young collection, a few thousand objects). Without that, the round's
young cyclic garbage is frozen too, and on exit it lands in the oldest generation, which a
process holding torch and pandas collects rarely. Such garbage is every round: each read of
`RecordDict.array_records` (or `metric_records`) makes a `_SyncedDict` that refers to itself
(its bound `check_value`) and to the reply's content, so it pinned the round's replies — the
arrays of every client — until a full collection: +1.4 MB a quickstart round, 1.1 GB of RSS
at the end of the quickstart, +570 MB for each further run in the same process (a findings
worker reached 11 GB). With the young collection the process stays at ~0.5 GB
(tests/server/test_heap.py checks the replies do not outlive their round).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def young_heap_only() -> Iterator[None]:
    """Run the block with the objects that exist before it frozen out of `gc.collect()`.

    The young generations are collected first, so that young cyclic garbage is freed now
    rather than frozen and then unfrozen into the oldest generation (collected only by a rare
    full collection). Frozen objects are still freed by reference counting; on exit they are
    unfrozen into the oldest generation, so cyclic garbage among them is collected later.
    Nested use keeps the outer freeze (only the outermost block unfreezes).
    """
    if gc.get_freeze_count():  # an outer block froze the heap already
        yield
        return
    gc.collect(1)  # the young garbage is freed now, not frozen into the oldest generation
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
