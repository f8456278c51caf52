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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def young_heap_only() -> Iterator[None]:
    """Run the block with the objects that exist before it frozen out of `gc.collect()`.

    Frozen objects are still freed by reference counting; on exit they are unfrozen into the
    oldest generation, so cyclic garbage among them is collected later and nothing leaks.
    Nested use keeps the outer freeze (only the outermost block unfreezes).
    """
    if gc.get_freeze_count():  # an outer block froze the heap already
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
