"""`library_heap_frozen`: during a run's rounds collections walk only what the run made (the
heap from before it frozen, never a round's messages), nothing stays frozen after, and a run's
replies do not outlive their rounds."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import yaml
from fedgan.server.heap import library_heap_frozen

from tests.conftest import tiny_raw


class Node:
    """A container gc tracks, that can be part of a reference cycle."""

    other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    """An unreachable two-node cycle (refcounting cannot free it; only a collection can)."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def _old_cycle() -> weakref.ref[Node]:
    """A cycle that became garbage after a collection moved it to the oldest generation."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()  # reachable: survives into the oldest generation
    ref = weakref.ref(a)
    del a, b
    return ref


def test_collections_inside_reach_only_what_the_block_made() -> None:
    gc.collect()
    old = _old_cycle()
    with library_heap_frozen():
        assert gc.get_freeze_count() > 0
        new = _cycle()
        gc.collect()  # a full one: what ArrayRecord.to_numpy_ndarrays, or a plug-in, calls
        assert new() is None, "garbage made inside the block is collected inside it"
        assert old() is not None, "the heap from before the block is out of reach"
    assert gc.get_freeze_count() == 0, "nothing stays frozen"
    gc.collect()
    assert old() is None, "after the block the old cycle is collected: nothing leaks"


def test_flower_s_own_call_inside_leaves_the_old_heap_alone() -> None:
    from flwr.app import ArrayRecord

    gc.collect()
    old = _old_cycle()
    ArrayRecord([np.zeros(3)]).to_numpy_ndarrays(keep_input=False)
    assert old() is None, "outside the block Flower's call walks the whole heap"
    old = _old_cycle()
    with library_heap_frozen():
        ArrayRecord([np.zeros(3)]).to_numpy_ndarrays(keep_input=False)
        assert old() is not None, "inside, it walks only what the block made"


def test_young_garbage_from_before_the_block_is_freed_not_frozen() -> None:
    gc.collect()
    young = _cycle()
    with library_heap_frozen():
        assert young() is None


def test_nested_blocks_keep_the_outer_freeze_until_the_outer_end() -> None:
    with library_heap_frozen():
        with library_heap_frozen():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_an_exception_in_the_block_still_unfreezes() -> None:
    try:
        with library_heap_frozen():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.get_freeze_count() == 0


def test_the_arrays_alive_do_not_grow_with_the_rounds(tmp_path: Path) -> None:
    """The quickstart for 30 rounds: the Flower arrays alive at each round's end (counted
    without a collection, as the process holds them) stay below five rounds' replies. With the
    heap frozen around each aggregation instead, each round's replies (5 clients, generator
    and critic: 12 arrays each) waited in the oldest generation for a full collection, which a
    process holding torch and pandas runs rarely: ~1,800 arrays alive by round 30."""
    from fedgan.simulator.api import run
    from flwr.app import Array

    rounds, clients = 30, 5
    per_reply = 2 * 3 * 2  # generator and critic, each 3 linear layers of a weight and a bias
    alive: list[int] = []

    def count(_: object) -> None:
        alive.append(sum(1 for o in gc.get_objects() if isinstance(o, Array)))

    quickstart = Path(__file__).parents[2] / "scenarios" / "quickstart.yaml"
    overrides = [f"federation.rounds={rounds}", f"evaluation.every={rounds}"]
    run(quickstart, overrides, out_dir=tmp_path / "runs", progress=count)
    assert len(alive) == rounds
    assert max(alive) < 5 * clients * per_reply, str(alive)


FREEZE_PROBE = '''
import gc
import weakref
from pathlib import Path
from flwr.serverapp.strategy import FedAvg

FULL = gc.collect  # imported when the strategy is built, before the rounds


class Node:
    other = None


class FreezeProbe(FedAvg):
    """FedAvg that writes, each round: the heap frozen?, a cycle made now freed by a full
    collection?, the old cycle the test left (OLD) still there?"""

    OLD = None

    def aggregate_train(self, server_round, replies):
        a, b = Node(), Node()
        a.other, b.other = b, a
        new = weakref.ref(a)
        del a, b
        FULL()
        old = FreezeProbe.OLD
        row = (gc.get_freeze_count() > 0, new() is None, old is not None and old() is not None)
        with open(Path(__file__).with_suffix(".log"), "a") as fh:
            fh.write(f"{row}\\n")
        return super().aggregate_train(server_round, replies)
'''


def test_a_run_freezes_only_what_existed_before_it_and_unfreezes_after(tmp_path: Path) -> None:
    """During the rounds the heap from before the run is frozen (a full collection walks only
    the run's objects): garbage the rounds make is collected by such a collection, an old
    cycle from before the run is not; after the run nothing stays frozen and the old cycle is
    collectable again."""
    from fedgan.server.strategies import STRATEGIES
    from fedgan.simulator.api import run

    plugin = tmp_path / "freeze_probe.py"
    plugin.write_text(FREEZE_PROBE)
    gc.collect()
    old = _old_cycle()
    raw = tiny_raw(engine={"name": "vectorized"}, strategy={"name": f"{plugin}:FreezeProbe"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    # The registry loads the plug-in once (cached by path): the run builds this very class.
    STRATEGIES.get(f"{plugin}:FreezeProbe").OLD = old  # type: ignore[attr-defined]
    run(path, [], out_dir=tmp_path / "runs")
    rows = (tmp_path / "freeze_probe.log").read_text().split("\n")[:-1]
    assert rows == ["(True, True, True)"] * 2, rows  # 2 rounds
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old() is None, "after the run the old cycle is collected: nothing leaks"
