"""`young_heap_only`: what exists before the block is out of a collection's reach inside it,
back in reach after it (nothing leaks), and the FedAvg protocol aggregates inside it."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

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


def test_old_cycles_wait_for_the_block_to_end_and_new_ones_are_collected_inside() -> None:
    gc.collect()
    old = _old_cycle()
    with young_heap_only():
        assert gc.get_freeze_count() > 0
        new = _cycle()
        gc.collect()
        assert new() is None, "garbage made inside the block is collected inside it"
        assert old() is not None, "the heap from before the block is out of reach"
    assert gc.get_freeze_count() == 0, "nothing stays frozen"
    gc.collect()
    assert old() is None, "after the block the old cycle is collected: nothing leaks"


def test_nested_blocks_keep_the_outer_freeze_until_the_outer_end() -> None:
    with young_heap_only():
        with young_heap_only():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_an_exception_in_the_block_still_unfreezes() -> None:
    try:
        with young_heap_only():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.get_freeze_count() == 0


PLUGIN = '''
import gc
from pathlib import Path
from flwr.serverapp.strategy import FedAvg

class FrozenHeapProbe(FedAvg):
    """FedAvg that writes, each round, whether the heap was frozen while it aggregated."""

    def aggregate_train(self, server_round, replies):
        with open(Path(__file__).with_suffix(".log"), "a") as fh:
            fh.write(f"{gc.get_freeze_count() > 0}\\n")
        return super().aggregate_train(server_round, replies)
'''


def test_the_fedavg_protocol_aggregates_with_the_old_heap_frozen(tmp_path: Path) -> None:
    from fedgan.simulator.api import run

    plugin = tmp_path / "recording.py"
    plugin.write_text(PLUGIN)
    raw = tiny_raw(strategy={"name": f"{plugin}:FrozenHeapProbe"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    run(path, [], out_dir=tmp_path / "runs")
    assert (tmp_path / "recording.log").read_text().split() == ["True", "True"]  # 2 rounds
    assert gc.get_freeze_count() == 0


def test_young_garbage_from_before_the_block_is_freed_without_a_full_collection() -> None:
    # A cycle that became garbage just before the block (a round's `array_records` views do):
    # the block must not freeze it into the oldest generation, where only a full collection
    # (rare in a process holding torch and pandas) would reach it.
    gc.collect()
    young = _cycle()
    with young_heap_only():
        pass
    gc.collect(0)  # the youngest generation only, as the interpreter's own trigger would run
    assert young() is None, "the young cycle was freed, not promoted to the oldest generation"


def test_the_arrays_alive_do_not_grow_with_the_rounds(tmp_path: Path) -> None:
    """The quickstart for 30 rounds: the Flower arrays alive at each round's end (counted
    without a collection, as the process holds them) stay below five rounds' replies. Before
    the young collection each round's replies (5 clients, generator and critic: 12 arrays
    each) waited in the oldest generation for a full collection, which a process holding
    torch and pandas runs rarely: ~1,800 arrays alive by round 30, and +1.4 MB a round."""
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
    assert max(alive) < 5 * clients * per_reply, alive
