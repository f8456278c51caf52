"""A Flower strategy's state, as data a checkpoint can hold, and back.

Flower strategies keep their state as plain attributes (FedAdam's moments `m_t`/`v_t`, FedAvgM's
`momentum_vector`, `current_arrays`; our fair strategies' weights and λ; `critic_swap`'s
critics). `strategy_state` takes every attribute that is data — callables are construction-time
configuration, rebuilt from the scenario — and `load_strategy_state` sets them on a strategy
freshly built from the same scenario. Nested strategies (`PerNetwork`, Flower's DP wrappers)
are walked into.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import Strategy

from server.strategies.per_network import PerNetwork
from simulator.checkpoint import round_trips

NESTED = "__nested__"
"""Key of the sub-dict holding nested strategies' states, by attribute name."""


def strategy_state(strategy: Any, prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """(the strategy's data attributes, names of attributes that could not be saved)."""
    state: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in vars(strategy).items():
        if isinstance(value, Strategy | PerNetwork):
            nested[name], more = strategy_state(value, f"{prefix}{name}.")
            skipped += more
        elif callable(value):
            continue
        elif round_trips(value):
            state[name] = value
        else:
            skipped.append(f"{prefix}{name}")
    if nested:
        state[NESTED] = nested
    return state, skipped


def load_strategy_state(strategy: Any, state: dict[str, Any]) -> None:
    """Set the attributes `strategy_state` saved on `strategy` (built from the same scenario)."""
    for name, value in state.items():
        if name == NESTED:
            for attr, sub in value.items():
                load_strategy_state(getattr(strategy, attr), sub)
        else:
            setattr(strategy, name, value)


def rebind_nodes(strategy: Any, node_pid: dict[int, int]) -> None:
    """Re-key node-id state to this run's node ids (Flower draws new ones when a run restarts).

    `critic_swap` remembers which node holds which partition (`partition_of`, node id →
    partition id); the in-process engine's node ids are fixed, Ray's are not.
    """
    for value in vars(strategy).values():
        if isinstance(value, Strategy | PerNetwork):
            rebind_nodes(value, node_pid)
    known = getattr(strategy, "partition_of", None)
    if isinstance(known, dict) and known:
        seen = set(known.values())
        strategy.partition_of = {n: p for n, p in node_pid.items() if p in seen}
