"""`young_heap_only`: inside the block `gc.collect()` collects only the young generations
(what the aggregation dropped), the process's own heap is left where it is (nothing promoted,
nothing pinned), and the FedAvg protocol aggregates inside it."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import yaml
from fedgan.server.heap import young_heap_only

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


def test_flower_s_collections_inside_reach_only_the_young_generations() -> None:
    gc.collect()
    old = _old_cycle()
    full = gc.collect
    with young_heap_only():
        new = _cycle()
        gc.collect()  # what ArrayRecord.to_numpy_ndarrays, or a plug-in strategy, calls
        assert new() is None, "garbage made inside the block is collected inside it"
        assert old() is not None, "the old generation is out of reach"
    assert gc.collect is full, "gc.collect is the full collection again"
    gc.collect()
    assert old() is None, "after the block a full collection frees the old cycle"


def test_flower_s_own_call_runs_no_full_collection_inside() -> None:
    from flwr.app import ArrayRecord

    def full_collections() -> int:
        return int(gc.get_stats()[2]["collections"])

    before = full_collections()
    ArrayRecord([np.zeros(3)]).to_numpy_ndarrays(keep_input=False)
    assert full_collections() == before + 1, "outside the block Flower's call is a full one"
    with young_heap_only():
        for _ in range(5):
            ArrayRecord([np.zeros(3)]).to_numpy_ndarrays(keep_input=False)
        assert full_collections() == before + 1, "inside, none"


def test_young_garbage_from_before_the_block_stays_young() -> None:
    # A cycle that became garbage just before the block (a round's `array_records` views do)
    # is not moved to the oldest generation by the block (gc.freeze/unfreeze did that, and
    # only a full collection, rare in a process holding torch and pandas, reached it then).
    gc.collect()
    young = _cycle()
    with young_heap_only():
        pass
    gc.collect(0)  # the youngest generation only, as the interpreter's own trigger would run
    assert young() is None


def test_nested_blocks_keep_the_outer_swap_until_the_outer_end() -> None:
    full = gc.collect
    with young_heap_only():
        with young_heap_only():
            pass
        assert gc.collect is not full
    assert gc.collect is full


def test_an_exception_in_the_block_still_restores() -> None:
    full = gc.collect
    try:
        with young_heap_only():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.collect is full


PLUGIN = '''
import gc
from pathlib import Path
from flwr.serverapp.strategy import FedAvg

FULL = gc.collect  # imported when the strategy is built, before any aggregation


class YoungHeapProbe(FedAvg):
    """FedAvg that writes, each round, whether gc.collect() reached only the young
    generations while it aggregated."""

    def aggregate_train(self, server_round, replies):
        with open(Path(__file__).with_suffix(".log"), "a") as fh:
            fh.write(f"{gc.collect is not FULL}\\n")
        return super().aggregate_train(server_round, replies)
'''


def test_the_fedavg_protocol_aggregates_with_young_collections_only(tmp_path: Path) -> None:
    from fedgan.simulator.api import run

    plugin = tmp_path / "recording.py"
    plugin.write_text(PLUGIN)
    raw = tiny_raw(strategy={"name": f"{plugin}:YoungHeapProbe"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    run(path, [], out_dir=tmp_path / "runs")
    full = gc.collect
    assert (tmp_path / "recording.log").read_text().split() == ["True", "True"]  # 2 rounds
    assert gc.collect is full


def test_the_arrays_alive_do_not_grow_with_the_rounds(tmp_path: Path) -> None:
    """The quickstart for 30 rounds: the Flower arrays alive at each round's end (counted
    without a collection, as the process holds them) stay below five rounds' replies. With the
    heap frozen around the aggregation each round's replies (5 clients, generator and critic:
    12 arrays each) waited in the oldest generation for a full collection, which a process
    holding torch and pandas runs rarely: ~1,800 arrays alive by round 30, +1.4 MB a round."""
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
    from fedgan.server.heap import library_heap_frozen
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
    with library_heap_frozen():  # nested: the outer freeze stays until the outer end
        with library_heap_frozen():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
