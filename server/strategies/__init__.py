"""Flower strategies by name, and `module:Class` / `file.py:Class` plug-ins.

Every built-in of Flower 1.42's Message API is usable by its lower-case name. Sampling
arguments (`fraction_*`, `min_*_nodes`) are set by the server loop, which samples clients
itself (seeded, over partition ids) and shows the strategy only the sampled nodes.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from fedgan.simulator.messages import TRAIN_LOSS
from fedgan.simulator.registry import Registry, RegistryError, Signature, signature, subclass_of
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Strategy,
)

STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy", check=subclass_of(Strategy, "flwr.serverapp.strategy.Strategy")
)
for _name, _cls in {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedavgm": FedAvgM,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "qfedavg": QFedAvg,
}.items():
    STRATEGIES.add(_name, cast(type[Strategy], _cls))

SAMPLING_ARGS = {
    "fraction_train": 1.0,
    "fraction_evaluate": 1.0,
    "min_train_nodes": 1,
    "min_evaluate_nodes": 1,
    "min_available_nodes": 1,
}
"""Set by the server loop: it samples the nodes and shows the strategy only those."""

RESERVED = {
    "weighted_by_key",
    "arrayrecord_key",
    "configrecord_key",
    "train_metrics_aggr_fn",
    "evaluate_metrics_aggr_fn",
}
"""Record keys the client and server agree on, and callables: not settable from YAML."""

DEFAULT_ARGS: dict[str, dict[str, Any]] = {"qfedavg": {"train_loss_key": TRAIN_LOSS}}


def _signature(name: str, cls: type[Strategy]) -> Signature:
    """The constructor's signature, past `self`; the loop's sampling arguments and the record
    keys are not the scenario's to set."""
    return signature("strategy", name, cls.__init__, skip=1, reserved=(*SAMPLING_ARGS, *RESERVED))


def strategy_params(cls: type[Strategy]) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters that a scenario may set."""
    return dict(_signature(cls.__name__, cls).params)


def check_strategy(name: str, params: dict[str, Any], path: str = "strategy") -> list[str]:
    """Problems with a strategy name and its parameters (empty when fine), as 'path: message'."""
    try:
        cls = STRATEGIES.get(name)
        sig = _signature(name, cls)
    except RegistryError as exc:
        return [f"{path}.name: {exc}"]
    problems = [
        f"{path}.params.{key}: set by the simulator (use federation.clients_per_round)"
        for key in params
        if key in SAMPLING_ARGS
    ]
    # Strict about **kwargs: the fair strategies forward them to FedAvg, whose sampling and
    # record-key arguments are the loop's.
    rest = {k: v for k, v in params.items() if k not in SAMPLING_ARGS}
    check = sig.check(rest, supplied=DEFAULT_ARGS.get(name, {}), open_kwargs=False)
    problems += check.by_key(f"{path}.params", name)
    if not problems:  # the values too: a strategy checks them when it is built (cheap)
        try:
            _build(name, cls, sig, params)
        except Exception as exc:  # noqa: BLE001 - a plug-in's constructor raises what it likes
            word = str(exc).split(" ", 1)[0]  # "beta must be ..." names its parameter
            where = f"{path}.params.{word}" if word in params else f"{path}.params"
            # Our own checks raise ValueError/TypeError with a sentence; anything else, say what.
            said = isinstance(exc, ValueError | TypeError | ArithmeticError)
            problems.append(f"{where}: {name}: {'' if said else type(exc).__name__ + ': '}{exc}")
    return problems


def unread_train_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """A built-in strategy's `train_metrics_aggr_fn`: no aggregate. The round loop keeps
    `aggregate_train`'s arrays and never reads its metrics (each client's own metrics are
    recorded from its reply), and Flower's weighted mean of every key of every reply was ~1 ms
    a round at 5 clients, ~8 ms at 50 (benchmarks/README.md, overhead)."""
    return MetricRecord()


def _build(name: str, cls: type[Strategy], sig: Signature, params: dict[str, Any]) -> Strategy:
    # A subclass that forwards **kwargs to FedAvg still takes the sampling arguments.
    kwargs: dict[str, Any] = {k: v for k, v in SAMPLING_ARGS.items() if sig.accepts(k)}
    # Only for the built-ins: a plug-in's own aggregate_train may read its aggregated metrics.
    if name in BUILT_IN and sig.accepts("train_metrics_aggr_fn"):
        kwargs["train_metrics_aggr_fn"] = unread_train_metrics
    kwargs.update(DEFAULT_ARGS.get(name, {}))
    kwargs.update(params)
    return cls(**kwargs)


def build_strategy(name: str, params: dict[str, Any]) -> Strategy:
    """Instantiate a strategy with the scenario's parameters and the loop's sampling args."""
    problems = check_strategy(name, params)
    if problems:
        raise RegistryError("; ".join(problems))
    cls = STRATEGIES.get(name)
    return _build(name, cls, _signature(name, cls), params)


# The simulator's own rules, registered after the built-ins (they import this package's helpers).
from fedgan.server.strategies.critic_swap import CriticSwapFedAvg  # noqa: E402
from fedgan.server.strategies.fair import (  # noqa: E402
    AgnosticFedAvg,
    CoverageWeightedFedAvg,
    GroupAwareFedAvg,
    GroupDROFedAvg,
    QualityQFedAvg,
)

for _name, _cls in {
    "coverage_weighted": CoverageWeightedFedAvg,
    "quality_qfedavg": QualityQFedAvg,
    "agnostic": AgnosticFedAvg,
    "group_aware": GroupAwareFedAvg,
    "group_dro": GroupDROFedAvg,
    "critic_swap": CriticSwapFedAvg,
}.items():
    STRATEGIES.add(_name, cast(type[Strategy], _cls))

BUILT_IN = frozenset(STRATEGIES.names())
"""Flower's strategies and the simulator's own rules (not plug-ins), by name."""
