"""The server's privacy account: the run's ε after every round, beside what Flower's own
accountant would report (`simulator.privacy.budget` does the accounting).

Rows (scope `global`, group_by ""): `privacy.epsilon` — at user level the run's ε, at sample
level the largest client's —, the δ it holds at (`privacy.delta`) and `privacy.epsilon_flower`
(no amplification by sampling, as Flower 1.42's accountant computes it): every view reads ε
and δ from the table. At sample level each client's ε also as a `client` row.
The `privacy_started` event holds what the rows are read against: level, σ (calibrated or
given), C, δ, sampling, accountant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedgan.simulator.prepare import train_sizes
from fedgan.simulator.privacy import budget
from fedgan.simulator.scenario import Scenario
from fedgan.simulator.store import RunStore


@dataclass
class Account:
    """A run's privacy account (None-free: built only under `privacy:`)."""

    s: Scenario
    sizes: budget.Sizes
    sigma: float

    @classmethod
    def for_run(cls, s: Scenario) -> Account | None:
        if s.privacy is None:
            return None
        sizes = train_sizes(s)
        return cls(s, sizes, budget.noise_multiplier(s, sizes))

    def start(self, store: RunStore) -> None:
        """The `privacy_started` event: the settings every ε row is read against."""
        p = self.s.privacy
        assert p is not None
        store.event(
            "privacy_started",
            level=p.level,
            noise_multiplier=self.sigma,
            calibrated=p.target_epsilon is not None,
            target_epsilon=p.target_epsilon,
            clip=p.clip,
            delta=p.delta,
            sampling=p.sampling,
            accountant=p.accountant,
        )

    def rows(self, rnd: int) -> list[dict[str, Any]]:
        """Round `rnd`'s privacy rows (ε after it)."""
        eps = budget.run_epsilon(self.s, self.sizes, rnd, self.sigma)
        flower = budget.flower_epsilon(self.s, self.sizes, rnd, self.sigma)
        p = self.s.privacy
        assert p is not None
        out: list[dict[str, Any]] = [
            _row("global", -1, "privacy.epsilon", max(eps.values(), default=0.0)),
            _row("global", -1, "privacy.delta", p.delta),
            _row("global", -1, "privacy.epsilon_flower", flower),
        ]
        if budget.USER not in eps:
            out += [_row("client", c, "privacy.epsilon", e) for c, e in sorted(eps.items())]
        return [{"round": rnd, **r} for r in out]


def _row(scope: str, client: int, metric: str, value: float) -> dict[str, Any]:
    return {"scope": scope, "client": client, "metric": metric, "value": float(value)}
