"""A Flower strategy's state, as data a checkpoint can hold, and back.

The contract: a strategy that defines `state_dict() -> dict` and `load_state_dict(dict)` (as
torch modules do) is saved and restored through them; their dict must be plain data, numpy
arrays and Flower records (`simulator.statecodec`). Every other strategy — Flower's stock ones,
plug-ins without the two methods — gets the default: Flower strategies keep their state as
plain attributes (FedAdam's moments `m_t`/`v_t`, FedAvgM's `momentum_vector`,
`current_arrays`; our fair strategies' weights and λ; `critic_swap`'s critics), so every
attribute that is data is saved, callables (construction-time configuration) are rebuilt from
the scenario, and an attribute that is neither (an open file, a lock) is skipped and reported
(`checkpoint_incomplete`). Nested strategies (`PerNetwork`, Flower's DP wrappers) are walked
into.
"""

from __future__ import annotations

from typing import Any

import fedgan.wire.records  # noqa: F401 - registers Flower's records as storable state
from fedgan.server.strategies.per_network import PerNetwork
from fedgan.simulator.statecodec import is_data
from flwr.serverapp.strategy import Strategy

NESTED = "__nested__"
"""Key of the sub-dict holding nested strategies' states, by attribute name."""
STATE_DICT = "__state_dict__"
"""Key of what a strategy's own `state_dict()` returned."""


def strategy_state(strategy: Any, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """(the strategy's state, names of attributes that could not be saved)."""
    if callable(getattr(strategy, "state_dict", None)):
        own = strategy.state_dict()
        if not is_data(own):
            raise TypeError(f"{type(strategy).__name__}.state_dict() returned more than data")
        return {STATE_DICT: own}, []
    state: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in vars(strategy).items():
        if isinstance(value, Strategy | PerNetwork):
            nested[name], more = strategy_state(value, f"{prefix}{name}.")
            skipped += more
        elif callable(value):
            continue
        elif is_data(value):
            state[name] = value
        else:
            skipped.append(f"{prefix}{name}")
    if nested:
        state[NESTED] = nested
    return state, skipped


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Set the attributes `strategy_state` saved on `strategy` (built from the same scenario)."""
    if STATE_DICT in state:
        strategy.load_state_dict(state[STATE_DICT])
        return
    for name, value in state.items():
        if name == NESTED:
            for attr, sub in value.items():
                load_strategy_state(getattr(strategy, attr), sub)
        else:
            setattr(strategy, name, value)


def rebind_nodes(strategy: Any, node_pid: dict[int, int]) -> None:
    """Tell a restored strategy this run's node ids (Flower draws new ones when a run restarts):
    a strategy that keeps state by node id defines `rebind_nodes(node_pid)` (node id →
    partition id) and re-keys it (`critic_swap`); nested strategies are walked into."""
    for value in vars(strategy).values():
        if isinstance(value, Strategy | PerNetwork):
            rebind_nodes(value, node_pid)
    own = getattr(type(strategy), "rebind_nodes", None)
    if callable(own):
        own(strategy, node_pid)
