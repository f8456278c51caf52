"""The skeleton every client-side exchange shares (a fedavg round, a server-held protocol's
generator step): one client as a batch of one, and the fault draw that admits a client to an
exchange — a simulated crash before any work, so it costs the simulation nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from fedgan.simulator.faults import FaultDraw, SimulatedFault
from fedgan.simulator.faults import draw as draw_faults
from fedgan.simulator.scenario import Scenario

Request = TypeVar("Request")
Result = TypeVar("Result")
ReplyT = TypeVar("ReplyT")


@dataclass
class Update(Generic[ReplyT]):
    """What a client sends back after an exchange (`arrays`, `reply`) and what it keeps
    (`private`: its critic, optimizer moments — never sent)."""

    arrays: dict[str, np.ndarray]
    private: dict[str, np.ndarray]
    reply: ReplyT


def one(
    run: Callable[[Sequence[Request]], Sequence[Result | Exception]], request: Request
) -> Result:
    """`run` (a batched client call, each slot a result or the client's exception) for one
    request: its result, or raise what the client raised."""
    (out,) = run([request])
    if isinstance(out, Exception):
        raise out
    return out


def admit(s: Scenario, round_: int, client: int) -> FaultDraw:
    """The client's fault draw for this exchange; raises `SimulatedFault` when the scenario has
    it crash (`faults.raise`)."""
    fault = draw_faults(s, round_, client)
    if fault.raise_:
        raise SimulatedFault(f"simulated fault: client {client} raised in round {round_}")
    return fault
