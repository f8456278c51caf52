"""Federated methods as overrides of one scenario — every protocol with every fairness rule —,
their preflight (a method the code cannot run is skipped with the reason), and per-run scores
on the minority modes. Shared by findings item 10 and `benchmarks/fairness.py`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fedgan.simulator.findings.batch import Outcome
from fedgan.simulator.findings.bootstrap import Interval, bonferroni, paired_bootstrap
from fedgan.simulator.metrics.diagnosis import kept
from fedgan.simulator.weighting import GROUP_DRO_FLOOR, GROUP_DRO_STEP_SIZE

PROTOCOLS = ("fedavg", "mdgan", "uagan")
LABELS = {"fedavg": "FedAvg", "mdgan": "MD-GAN", "uagan": "UA-GAN", "centralized": "twin"}
PROTOCOL_PARAMS: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "mdgan": {"swap_every": 100},
    "uagan": {},
}
"""`federation.protocol_params` of each protocol (issue 13's defaults: MD-GAN swaps critics every
100 generator steps, UA-GAN's π ∝ n_k)."""
WEIGHTINGS: dict[str, dict[str, Any]] = {
    "coverage_weighted": {"q": 2.0},
    "agnostic": {"step_size": 0.5},
    "group_aware": {"beta": 2.0, "metric": "coverage"},
}
"""The fairness weightings, usable with every protocol: for FedAvg the Flower strategy of the
same name, for MD-GAN / UA-GAN `federation.protocol_params.weighting`; the same parameters."""
GROUP_WEIGHTINGS: dict[str, dict[str, Any]] = {
    "group_dro": {"step_size": GROUP_DRO_STEP_SIZE, "floor": GROUP_DRO_FLOOR},
}
"""Group-level weightings (issue 27), at their preregistered parameters: usable by every
protocol like `WEIGHTINGS`, measured by item 12 (not part of `every_method`'s grid)."""
FEDAVG_RULES: dict[str, dict[str, Any]] = {
    # QFedAvg's L = 1 / client_learning_rate must stay small against q‖Δw‖²/F, or the step
    # shrinks to nothing.
    "quality_qfedavg": {"client_learning_rate": 50.0, "q": 1.0},
    "critic_swap": {},
}
"""Rules that exist for FedAvg only (strategies that average parameters)."""
NONE = "none"


@dataclass(frozen=True)
class Method:
    """A protocol (or the centralized twin) with a fairness rule (`NONE`: unweighted)."""

    protocol: str
    rule: str = NONE

    @property
    def label(self) -> str:
        base = LABELS.get(self.protocol, self.protocol)
        return base if self.rule == NONE else f"{base} + {self.rule}"

    @property
    def centralized(self) -> bool:
        return self.protocol == "centralized"

    @property
    def unweighted(self) -> Method:
        return Method(self.protocol)

    @property
    def overrides(self) -> tuple[str, ...]:
        """The scenario overrides that make a fedavg scenario run this method."""
        if self.protocol in ("centralized", "fedavg"):
            if self.rule == NONE:
                return ()
            params = {**WEIGHTINGS, **GROUP_WEIGHTINGS, **FEDAVG_RULES}[self.rule]
            spec: dict[str, Any] = {"name": self.rule}
            if params:
                spec["params"] = params
            return (f"strategy={_flow(spec)}",)
        pp = dict(PROTOCOL_PARAMS.get(self.protocol, {}))
        if self.rule != NONE:
            params = {**WEIGHTINGS, **GROUP_WEIGHTINGS}[self.rule]
            pp["weighting"] = {"name": self.rule, "params": params}
        out = [f"federation.protocol={self.protocol}"]
        if pp:
            out.append(f"federation.protocol_params={_flow(pp)}")
        return tuple(out)


def _flow(value: object) -> str:
    """A YAML flow value (JSON is YAML) for a `key=value` override."""
    return json.dumps(value)


RECOMMENDED = Method("uagan", "group_dro")
"""The setting README recommends (`scenarios/protocols/recommended.yaml`; findings item 12)."""


def group_methods() -> list[Method]:
    """Every protocol with every group-level weighting (issue 27's rows): shown beside
    `every_method`'s grid in item 10 and the fairness benchmark, outside their preregistered
    comparison families (those were fixed before group_dro existed)."""
    return [Method(p, g) for p in PROTOCOLS for g in GROUP_WEIGHTINGS]


def every_method(rules_for_fedavg: Sequence[str] = ()) -> list[Method]:
    """Every protocol unweighted and with every weighting (FedAvg first), then FedAvg with
    the extra FedAvg-only `rules_for_fedavg`."""
    out = [Method(p, w) for p in PROTOCOLS for w in (NONE, *WEIGHTINGS)]
    return out + [Method("fedavg", r) for r in rules_for_fedavg]


def unavailable(scenario: Path, overrides: Sequence[str], centralized: bool = False) -> str:
    """Why the code under test cannot run the scenario with these overrides — the problems
    `fedgan validate` reports — or '' when it can."""
    from fedgan.simulator.api import check

    return "; ".join(check(scenario, list(overrides), centralized=centralized))


def skip_note(skipped: Mapping[Any, str]) -> str:
    """'A, B: reason · C: other reason' from {cell: reason} (cells are tuples starting with
    their Method, or Methods), the methods of one reason together."""
    by: dict[str, list[str]] = {}
    for cell, why in skipped.items():
        m = cell[0] if isinstance(cell, tuple) else cell
        label = m.label if isinstance(m, Method) else str(m)
        if label not in by.setdefault(why, []):
            by[why].append(label)
    return " · ".join(f"{', '.join(labels)}: {why}" for why, labels in by.items())


# --- scores of one run -------------------------------------------------------------------------


def _zero_if_nan(x: float) -> float:
    """A value a run did not produce (diverged; no high-quality sample) counts as nothing kept."""
    return 0.0 if not math.isfinite(x) else float(x)


def minority_coverage(o: Outcome, minority: Sequence[str]) -> float:
    """Mean coverage of the minority modes (held-out points of each); 0 for a diverged run."""
    return float(np.mean([_zero_if_nan(o.group("coverage", g)) for g in minority]))


def keeps_all(o: Outcome, minority: Sequence[str]) -> bool:
    """Whether the run keeps every minority mode (coverage ≥ 0.3 on each)."""
    return all(kept(o.group("coverage", g)) for g in minority)


def minority_mass_ratio(o: Outcome, minority: Sequence[str], weight: float) -> float:
    """Generated mass / true weight, mean over the minority modes (3σ protocol): ≈ 0 for a
    dropped mode, > 0 for one that is generated but blurred or off-centre."""
    return float(np.mean([_zero_if_nan(o.group("mode_mass", g)) / weight for g in minority]))


def score(o: Outcome, metric: str) -> float:
    """A whole-population metric of the run, 0 where the run did not produce it."""
    return _zero_if_nan(o.get(metric))


def unproduced(os_: Sequence[Outcome], minority: Sequence[str]) -> int:
    """How many runs lack a minority coverage (diverged or crashed): they count as 0."""
    return sum(not all(math.isfinite(o.group("coverage", g)) for g in minority) for o in os_)


def paired(
    a: Sequence[Outcome],
    b: Sequence[Outcome],
    value: Callable[[Outcome], float],
    level: float,
    seed: int = 0,
) -> Interval:
    """Paired-by-seed bootstrap of value(a_s) − value(b_s); `a` and `b` in the same seed order
    (the seed is the last element of an outcome's key)."""
    if [o.key[-1:] for o in a] != [o.key[-1:] for o in b]:
        raise ValueError("paired outcomes must come in the same seed order")
    return paired_bootstrap([value(o) for o in a], [value(o) for o in b], level, seed=seed)


# --- comparisons against a baseline ------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A method against the baseline on one metric, paired by seed: the mean difference with
    its 95 % interval, and its interval at the Bonferroni level of the whole family."""

    method: Method
    metric: str
    ci95: Interval
    adjusted: Interval

    @property
    def separated(self) -> bool:
        """Whether the difference is told apart from 0 after the multiple-comparison correction
        (otherwise: indistinguishable)."""
        return self.adjusted.excludes(0.0)

    @property
    def word(self) -> str:
        if self.adjusted.n == 0:
            return "n/a"
        if not self.separated:
            return "indistinguishable"
        return "higher" if self.adjusted.above(0.0) else "lower"


def against(
    baseline: Sequence[Outcome],
    others: Mapping[Method, Sequence[Outcome]],
    metrics: Mapping[str, Callable[[Outcome], float]],
    family: int,
    seed: int = 0,
) -> list[Comparison]:
    """Every method of `others` against `baseline` on every metric (value(method) − value(
    baseline), paired by seed). `family`: the number of comparisons per metric the Bonferroni
    correction covers — the comparisons planned, so a skipped method does not loosen it."""
    level = bonferroni(family)
    out = []
    for m, os_ in others.items():
        for name, value in metrics.items():
            out.append(
                Comparison(
                    m,
                    name,
                    paired(os_, baseline, value, 0.95, seed),
                    paired(os_, baseline, value, level, seed),
                )
            )
    return out
