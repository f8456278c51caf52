"""Protocols by name (`federation.protocol`), and `module:Class` / `file.py:Class` plug-ins.

A protocol (`server.protocols.base.Protocol`) says what one round sends, what comes back and
how the server combines it; the round loop does the rest. `fedavg` is the default; `mdgan` and
`uagan` keep the generator on the server (`server_held.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedgan.server.protocols.base import Expect, Protocol, ProtocolState, Reply, Round, Setup
from fedgan.server.protocols.fedavg import FedAvgProtocol
from fedgan.simulator.registry import Registry, RegistryError, signature, subclass_of
from fedgan.simulator.scenario import Scenario

if TYPE_CHECKING:
    from fedgan.server.protocols.mdgan import MDGAN
    from fedgan.server.protocols.uagan import UAGAN

__all__ = [
    "PROTOCOLS",
    "Expect",
    "MDGAN",
    "UAGAN",
    "FedAvgProtocol",
    "Protocol",
    "ProtocolState",
    "Reply",
    "Round",
    "Setup",
    "build_protocol",
    "check_protocol",
]


PROTOCOLS: Registry[type[Protocol]] = Registry(
    "protocol", check=subclass_of(Protocol, "fedgan.server.protocols.Protocol")
)
PROTOCOLS.add("fedavg", FedAvgProtocol)
# The server-held protocols train a generator on the server (torch): imported when named, so
# that validating a fedavg scenario does not pay for them.
PROTOCOLS.add_lazy("mdgan", "fedgan.server.protocols.mdgan:MDGAN")
PROTOCOLS.add_lazy("uagan", "fedgan.server.protocols.uagan:UAGAN")
# DP-FedAvg-GAN: critics federated, the generator trained on the server (torch: lazy too).
PROTOCOLS.add_lazy("dpfedavg_gan", "fedgan.server.protocols.dpfedavg_gan:DPFedAvgGAN")


def __getattr__(name: str) -> object:
    """`MDGAN` and `UAGAN`, imported on first use (see PROTOCOLS)."""
    if name in ("MDGAN", "UAGAN"):
        return PROTOCOLS.get(name.lower())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_protocol(s: Scenario) -> list[str]:
    """Problems with the scenario's protocol, its parameters and what it needs of the rest
    of the scenario, as 'yaml.path: message' (empty when fine)."""
    f = s.federation
    if f is None:
        return []
    try:
        cls = PROTOCOLS.get(f.protocol)
        sig = signature("protocol", f.protocol, cls.__init__, skip=2)  # (self, setup)
    except RegistryError as exc:
        return [f"federation.protocol: {exc}"]
    problems = sig.check(dict(f.protocol_params)).by_key("federation.protocol_params", f.protocol)
    try:
        # A parameter the signature check refused is not reported twice by the protocol's own.
        said = {e.split(": ", 1)[0] for e in problems}
        problems += [e for e in cls.check(s) if e.split(": ", 1)[0] not in said]
    except Exception as exc:  # noqa: BLE001 - a plug-in's check, or a look-up it makes: report
        problems.append(
            f"federation.protocol: protocol {f.protocol!r} failed to check the scenario: "
            f"{type(exc).__name__}: {exc}"
        )
    return problems


def build_protocol(setup: Setup) -> Protocol:
    """The scenario's protocol, built from `setup` and `federation.protocol_params`."""
    s = setup.scenario
    problems = check_protocol(s)
    if problems:
        raise RegistryError("; ".join(problems))
    assert s.federation is not None
    params: dict[str, Any] = dict(s.federation.protocol_params)
    return PROTOCOLS.get(s.federation.protocol)(setup, **params)
