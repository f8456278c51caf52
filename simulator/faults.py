"""Simulated faults: which (round, client) pairs drop out, straggle, raise, diverge, or send a
corrupted or oversized update — drawn from the scenario seed, so runs stay reproducible.

The server (`server/loop.py`) and every client (`clients/training.py`, `clients/answers.py`)
redraw the same stream, `numpy_rng(seed, "faults", round, client)`, so both agree on a
client's faults without sending anything. Every uniform is drawn whatever the configuration,
in a fixed order (`DRAW_ORDER`), so turning one fault on never changes another fault's draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fedgan.simulator.messages import FAULT_PADDING
from fedgan.simulator.scenario import ClientFaultModel, Scenario
from fedgan.simulator.seeding import numpy_rng

DRAW_ORDER = ("dropout", "straggler", "raise", "diverge", "corrupt", "oversized")
"""Uniforms drawn first for each (round, client), in this order; then one for the delay."""


class SimulatedFault(RuntimeError):
    """Raised inside the ClientApp by a client configured to fail (`faults.raise`)."""


@dataclass(frozen=True)
class FaultDraw:
    """The faults of one client in one round."""

    dropout: bool = False
    delay: float = 0.0
    """Virtual seconds before the reply arrives (0 unless the client straggles)."""
    late: bool = False
    """The delay exceeds the straggler deadline: the server discards the reply."""
    raise_: bool = False
    diverge: bool = False
    corrupt: bool = False
    oversized: bool = False


NO_FAULTS = FaultDraw()


def _hit(spec: ClientFaultModel | None, u: float, client: int) -> bool:
    if spec is None:
        return False
    in_scope = spec.clients is None or client in spec.clients
    return in_scope and bool(u < spec.probability)


def draw(s: Scenario, round_: int, client: int) -> FaultDraw:
    """Faults of `client` in `round_` under `s.faults` (none when the section is absent)."""
    f = s.faults
    if f is None:
        return NO_FAULTS
    rng = numpy_rng(s.seed, "faults", round_, client)
    u = dict(zip(DRAW_ORDER, rng.random(len(DRAW_ORDER)), strict=True))
    u_delay = float(rng.random())
    delay, late = 0.0, False
    st = f.straggler
    if _hit(st, u["straggler"], client):
        assert st is not None
        lo, hi = st.delay
        delay = lo + u_delay * (hi - lo)
        late = st.deadline is not None and delay > st.deadline
    return FaultDraw(
        dropout=bool(u["dropout"] < f.dropout),
        delay=delay,
        late=late,
        raise_=_hit(f.raise_, u["raise"], client),
        diverge=_hit(f.diverge, u["diverge"], client),
        corrupt=_hit(f.corrupt, u["corrupt"], client),
        oversized=_hit(f.oversized, u["oversized"], client),
    )


def inject(
    s: Scenario,
    fault: FaultDraw,
    arrays: dict[str, np.ndarray],
    received: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The travelling arrays a faulty client sends instead of `arrays` (the honest update
    from the `received` global arrays); unchanged when `fault` has no array fault."""
    f = s.faults
    if f is None:
        return arrays
    out = dict(arrays)
    if fault.corrupt and f.corrupt is not None:
        # Scale the update, not the weights: θ_g + c·(θ_k − θ_g) lies c times farther away.
        scale = f.corrupt.scale
        out = {
            k: (received[k] + scale * (v - received[k])).astype(v.dtype) if k in received else v
            for k, v in out.items()
        }
    if fault.diverge:
        bad = {}
        for i, (k, v) in enumerate(out.items()):  # NaN and ±inf, as a blown-up step leaves
            fill = np.nan if i % 2 == 0 else np.inf
            bad[k] = np.full_like(v, fill) if np.issubdtype(v.dtype, np.floating) else v
        out = bad
    if fault.oversized and f.oversized is not None:
        out[FAULT_PADDING] = np.zeros(f.oversized.extra_bytes, dtype=np.uint8)
    return out
